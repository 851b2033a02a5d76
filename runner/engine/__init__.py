"""The one model loop and its drivers.

``model_run.ModelRun`` runs one model (or one shard) over its questions: what is done, what is
left, load the backend, hand the work to the driver for the backend's interface, record,
finish. The drivers own everything every backend needs once: ``batched`` (prompts in durable
chunks, longest first, out-of-memory back-off from ``batching``), ``concurrent`` (many
requests in flight, ``retries`` and ``ratelimit``), ``embedding`` (vectors, then records).
Drivers record through the small ``recording.Recorder`` interface, never through ModelRun.
"""
