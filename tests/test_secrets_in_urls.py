"""Credentials in a URL (``user:password@``, ``?api-key=...``) are used, and never recorded.

The story: a model sits behind a proxy that wants its own login and a key in the query
string, and the user pastes the whole URL into ``base_url``. The run uses them; run.json,
the manifest, the records, the report's inputs, stdout, stderr and the logs show the URL with
``***`` where the credentials were. A pod, which rebuilds the config from run.json, cannot
use them and says so in one line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from runner.artefacts.stored import stage_run
from runner.config import parse_config
from runner.credentials import public_url
from runner.engine import concurrent_driver as api_runner
from runner.main import main as runner_main
from runner.plan import make_plan
from runner.storage import open_storage
from tests.conftest import run_cli, write
from tests.fakes.openai_server import FakeOpenAI, Fault

KEY = "sk-urls-0123456789abcdef"
PROXY_USER = "medbench-proxy-user"
PROXY_PASSWORD = "pw-Proxy-5ecret-9876"
QUERY_KEY = "query-key-ABCDEF-0123456789"
SECRETS = (PROXY_PASSWORD, QUERY_KEY)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(api_runner, "DEFAULT_POLICY", api_runner.RetryPolicy(base_delay=0.01, max_delay=0.05))


@pytest.fixture
def proxy(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(key=KEY, latency=(0.0, 0.02)) as server:
        server.basic_auth = (PROXY_USER, PROXY_PASSWORD)
        yield server


def secret_url(server: FakeOpenAI) -> str:
    host = server.origin.removeprefix("http://")
    return f"http://{PROXY_USER}:{PROXY_PASSWORD}@{host}/v1?api-key={QUERY_KEY}&api-version=2024-06-01"


def questions(project: Path, pubmedqa: Path, n: int) -> list[dict]:
    lines = pubmedqa.read_text(encoding="utf-8").splitlines()[:n]
    (project / "q.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [json.loads(line) for line in lines]


def models_yaml(project: Path, base_url: str | None) -> Path:
    url = f"\n            base_url: {base_url}" if base_url else ""
    return write(project / "models.yaml", f"""
        name: proxied
        questions: q.jsonl
        output: out
        models:
          - id: gpt-4o
            backend: openai{url}
        """)


def every_file(folder: Path) -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("*") if p.is_file()}


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_a_base_url_with_credentials_is_used_but_recorded_without_them(
        project, pubmedqa, proxy, capsys, caplog):
    qs = questions(project, pubmedqa, 6)
    # The server's complaint about one question quotes the URL it was asked, key and all.
    complaint = f"invalid request to /v1/chat/completions?api-key={QUERY_KEY}"
    proxy.on(qs[2]["question"], Fault.status_code(400, {"error": {"message": complaint, "type": "invalid"}}))
    cfg = models_yaml(project, secret_url(proxy))

    with caplog.at_level(logging.DEBUG):
        assert run_cli("-v", "run", cfg) == 1  # the question the server refused failed

    # The credentials did their job: the proxy's login and the query key reached the server.
    assert proxy.requests and all(r.key_ok for r in proxy.requests)
    for request in proxy.requests:
        assert f"api-key={QUERY_KEY}" in request.path and "api-version=2024-06-01" in request.path
    # ...and were written nowhere.
    (run,) = (project / "out").iterdir()
    files = every_file(run)
    assert run / "run.json" in files and run / "gpt-4o" / "manifest.json" in files
    captured = capsys.readouterr()
    assert_no_secret(*files.values(), captured.out, captured.err, caplog.text)
    assert PROXY_USER not in "".join(files.values())

    shown = public_url(secret_url(proxy))
    assert shown == f"http://***@{proxy.origin.removeprefix('http://')}/v1?api-key=***&api-version=2024-06-01"
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["models"][0]["base_url"] == shown
    manifest = json.loads((run / "gpt-4o" / "manifest.json").read_text())
    assert manifest["parameters"]["base_url"] == shown and manifest["hardware"]["api"] == shown
    record = json.loads((run / "gpt-4o" / "records" / "000003.json").read_text())
    assert "invalid request to /v1/chat/completions?api-key=***" in record["error"]
    assert "HTTP Request: POST" in caplog.text  # the HTTP library's own lines were there, scrubbed


def test_a_pod_cannot_use_credentials_that_run_json_does_not_hold(project, pubmedqa, proxy, capsys):
    questions(project, pubmedqa, 2)
    cfg = models_yaml(project, secret_url(proxy))
    plan = make_plan(parse_config(cfg.read_text(), base_dir=project))
    stage_run(plan, open_storage("out"))

    assert runner_main(["--output", "out", "--run-id", plan.run_id, "--model", "gpt-4o"]) == 2

    err = capsys.readouterr().err
    assert "held credentials" in err and "api_key_env" in err and "Traceback" not in err
    assert_no_secret(err, *every_file(project / "out").values())
    assert proxy.requests == []  # nothing sent with a URL that lost its login


def test_a_url_from_the_environment_is_scrubbed_from_the_pod_log(
        project, pubmedqa, proxy, monkeypatch, caplog):
    # OPENAI_BASE_URL (from a Kubernetes Secret, say) is read in the pod, never staged.
    qs = questions(project, pubmedqa, 3)
    monkeypatch.setenv("OPENAI_BASE_URL", secret_url(proxy))
    cfg = models_yaml(project, None)
    plan = make_plan(parse_config(cfg.read_text(), base_dir=project))
    stage_run(plan, open_storage("out"))

    with caplog.at_level(logging.INFO):  # the pod logs at INFO, HTTP requests included
        assert runner_main(["--output", "out", "--run-id", plan.run_id, "--model", "gpt-4o"]) == 0

    folder = project / "out" / plan.run_id / "gpt-4o"
    assert qs[0]["question"] in (folder / "1.txt").read_text()
    log = (folder / "runner.log").read_text()
    assert "HTTP Request: POST" in log and "api-key=***" in log
    assert_no_secret(log, *every_file(project / "out").values(), caplog.text)


@pytest.mark.parametrize("url, shown", [
    ("https://user:pw@proxy.example:8443/v1?key=abc#top", "https://***@proxy.example:8443/v1?key=***"),
    ("http://[::1]:8000/v1?alt=sse&token=t0ken-value-123", "http://[::1]:8000/v1?alt=sse&token=***"),
    ("http://gpu-box:8000/v1?sk-0123456789abcdefghij", "http://gpu-box:8000/v1"),  # a bare key: dropped
    ("http://gpu-box:8000/v1", "http://gpu-box:8000/v1"),
    ("localhost:8000/v1", "localhost:8000/v1"),
    ("http://[::1", "(a URL that cannot be parsed)"),
])
def test_public_url_keeps_what_is_harmless_and_masks_the_rest(url, shown):
    assert public_url(url) == shown
    assert public_url(shown) == shown  # read back from run.json, it records the same
