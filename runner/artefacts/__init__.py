"""What a run leaves in storage: every key, the one JSONL reader and writer, the typed records.

``keys``, ``jsonl`` and ``records`` are pure (no I/O); ``stored`` reads and writes them in a
``runner.storage.Storage``.
"""
