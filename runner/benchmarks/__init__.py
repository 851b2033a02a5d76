"""Named medical benchmarks as the run's questions: MedQA, MedMCQA, PubMedQA, MMLU medical subjects.

``questions: {benchmark: medqa, split: test, limit: 500, seed: 0}`` in models.yaml is a
``BenchmarkSource``; ``load_benchmark(source, base_dir)`` turns it into our questions (ids
``<benchmark>-<split>-<row>``, stable for the pinned revision) and a provenance record;
``prompts_for(source)`` gives the harness's log-likelihood prompt and continuations and the
instruction prompt for generative models.

The package itself holds what models.yaml's validation needs (the catalogue, the source, the
errors); turning a source into questions (``runner.benchmarks.to_questions``) and prompts
(``runner.benchmarks.prompts``) builds on the questions and prompts modules, which import the
config, so those are imported from their own modules. Importing this package imports no
``datasets``; loading does.
"""

from runner.benchmarks.catalogue import BENCHMARKS, Benchmark, Loglikelihood, Subject
from runner.benchmarks.errors import (
    BenchmarkError,
    DatasetUnavailable,
    SchemaChanged,
    UnknownBenchmark,
    UnknownSplit,
    UnknownSubject,
)
from runner.benchmarks.source import BenchmarkSource, find_benchmark

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkError",
    "BenchmarkSource",
    "DatasetUnavailable",
    "Loglikelihood",
    "SchemaChanged",
    "Subject",
    "UnknownBenchmark",
    "UnknownSplit",
    "UnknownSubject",
    "find_benchmark",
]
