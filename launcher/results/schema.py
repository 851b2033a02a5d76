"""The tidy tables' columns: one list per table, the one place their names, types and meanings live.

``samples``: one row per (run, model, question) that has an answer record. ``runs``: one row per
(run, model), encoders included. Both carry ``schema_version``; a column is only ever added
(a new version says so), never renamed or retyped. docs/results.md prints these lists
(``python -m launcher.results.schema``; a test keeps the page in step).

pyarrow is imported only by ``arrow_schema`` and the modules that build tables, so the CLI
starts without it; ``require`` names the extra to install when it is missing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from runner.errors import BackendUnavailable, install_hint

SCHEMA_VERSION = 1
EXTRA = "results"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # string, int16, int32, int64, float64, bool, timestamp, list<float64>
    doc: str


_IDENTITY = [
    Column("schema_version", "int16", "version of these columns (this page: 1)"),
    Column("run_id", "string", "the run's id (its folder under the output)"),
    Column("run_name", "string", "the config's `name`"),
    Column("run_created_at", "timestamp", "when the run was first staged (UTC)"),
    Column("run_status", "string", "`complete` (every model finished), `failed` (finished, a model "
           "failed) or `partial` (a model still running or not started: a run in progress)"),
    Column("source", "string", "where the run is stored: a folder or `s3://bucket/prefix/run-id`"),
    Column("benchmark", "string", "the named benchmark (`medqa`, `mmlu:anatomy`), or `file:NAME` "
           "for a questions file"),
    Column("benchmark_split", "string", "its split (`test`); null for a file"),
    Column("benchmark_revision", "string", "the dataset's Hub commit, or the sha256 of a local copy"),
    Column("questions_label", "string", "the report's one line naming the questions"),
    Column("model_dir", "string", "the model's folder in the run"),
    Column("model_id", "string", "the model's id (Hub id, API model name)"),
    Column("model_key", "string", "16 hex digits naming the configuration: id, revision, backend, "
           "quantization, dtype, scoring, prompt and generation settings (not batch sizes or rate "
           "limits); one leaderboard row per key"),
    Column("model_revision", "string", "the resolved revision (Hub commit; an API's model version)"),
    Column("backend", "string", "hf, vllm, openai, gemini, echo, embed"),
    Column("quantization", "string", "none, 8bit, 4bit (local models)"),
    Column("dtype", "string", "weights' dtype (local models)"),
    Column("scoring", "string", "`generate` (free text) or `loglikelihood`"),
    Column("prompt_preset", "string", "the system prompt: a preset's name, `none`, or `custom`"),
    Column("system_prompt_hash", "string", "16 hex digits of the system prompt's SHA-256"),
    Column("prompt_template_hash", "string", "16 hex digits of the prompt template's SHA-256; null: "
           "the built-in rendering"),
    Column("generation", "string", "the generation settings as JSON (max_new_tokens, temperature, ...)"),
    Column("temperature", "float64", "generation.temperature"),
    Column("max_new_tokens", "int32", "generation.max_new_tokens"),
]

SAMPLES = [
    *_IDENTITY,
    Column("model_status", "string", "the model's state in the run: complete, failed, running"),
    Column("question_index", "int32", "1-based position in the run's questions (the N of N.txt)"),
    Column("question_id", "string", "the question's id"),
    Column("question_hash", "string", "16 hex digits of the SHA-256 of the question's text, context, "
           "options and gold answer: the same question in any run, whatever its id or position"),
    Column("prompt_hash", "string", "16 hex digits over question_hash, the system prompt and the "
           "template: the same prompt. Paired comparisons match on question_hash and this"),
    Column("benchmark_row", "int64", "the question's 0-based row in the benchmark's split"),
    Column("question", "string", "the question's text"),
    Column("gold", "string", "the gold option's letter; null for free text"),
    Column("answer", "string", "the model's answer as it wrote it; null when it failed"),
    Column("choice", "string", "the option the answer chose (read from free text by the report's "
           "rules, or the log-likelihood prediction); null: no option found"),
    Column("choice_norm", "string", "`scoring: loglikelihood` only: the length-normalised prediction "
           "(acc_norm)"),
    Column("correct", "bool", "the choice is the gold option; false for no option found; null for "
           "an error, free text or a question without gold"),
    Column("outcome", "string", "correct, wrong, no_answer, error, free_text, ungraded (options "
           "without gold) or empty"),
    Column("option_loglikelihoods", "list<float64>", "`scoring: loglikelihood` only: one per option"),
    Column("input_tokens", "int64", "tokens sent"),
    Column("output_tokens", "int64", "tokens received"),
    Column("reasoning_tokens", "int64", "thinking tokens, where the API reports them"),
    Column("latency_s", "float64", "seconds for this answer"),
    Column("cost_usd", "float64", "the answer's cost, for API models with prices"),
    Column("attempts", "int32", "tries it took"),
    Column("finish_reason", "string", "stop, length, content_filter..."),
    Column("error", "string", "why it failed; null when answered"),
]

RUNS = [
    *_IDENTITY,
    Column("model_status", "string", "complete, failed, running, or pending (nothing stored yet)"),
    Column("kind", "string", "`generate` or `embed` (encoders have no rows in samples)"),
    Column("n_questions", "int32", "questions in the run"),
    Column("questions_sha256", "string", "SHA-256 of the run's questions.jsonl"),
    Column("n_answered", "int32", "answers without error"),
    Column("n_errors", "int32", "answers that failed"),
    Column("n_graded", "int32", "multiple-choice answers with a gold option (the accuracy's n)"),
    Column("n_correct", "int32", "of those, correct"),
    Column("cost_usd", "float64", "the model's cost in this run, where known"),
    Column("input_tokens", "int64", "tokens sent, all answers"),
    Column("output_tokens", "int64", "tokens received, all answers"),
    Column("started_at", "timestamp", "the model's first start"),
    Column("finished_at", "timestamp", "the model's last finish"),
    Column("hardware", "string", "where it ran, as JSON (from the manifest)"),
    Column("medbench_version", "string", "the medbench that ran it"),
]


def require(module: str) -> Any:
    """Import ``module`` (pyarrow, pandas); ``BackendUnavailable`` (exit 2) naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendUnavailable(
            f"{module.split('.')[0]} is not installed: the results tables need it; "
            f"{install_hint(EXTRA)}") from None


def arrow_type(name: str) -> Any:
    pa = require("pyarrow")
    # As Parquet stores them, so a table read back has the schema it was written with.
    if name == "timestamp":
        return pa.timestamp("ms", tz="UTC")
    if name.startswith("list<"):
        return pa.list_(pa.field("element", arrow_type(name[5:-1])))
    return {"string": pa.string(), "bool": pa.bool_(), "float64": pa.float64(), "int16": pa.int16(),
            "int32": pa.int32(), "int64": pa.int64()}[name]


def arrow_schema(columns: list[Column]) -> Any:
    pa = require("pyarrow")
    meta = {"medbench.schema_version": str(SCHEMA_VERSION)}
    return pa.schema([pa.field(c.name, arrow_type(c.type)) for c in columns], metadata=meta)


def markdown(columns: list[Column]) -> str:
    """The columns as the markdown table docs/results.md shows."""
    lines = ["| column | type | what |", "| --- | --- | --- |"]
    lines += [f"| `{c.name}` | {c.type} | {c.doc} |" for c in columns]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print("### samples\n\n" + markdown(SAMPLES) + "\n### runs\n\n" + markdown(RUNS), end="")
