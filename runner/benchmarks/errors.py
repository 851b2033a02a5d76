"""What can go wrong when a benchmark is named instead of a questions file.

    InputError (runner.errors, exit 2)
    └── BenchmarkError
        ├── UnknownBenchmark      no such name in the catalogue
        ├── UnknownSplit          the benchmark (or the local copy) has no such split
        ├── UnknownSubject        MMLU subject missing, misspelt, or given to a benchmark without subjects
        ├── DatasetUnavailable    not on this machine and the Hub cannot be reached (or a bad path)
        └── SchemaChanged         the dataset's columns or values are not what the benchmark maps

Every message is one line that names the benchmark, and where it helps, what to type next.
"""

from __future__ import annotations

from runner.errors import InputError


class BenchmarkError(InputError):
    pass


class UnknownBenchmark(BenchmarkError):
    pass


class UnknownSplit(BenchmarkError):
    pass


class UnknownSubject(BenchmarkError):
    pass


class DatasetUnavailable(BenchmarkError):
    pass


class SchemaChanged(BenchmarkError):
    pass
