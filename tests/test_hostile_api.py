"""A hostile API server: no answer from outside can stop a model, fake a success or leak a key.

Each story runs ``launcher run`` (``launcher report --judge`` for the judge) against the
loopback OpenAI or Gemini server, driven through the real SDKs, with the server answering
what a broken or malicious one would: lone surrogates, fields of the wrong type, the caller's
key echoed back, a gzip bomb, answers without text, impossible token counts, a redirect to
another origin, a judge's unreadable verdict. Whatever it sends, a bad answer is one error
record for that question (or a flagged answer), the model goes on with the others, no
traceback is printed, and the key appears nowhere: not in the results, not on the terminal,
not in the logs.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from runner.engine import concurrent_driver as api_runner
from tests.conftest import run_cli, write
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.openai_server import DROP, FakeOpenAI, Fault, LoopbackServer
from tests.report_fixtures import FakeModel, tiny_models, tiny_questions, write_run

OPENAI_KEY = "sk-hostile-0123456789abcdefGHIJ"
GEMINI_KEY = "AIzaHostile0123456789abcdefGHIJ"
GEMINI_MODEL = "gemini-2.5-pro"
QUESTIONS = ["Which drug targets HER2 in breast cancer?",
             "Is BCG used for bladder cancer?",
             "What does a raised PSA suggest?"]
# The question each story's server misbehaves on; the others must still be answered.
TARGET = "HER2"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(api_runner, "DEFAULT_POLICY", api_runner.RetryPolicy(base_delay=0.01, max_delay=0.02))


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)


def make(backend: str, key: str | None = "own") -> LoopbackServer:
    """The fake for ``backend``, taking its own key (or ``key``; None: any request)."""
    if backend == "openai":
        return FakeOpenAI(key=OPENAI_KEY if key == "own" else key)
    return FakeGemini(key=GEMINI_KEY if key == "own" else key)


@pytest.fixture(params=["openai", "gemini"])
def backend(request):
    return request.param


@pytest.fixture
def server(backend):
    with make(backend) as s:
        yield s


def setup(project: Path, backend: str, url: str, **entry: object) -> Path:
    (project / "q.jsonl").write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))
    model = "gpt-4o" if backend == "openai" else GEMINI_MODEL
    keys = "".join(f"\n            {k}: {json.dumps(v)}" for k, v in {"max_retries": 1, **entry}.items())
    return write(project / "models.yaml", f"""
        name: hostile
        questions: q.jsonl
        output: out
        models:
          - id: {model}
            backend: {backend}
            base_url: {url}{keys}
        """)


def folder(project: Path) -> Path:
    (run,) = (project / "out").iterdir()
    (model,) = [p for p in run.iterdir() if p.is_dir()]
    return model


def record(project: Path, index: int) -> dict:
    return json.loads((folder(project) / "records" / f"{index:06d}.json").read_text())


def manifest(project: Path) -> dict:
    return json.loads((folder(project) / "manifest.json").read_text())


def everything(project: Path, capsys, caplog) -> str:
    """Every file the run wrote, what it printed and what it logged."""
    captured = capsys.readouterr()
    files = "".join(p.read_text(encoding="utf-8", errors="replace")
                    for p in (project / "out").rglob("*") if p.is_file())
    return files + captured.out + captured.err + caplog.text


def no_key_in(text: str, key: str) -> bool:
    """Neither the key nor the key in another case nor the key short of its last character."""
    return key[:-1].lower() not in text.lower()


def the_others_were_answered(project: Path) -> None:
    for i in (2, 3):
        assert "Answer to:" in (folder(project) / f"{i}.txt").read_text(encoding="utf-8")


# --- 1. lone surrogates ------------------------------------------------------------------------


def answer_text(backend: str, text: str, *, gzip: bool = False) -> Fault:
    """The normal answer, with ``text`` as its text."""
    if backend == "openai":
        return Fault.patch({"choices": [{"message": {"content": text}}]}, gzip=gzip)
    return Fault.patch({"candidates": [{"content": {"parts": [{"text": text}]}}]}, gzip=gzip)


def test_an_answer_with_lone_surrogates_is_stored_with_them_replaced_and_counted(
        project, backend, server, capsys, caplog):
    # What a server's JSON encoder writes for broken text: the escapes "\ud800" and "\udc00".
    server.on(TARGET, answer_text(backend, "trastuzumab \ud800 and \udc00"))
    cfg = setup(project, backend, server.url)

    assert run_cli("run", cfg) == 0

    assert (folder(project) / "1.txt").read_text(encoding="utf-8") == "trastuzumab \ufffd and \ufffd"
    rec = record(project, 1)
    assert rec["response"] == "trastuzumab \ufffd and \ufffd" and rec["surrogates_replaced"] == 2
    m = manifest(project)
    assert m["status"] == "complete" and m["done"] == 3
    (warning,) = [w for w in m["warnings"] if "lone surrogates" in w]
    assert warning.startswith("1 answer(s)") and "U+FFFD" in warning and "questions 1" in warning
    assert "Traceback" not in everything(project, capsys, caplog)


# --- 2. fields of the wrong type ------------------------------------------------------------------


CONTENT = "choices[0].message.content: expected text or null"
WRONG_TYPES = {
    "openai": [
        ({"choices": [{"message": {"content": 12345}}]}, f"{CONTENT}, got a number"),
        ({"choices": [{"message": {"content": [OPENAI_KEY]}}]}, f"{CONTENT}, got an array"),
        ({"choices": [{"finish_reason": {"reason": OPENAI_KEY}}]},
         "choices[0].finish_reason: expected text or null, got an object"),
        ({"choices": {"0": OPENAI_KEY}}, "choices: expected an array, got an object"),
    ],
    "gemini": [
        ({"candidates": [{"content": {"parts": [{"text": [GEMINI_KEY]}]}}]},
         "candidates[0].content.parts[0].text: expected text or null, got an array"),
        ({"candidates": [{"finishReason": {"reason": GEMINI_KEY}}]},
         "candidates[0].finishReason: expected text or null, got an object"),
        ({"candidates": [{"content": GEMINI_KEY}]}, "candidates[0].content: expected an object, got text"),
    ],
}


@pytest.mark.parametrize(("backend", "changes", "message"),
                         [(b, c, m) for b, cases in WRONG_TYPES.items() for c, m in cases])
def test_a_field_of_the_wrong_type_is_one_error_record_that_never_echoes_its_value(
        project, backend, server, changes, message, capsys, caplog):
    server.on(TARGET, *[Fault.patch(changes)] * 2)  # the first attempt and its one retry
    cfg = setup(project, backend, server.url)

    assert run_cli("run", cfg) == 1  # a question without an answer: a failed run, not a crash

    rec = record(project, 1)
    assert rec["error"] == f"{message} (gave up after 2 attempts)" and rec["attempts"] == 2
    assert not (folder(project) / "1.txt").exists()
    the_others_were_answered(project)
    m = manifest(project)
    assert (m["status"], m["done"], m["errors"]) == ("failed", 2, 1)
    assert m["error"] == "1 of 3 questions failed; run again to retry them"
    seen = everything(project, capsys, caplog)
    key = OPENAI_KEY if backend == "openai" else GEMINI_KEY
    assert no_key_in(seen, key) and "input_value" not in seen and "Traceback" not in seen


DEEP = "[" * 100_000 + "]" * 100_000  # deeper than any JSON parser's stack
LONG = "x" * 100_000  # an error page's worth of text
ERROR_BODIES = [
    ("gemini", Fault.raw({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": 5}}, status=429)),
    ("gemini", Fault.raw({"error": {"code": 429, "message": [GEMINI_KEY], "status": {"s": 1},
                                    "details": [{"@type": 5, "violations": [5]}]}}, status=429)),
    ("gemini", Fault.raw(DEEP, status=500)),
    ("gemini", Fault.raw({"error": {"code": 503, "message": LONG, "status": "UNAVAILABLE"}}, status=503)),
    ("openai", Fault.raw({"error": {"message": LONG, "type": "server_error"}}, status=500)),
]


@pytest.mark.parametrize(("backend", "fault"), ERROR_BODIES)
def test_an_error_body_of_any_shape_is_one_short_error_record(project, backend, server, fault,
                                                              capsys, caplog):
    server.on(TARGET, fault, fault)
    cfg = setup(project, backend, server.url)

    assert run_cli("run", cfg) == 1

    rec = record(project, 1)
    assert rec["attempts"] == 2 and 0 < len(rec["error"]) < 1000  # a message, not the server's page
    the_others_were_answered(project)
    seen = everything(project, capsys, caplog)
    assert no_key_in(seen, GEMINI_KEY) and "Traceback" not in seen


# --- 3. the key echoed in the model version -----------------------------------------------------


@pytest.mark.parametrize("variant", ["as sent", "upper case", "short of its last character"])
def test_a_key_echoed_as_the_model_version_is_redacted_everywhere(project, backend, server, variant,
                                                                 capsys, caplog):
    key = OPENAI_KEY if backend == "openai" else GEMINI_KEY
    echoed = {"as sent": key, "upper case": key.upper(), "short of its last character": key[:-1]}[variant]
    server.every(1, Fault.patch({"model": echoed} if backend == "openai" else {"modelVersion": echoed}))
    cfg = setup(project, backend, server.url)

    assert run_cli("run", cfg) == 0

    assert manifest(project)["revision"] == "***" and record(project, 1)["model_version"] == "***"
    assert no_key_in(everything(project, capsys, caplog), key)


def test_a_key_echoed_in_the_answer_text_is_redacted_there_too(project, backend, server, capsys, caplog):
    key = OPENAI_KEY if backend == "openai" else GEMINI_KEY
    server.on(TARGET, answer_text(backend, f"Your key is {key.upper()[:-1]}, thanks."))
    cfg = setup(project, backend, server.url)

    assert run_cli("run", cfg) == 0

    assert (folder(project) / "1.txt").read_text(encoding="utf-8") == "Your key is ***, thanks."
    assert no_key_in(everything(project, capsys, caplog), key)


def test_redaction_stops_where_a_fragment_is_no_longer_the_key():
    from runner.redact import redact, remember

    key = "sk-proj-Zq81vK2mXw93LpQeR7tY"
    remember(key)
    assert redact(f"a {key[2:-2].upper()} b") == "a *** b"  # four characters short, in upper case
    assert redact(f"a {key[:-5]} b") == f"a {key[:-5]} b"  # five short: no longer taken for the key
    assert redact("billed to sk-...R7tY") == "billed to sk-...R7tY"  # a provider's masked form


# --- 4. a gzip bomb and the body limit -------------------------------------------------------


@pytest.fixture(scope="module")
def bomb() -> dict[str, bytes]:
    """An answer of 20 MiB of text, gzip-compressed to about 20 KB, in each wire format."""
    text = "a" * (20 * 1024 * 1024)
    bodies = {
        "openai": {"model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant", "content": text}}]},
        "gemini": {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                   "finishReason": "STOP"}]},
    }
    return {b: gzip.compress(json.dumps(body).encode(), compresslevel=1) for b, body in bodies.items()}


def test_a_gzip_bomb_is_cut_at_the_default_limit_and_recorded_as_that_questions_error(
        project, backend, server, bomb):
    server.on(TARGET, Fault.raw(bomb[backend], **{"Content-Encoding": "gzip"}))
    cfg = setup(project, backend, server.url)

    assert run_cli("run", cfg) == 1

    rec = record(project, 1)
    # The same body would be refused again: not retried.
    assert "larger than max_response_bytes (16,777,216 bytes" in rec["error"] and rec["attempts"] == 1
    assert not (folder(project) / "1.txt").exists()
    the_others_were_answered(project)
    assert (manifest(project)["done"], manifest(project)["errors"]) == (2, 1)


def test_max_response_bytes_sets_the_limit_per_model(project, backend, server):
    # An answer of 5 KB, gzip-encoded to a few dozen bytes on the wire: the limit counts it decoded.
    server.on(TARGET, answer_text(backend, "b" * 5000, gzip=True))
    server.every(1, Fault.patch({}, gzip=True))  # the others, gzip-encoded too, are well under it
    cfg = setup(project, backend, server.url, max_response_bytes=4096)

    assert run_cli("run", cfg) == 1

    assert "larger than max_response_bytes (4,096 bytes" in record(project, 1)["error"]
    the_others_were_answered(project)


# --- 5. answers without text -------------------------------------------------------------------


NO_TEXT = {
    "openai": [Fault.raw({"choices": [{"message": {}}]}),
               Fault.patch({"choices": [{"message": {"content": None}, "finish_reason": "stop"}]})],
    "gemini": [Fault.raw({"candidates": [{}]}), Fault.raw({"candidates": "nope"}),
               Fault.patch({"candidates": [{"content": {"parts": DROP}}]})],
}


@pytest.mark.parametrize(("backend", "fault"), [(b, f) for b, faults in NO_TEXT.items() for f in faults])
def test_an_answer_without_text_is_an_error_never_a_silent_success(project, backend, server, fault):
    server.on(TARGET, fault, fault)
    cfg = setup(project, backend, server.url)

    assert run_cli("run", cfg) == 1

    rec = record(project, 1)
    assert rec["error"] and "response" not in rec and not (folder(project) / "1.txt").exists()
    the_others_were_answered(project)
    assert manifest(project)["status"] == "failed"


def test_an_answer_that_is_explicitly_empty_text_is_kept_and_flagged(project, backend, server):
    server.on(TARGET, answer_text(backend, ""))
    cfg = setup(project, backend, server.url)

    assert run_cli("run", cfg) == 0

    assert record(project, 1)["response"] == ""
    (warning,) = [w for w in manifest(project)["warnings"] if "empty" in w]
    assert warning.startswith("1 answer(s) empty with finish_reason 'stop'") and "questions 1" in warning


# --- 6. impossible usage -----------------------------------------------------------------------


PRICES = {"input_per_million": 2.5, "output_per_million": 10.0}
IMPOSSIBLE = {
    "openai": [
        ({"usage": {"prompt_tokens": -1000000, "completion_tokens": -5}}, "input_tokens is negative"),
        ({"usage": {"prompt_tokens": 10**30, "completion_tokens": 10**30}}, "input_tokens is more than"),
        ({"usage": {"prompt_tokens": OPENAI_KEY}}, "input_tokens is not a whole number"),
        ({"usage": {"completion_tokens": 1e308}}, "output_tokens is more than the request could"),
        ({"usage": {"completion_tokens": 2.5}}, "output_tokens is not a whole number"),
    ],
    "gemini": [
        ({"usageMetadata": {"candidatesTokenCount": -7}}, "output_tokens is negative"),
        ({"usageMetadata": {"promptTokenCount": "many"}}, "input_tokens is not a whole number"),
        ({"usageMetadata": {"candidatesTokenCount": 1e308}}, "output_tokens is more than the request could"),
    ],
}


@pytest.mark.parametrize(("backend", "changes", "why"),
                         [(b, c, w) for b, cases in IMPOSSIBLE.items() for c, w in cases])
def test_impossible_usage_is_recorded_as_unknown_with_a_warning_and_never_priced(
        project, backend, server, changes, why, capsys, caplog):
    server.on(TARGET, Fault.patch(changes))
    cfg = setup(project, backend, server.url, prices=PRICES)

    assert run_cli("run", cfg) == 0  # the answer itself is fine: kept

    rec = record(project, 1)
    assert rec["response"].startswith("Answer to:") and why in rec["usage_rejected"]
    assert "cost_usd" not in rec  # an unknown count prices nothing
    others = [record(project, i) for i in (2, 3)]
    usage = manifest(project)["usage"]
    assert usage["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in others), abs=1e-6)
    assert 0 < usage["cost_usd"] < 0.01
    assert 0 < usage["input_tokens"] < 1000 and 0 < usage["output_tokens"] < 1000
    (warning,) = [w for w in manifest(project)["warnings"] if "impossible token usage" in w]
    assert warning.startswith("1 answer(s)") and "questions 1" in warning
    assert no_key_in(everything(project, capsys, caplog), OPENAI_KEY)


# --- 7. redirects --------------------------------------------------------------------------------


def endpoint(server: LoopbackServer, backend: str) -> str:
    return (f"{server.origin}/v1/chat/completions" if backend == "openai"
            else f"{server.origin}/v1beta/models/{GEMINI_MODEL}:generateContent")


def test_a_redirect_to_another_origin_never_carries_the_key(project, backend, server):
    """Gemini's SDK forwarded x-goog-api-key on a 307 elsewhere; OpenAI's (httpx) strips its
    Authorization header already, and keeps doing so."""
    key = OPENAI_KEY if backend == "openai" else GEMINI_KEY
    with make(backend, key=None) as elsewhere:  # another origin: a server that takes anything
        server.on(TARGET, Fault.redirect(endpoint(elsewhere, backend)))
        cfg = setup(project, backend, server.url)

        assert run_cli("run", cfg) == 0

        (went,) = elsewhere.requests  # the redirect was followed, with the question...
        assert TARGET in json.dumps(went.body)
        for name, value in went.headers.items():  # ...and without the key
            assert no_key_in(value, key) and name.lower() not in ("authorization", "x-goog-api-key")
    assert record(project, 1)["response"].startswith("Answer to:")


def test_a_redirect_within_the_same_origin_keeps_the_key(project, backend, server):
    server.on(TARGET, Fault.redirect(endpoint(server, backend)))
    cfg = setup(project, backend, server.url)

    assert run_cli("run", cfg) == 0

    asked = server.requests_matching(TARGET)
    assert len(asked) == 2 and all(r.key_ok for r in asked)


# --- 8. the judge ----------------------------------------------------------------------------------


JUDGE_KEY_ENV = "LAB_TEST_HOSTILE_JUDGE_KEY"
GOOD_VERDICT = json.dumps({"accuracy": 4, "completeness": 4, "safety": 4, "rationale": "fine"})
BAD_VERDICTS = {
    "a superscript digit as a score": json.dumps({"accuracy": "²", "completeness": 4, "safety": 4}),
    "a rationale nested 200,000 deep": ('{"accuracy": 4, "completeness": 4, "safety": 4, "rationale": '
                                        + "[" * 200_000 + "]" * 200_000 + "}"),
}


@pytest.mark.parametrize("reply", list(BAD_VERDICTS))
def test_a_bad_judge_reply_is_a_missing_verdict_and_the_report_still_renders(tmp_path, monkeypatch, reply):
    monkeypatch.setenv(JUDGE_KEY_ENV, OPENAI_KEY)
    with FakeOpenAI(key=OPENAI_KEY) as judge:
        judge.every(1, Fault.patch({"choices": [{"message": {"content": GOOD_VERDICT}}]}))
        # Only the answer to the free-text question gets the bad verdict (the fake checks its
        # targeted faults first).
        judge.on("Explain what a tumour marker is", *[Fault.patch(
            {"choices": [{"message": {"content": BAD_VERDICTS[reply]}}]})] * 10)
        entry = {"base_url": judge.url, "api_key_env": JUDGE_KEY_ENV, "max_retries": 0}
        run = write_run(tmp_path, tiny_questions(),
                        tiny_models() + [FakeModel("judge-gpt", "gpt-4o-mini", backend="openai", entry=entry,
                                                   answer=lambda q: f"{q.question} See your doctor.")])

        assert run_cli("report", run, "--judge", "judge-gpt", "--encoder", "none") == 0

    lines = (run / "judge" / "judge-gpt" / "verdicts.jsonl").read_text().splitlines()
    verdicts = [json.loads(line) for line in lines]
    bad = [v for v in verdicts if v["id"] == "q-free"]
    assert bad and all(v["scores"] is None and v["error"] for v in bad)
    assert all(v["scores"] for v in verdicts if v["id"] != "q-free")
    assert "Judged by gpt-4o-mini" in (run / "report.html").read_text()
