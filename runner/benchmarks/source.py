"""``questions: {benchmark: medqa, split: test, limit: 500, seed: 0}``: the config mapping."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runner.benchmarks.catalogue import BENCHMARKS, Benchmark
from runner.benchmarks.errors import UnknownBenchmark, UnknownSplit, UnknownSubject

_COMMIT = re.compile(r"[0-9a-f]{40}")


def _names(values) -> str:
    return ", ".join(values)


def find_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise UnknownBenchmark(
            f"unknown benchmark {name!r}; expected one of {_names(BENCHMARKS)} "
            "(launcher benchmarks lists them)"
        ) from None


def check_subject(bench: Benchmark, subject: str | None) -> None:
    if bench.subjects and subject is None:
        raise UnknownSubject(f"benchmark {bench.name!r} needs a subject: one of {_names(bench.subjects)}")
    if not bench.subjects and subject is not None:
        raise UnknownSubject(f"benchmark {bench.name!r} has no subjects; remove subject: {subject}")
    if bench.subjects and subject not in bench.subjects:
        raise UnknownSubject(
            f"unknown {bench.name} subject {subject!r}; expected one of {_names(bench.subjects)}"
        )


def check_split(bench: Benchmark, subject: str | None, split: str) -> None:
    splits = bench.splits_for(subject)
    if split not in splits:
        extra = ""
        if bench.name == "medmcqa" and split == "test":
            extra = " (MedMCQA's test answers are not public; the harness scores validation)"
        raise UnknownSplit(
            f"benchmark {bench.name!r} has no split {split!r}; expected one of {_names(splits)}{extra}"
        )


class BenchmarkSource(BaseModel):
    """A named benchmark as the run's questions, instead of a JSONL file."""

    model_config = ConfigDict(extra="forbid")

    benchmark: str = Field(
        description="Catalogue name: medqa, medmcqa, pubmedqa or mmlu (`launcher benchmarks` lists them)."
    )
    subject: str | None = Field(
        None,
        description="MMLU only: anatomy, clinical_knowledge, college_biology, college_medicine, "
        "medical_genetics or professional_medicine.",
    )
    split: str | None = Field(
        None,
        description="Dataset split; default the one lm-evaluation-harness scores "
        "(test; validation for MedMCQA).",
    )
    limit: int | None = Field(
        None, ge=1, description="Use at most this many questions of the split (default all)."
    )
    seed: int | None = Field(
        None,
        description="With limit: a seeded random sample of the split, kept in dataset order; "
        "without a seed, limit takes the first rows (as lm-eval's --limit).",
    )
    path: str | None = Field(
        None,
        description="Read a local copy instead of the Hub: a folder in the dataset repository's "
        "layout, or one parquet/JSON/CSV file holding the split; relative to models.yaml.",
    )
    revision: str | None = Field(
        None,
        description="Hub commit to load instead of the catalogue's pinned one (40 hex digits).",
    )

    @field_validator("benchmark")
    @classmethod
    def _known(cls, v: str) -> str:
        try:
            find_benchmark(v)
        except UnknownBenchmark as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("revision")
    @classmethod
    def _commit(cls, v: str | None) -> str | None:
        if v is not None and not _COMMIT.fullmatch(v):
            raise ValueError("revision must be a full commit hash (40 lowercase hex digits)")
        return v

    @model_validator(mode="after")
    def _subject_split_seed(self) -> BenchmarkSource:
        bench = BENCHMARKS[self.benchmark]
        try:
            check_subject(bench, self.subject)
            check_split(bench, self.subject, self.resolved_split)
        except (UnknownSubject, UnknownSplit) as e:
            raise ValueError(str(e)) from None
        if self.seed is not None and self.limit is None:
            raise ValueError("seed only chooses which rows a limit keeps; set limit too, or drop seed")
        if self.path is not None and self.revision is not None:
            raise ValueError("revision applies to the Hub; a local path is read as it is")
        return self

    @property
    def bench(self) -> Benchmark:
        return BENCHMARKS[self.benchmark]

    @property
    def resolved_split(self) -> str:
        return self.split or BENCHMARKS[self.benchmark].default_split

    @property
    def label(self) -> str:
        """``mmlu/anatomy:test``: how messages and reports name the source."""
        name = f"{self.benchmark}/{self.subject}" if self.subject else self.benchmark
        return f"{name}:{self.resolved_split}"
