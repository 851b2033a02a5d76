"""A run read back (``launcher.results.reading``) → its rows of the two tidy tables.

Every answer is graded as the report grades it: the option a free-text answer chose comes from
``launcher.scoring.extract`` through the same cache the report keeps in a local run folder
(``<run>/.cache/choices``), a log-likelihood model's from its ``prediction``; "no option found"
counts as not correct, an error is not graded (``outcome`` tells them apart).

What identifies the same question, the same prompt and the same model configuration across
runs is made of what the run stored, never of the position or id of a question:

- ``question_hash``: the question's text, context, options and gold option;
- ``prompt_hash``: that, the system prompt's hash and the prompt template;
- ``model_key``: the settings that shape answers (id, resolved revision, backend, quantization,
  dtype, scoring, prompt and generation settings), not those that only shape the work (batch
  size, concurrency, rate limits, GPUs, shards, device, prices, the folder's name).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from launcher.results.reading import ModelRecords, RunContent, config_entries
from launcher.results.schema import RUNS, SAMPLES, SCHEMA_VERSION, arrow_schema
from launcher.scoring.metrics import _Choices
from launcher.scoring.source import source_label
from runner.prompts import PRESETS, prompt_hash
from runner.questions import Question

HASH_CHARS = 16
#: Model settings that shape the work, not the answers: left out of ``model_key``.
OPERATIONAL = frozenset({
    "name", "api_key_env", "base_url", "batch_size", "concurrency", "delay", "device", "enforce_eager",
    "gpu_memory_utilization", "gpus", "kv_cache_space", "max_retries", "max_wait", "placement",
    "prefix_caching", "prices", "requests_per_minute", "resources", "shards", "system_prompt",
    "timeout", "tokens_per_minute", "resolved", "revision",
})


#: Sample columns copied from the answer records as they are.
_FROM_RECORD = ("option_loglikelihoods", "input_tokens", "output_tokens", "reasoning_tokens", "latency_s",
                "cost_usd", "attempts", "finish_reason", "error")
#: Sample columns that differ from answer to answer (the rest are the run's and the model's).
_PER_ANSWER = ("question_index", "question_id", "question_hash", "prompt_hash", "benchmark_row", "question",
               "gold", "answer", "choice", "choice_norm", "correct", "outcome")


def _hash(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:HASH_CHARS]


def prompt_key(question: str, system_prompt_hash: str | None, template: str | None) -> str:
    """``prompt_hash``: the question's hash, the system prompt's and the template, hashed."""
    blob = f"{question}\x00{system_prompt_hash or ''}\x00{template if template is not None else ''}"
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:HASH_CHARS]


def question_hash(q: Question) -> str:
    return _hash(q.question, q.context, list((q.options or {}).items()), q.gold_letter)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _benchmark(info: dict[str, Any]) -> dict[str, Any]:
    source = info.get("questions_source") if isinstance(info.get("questions_source"), dict) else None
    n = info.get("n_questions")
    if source and _str(source.get("benchmark")):
        name = source["benchmark"] + (f":{source['subject']}" if _str(source.get("subject")) else "")
        return {"benchmark": name, "benchmark_split": _str(source.get("split")),
                "benchmark_revision": _str(source.get("revision")) or _str(source.get("files_sha256")),
                "questions_label": source_label(source)}
    path = (info.get("config") or {}).get("questions")
    name = PurePosixPath(path.replace("\\", "/")).name if isinstance(path, str) and path else ""
    name = name or "questions.jsonl"
    label = f"{name} ({n:,} questions)" if isinstance(n, int) else name
    return {"benchmark": f"file:{name}", "benchmark_split": None, "benchmark_revision": None,
            "questions_label": label}


def _preset(info: dict[str, Any], model_dir: str) -> str | None:
    prompts = info.get("system_prompts")
    if not isinstance(prompts, dict) or model_dir not in prompts:
        return None
    text = prompts[model_dir]
    if text is None:
        return "none"
    return next((name for name, preset in PRESETS.items() if preset == text), "custom")


def model_identity(info: dict[str, Any], m: ModelRecords) -> dict[str, Any]:
    """The columns that name one model's configuration in a run, ``model_key`` among them."""
    man = m.manifest
    params = _dict(man.get("parameters")) or config_entries(info).get(m.model_dir, {})
    prompts = _dict(info.get("system_prompts"))
    sp_hash = (prompt_hash(prompts[m.model_dir]) if m.model_dir in prompts
               else _str(man.get("system_prompt_hash")) or _str(params.get("system_prompt_sha256_16")))
    generation = params.get("generation") if isinstance(params.get("generation"), dict) else None
    if generation is None and m.kind != "embed":
        generation = (info.get("config") or {}).get("generation")
    revision = _str(man.get("revision")) or _str(params.get("revision"))
    template = params.get("prompt_template") if isinstance(params.get("prompt_template"), str) else None
    settings = {k: v for k, v in params.items() if k not in OPERATIONAL}
    settings["system_prompt_sha256_16"] = sp_hash
    scoring = "embed" if m.kind == "embed" else (
        "loglikelihood" if params.get("scoring") == "loglikelihood"
        or any(v is not None for v in m.columns.get("option_loglikelihoods", [])) else "generate")
    gen = generation or {}
    return {
        "model_dir": m.model_dir,
        "model_id": _str(man.get("model")) or _str(params.get("id")) or m.model_dir,
        "model_key": _hash(settings, revision),
        "model_revision": revision,
        "backend": _str(man.get("backend")) or _str(params.get("backend")),
        "quantization": _str(params.get("quantization")),
        "dtype": _str(params.get("dtype")),
        "scoring": scoring,
        "prompt_preset": _preset(info, m.model_dir),
        "system_prompt_hash": sp_hash,
        "prompt_template_hash": prompt_hash(template),
        "generation": json.dumps(generation, sort_keys=True) if generation else None,
        "temperature": float(gen["temperature"]) if type(gen.get("temperature")) in (int, float) else None,
        "max_new_tokens": gen["max_new_tokens"] if type(gen.get("max_new_tokens")) is int else None,
        "_template": template,
    }


