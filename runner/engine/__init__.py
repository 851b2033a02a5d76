"""The one model loop and its drivers.

``model_run.ModelRun`` runs one model (or one shard) over its questions: what is done, what is
left, load the backend, hand the work to the driver for the backend's interface, record,
finish. The drivers, one per backend interface, own everything every backend needs once:
``batch_driver`` (a ``BatchGenerator``: prompts in durable chunks), ``concurrent_driver`` (an
``AsyncGenerator``: many requests in flight, ``retries`` and ``ratelimit``), ``embed_driver``
(an ``Embedder``: vectors, then records); ``chunks`` cuts their work into batches, longest
first, halved on out-of-memory. Drivers record through the small ``recording.Recorder``
interface, never through ModelRun.

Outside a run's questions: ``encoder`` (a loaded encoder embedding any list of texts, the
similarity encoders and their identity; ``runner.embeddings`` is its public face) and
``answer_vectors`` (a model's answers embedded with it when the model ends).
"""
