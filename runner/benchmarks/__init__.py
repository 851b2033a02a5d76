"""Named medical benchmarks as the run's questions: MedQA, MedMCQA, PubMedQA, MMLU medical subjects.

``questions: {benchmark: medqa, split: test, limit: 500, seed: 0}`` in models.yaml is a
``BenchmarkSource``; ``load_benchmark(source, base_dir)`` turns it into our questions (ids
``<benchmark>-<split>-<row>``, stable for the pinned revision) and a provenance record;
``prompts_for(source)`` gives the harness's log-likelihood prompt and continuations and the
instruction prompt for generative models.

Importing this package imports no ``datasets``; loading does.
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
from runner.benchmarks.prompts import BenchmarkPrompts, continuations, loglikelihood_requests, prompts_for
from runner.benchmarks.source import BenchmarkSource, find_benchmark
from runner.benchmarks.to_questions import load_benchmark, question_id, source_fingerprint

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkError",
    "BenchmarkPrompts",
    "BenchmarkSource",
    "DatasetUnavailable",
    "Loglikelihood",
    "SchemaChanged",
    "Subject",
    "UnknownBenchmark",
    "UnknownSplit",
    "UnknownSubject",
    "continuations",
    "find_benchmark",
    "load_benchmark",
    "loglikelihood_requests",
    "prompts_for",
    "question_id",
    "source_fingerprint",
]