def run_columns(content: RunContent) -> dict[str, Any]:
    info = content.info
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": _str(info.get("run_id")) or content.ref.run_id,
        "run_name": _str(info.get("name")),
        "run_created_at": _time(info.get("created_at")),
        "run_status": content.status,
        "source": content.ref.url,
        **_benchmark(info),
    }


def _count(value: Any) -> int:
    return value if type(value) is int else 0


def _grade(choice: str | None, gold: str | None, has_options: bool, error: str | None,
           text: str | None) -> tuple[bool | None, str]:
    if error is not None:
        return None, "error"
    if text is None:
        return None, "empty"
    if not has_options:
        return None, "free_text"
    if gold is None:
        return None, "ungraded"
    if choice is None:
        return False, "no_answer"
    return (True, "correct") if choice == gold else (False, "wrong")


def build_tables(content: RunContent) -> tuple[Any, Any]:
    """(samples, runs) of one run, as pyarrow tables of the documented schemas."""
    import pyarrow as pa

    run = run_columns(content)
    questions = {q.index: q for q in content.questions}
    qhash = {i: question_hash(q) for i, q in questions.items()}
    samples: dict[str, list[Any]] = {c.name: [] for c in SAMPLES}
    runs: dict[str, list[Any]] = {c.name: [] for c in RUNS}
    choices = _Choices(content.ref.local)
    for m in content.models:
        ident = model_identity(content.info, m)
        template = ident.pop("_template")
        cols = m.columns
        n = m.n if m.kind != "embed" else 0
        picked = _choices(cols, questions, ident["scoring"], choices) if n else []
        varying: dict[str, list[Any]] = {name: [] for name in _PER_ANSWER}
        for k in range(n):
            index = cols["index"][k]
            q = questions[index]
            text, error = cols["response"][k], cols["error"][k]
            choice = picked[k] if (error is None and text is not None) else None
            correct, outcome = _grade(choice, q.gold_letter, bool(q.options), error, text)
            meta = q.meta if isinstance(q.meta, dict) else {}
            for name, value in (
                ("question_index", index), ("question_id", q.id), ("question_hash", qhash[index]),
                ("prompt_hash", prompt_key(qhash[index], ident["system_prompt_hash"], template)),
                ("benchmark_row", meta.get("row") if type(meta.get("row")) is int else None),
                ("question", q.question), ("gold", q.gold_letter), ("answer", text), ("choice", choice),
                ("choice_norm", cols["prediction_norm"][k] if error is None else None),
                ("correct", correct), ("outcome", outcome),
            ):
                varying[name].append(value)
        for name in _FROM_RECORD:
            varying[name] = cols[name][:n]
        constant = {**run, **ident, "model_status": m.status}
        for name, values in samples.items():
            values.extend(varying[name] if name in varying else [constant[name]] * n)
        graded = sum(c is not None for c in varying["correct"])
        correct_n = sum(c is True for c in varying["correct"])
        man = m.manifest
        costs = [c for c in cols.get("cost_usd", []) if c is not None]
        usage = _dict(man.get("usage"))
        cost: Any = usage.get("cost_usd")
        errors = sum(e is not None for e in cols.get("error", []))
        answered = m.n - errors
        if m.kind == "embed":  # an encoder's records are vectors, not read here: its manifest counts them
            answered, errors = _count(man.get("done")), _count(man.get("errors"))
        model_row = {
            **run, **ident, "model_status": m.status, "kind": m.kind, "n_questions": len(questions),
            "questions_sha256": _str(content.info.get("questions_sha256")),
            "n_answered": answered, "n_errors": errors, "n_graded": graded, "n_correct": correct_n,
            "cost_usd": sum(costs) if costs else (float(cost) if type(cost) in (int, float) else None),
            "input_tokens": sum(v for v in cols.get("input_tokens", []) if v is not None),
            "output_tokens": sum(v for v in cols.get("output_tokens", []) if v is not None),
            "started_at": _time(man.get("started_at")), "finished_at": _time(man.get("finished_at")),
            "hardware": json.dumps(man["hardware"], sort_keys=True) if man.get("hardware") else None,
            "medbench_version": _str((man.get("versions") or {}).get("medbench"))
            or _str((content.info.get("versions") or {}).get("medbench")),
        }
        for name, values in runs.items():
            values.append(model_row[name])
    note = choices.save()
    if note:
        content.notes.append(note)
    return (pa.table(samples, schema=arrow_schema(SAMPLES)), pa.table(runs, schema=arrow_schema(RUNS)))


def _choices(cols: dict[str, list[Any]], questions: dict[int, Question], scoring: str,
             choices: _Choices) -> list[str | None]:
    """The option each answer chose, in row order; free text read by the report's rules, at once."""
    if scoring == "loglikelihood":
        return list(cols["prediction"])
    out: list[str | None] = [None] * len(cols["index"])
    asked: list[tuple[str, dict[str, str]]] = []
    at: list[int] = []
    rows = zip(cols["index"], cols["response"], cols["error"], strict=True)
    for k, (index, text, error) in enumerate(rows):
        options = questions[index].options
        if options and text is not None and error is None:
            asked.append((text, options))
            at.append(k)
    for k, choice in zip(at, choices.of(asked), strict=True):
        out[k] = choice
    return out
