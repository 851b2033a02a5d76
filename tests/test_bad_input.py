"""A new user's mistakes, and a hostile world, in one battery.

Every case is something a person could really type, receive from a server, or find in a
bucket. Whatever the case, medbench answers as DESIGN.md promises:

- bad input (questions, models.yaml, arguments, environment): exit 2 and one line on stderr
  saying what and where, and nothing written or staged anywhere;
- a failure outside the user's control (a server that misbehaves, a store that is down):
  exit 1 and at most one line on stderr;
- never a traceback, never a write outside the output (or ``--dest``) folder.

``Case.fixed_by`` names the item of issue 11 whose fix a case waits for, where that is
another change than the one that wrote this battery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher.cli import main as launcher_main
from runner.main import main as runner_main
from tests.conftest import write
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.fakes.s3 import FAKE_ENV, free_port, moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

KEY = "sk-battery-key"
PROXY_PASSWORD = "pw-proxy-0123456789"  # must never be printed or written anywhere
GOOD_QUESTIONS = ('{"id": "her2", "question": "What does HER2 amplification predict?"}\n'
                  '{"id": "tam", "question": "How does tamoxifen work?"}\n')
ECHO = "  - id: echo-a\n    backend: echo\n"


class Ctx:
    """What a case sets up: files in the project folder, a fake server, a bucket."""

    def __init__(self, project: Path, request, monkeypatch):
        self.project, self.request, self.monkeypatch = project, request, monkeypatch
        self.servers: list[FakeOpenAI] = []
        self._s3 = None

    # --- files ---------------------------------------------------------------------------

    def questions(self, text: str | bytes = GOOD_QUESTIONS, name: str = "questions.jsonl") -> None:
        path = self.project / name
        path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)

    def config(self, models: str = ECHO, top: str = "", output: str = "out", name: str = "battery") -> str:
        if not (self.project / "questions.jsonl").exists():
            self.questions()
        write(self.project / "models.yaml",
              f"name: {name}\nquestions: questions.jsonl\noutput: {output}\nsystem_prompt: none\n{top}\n"
              f"models:\n{models}")
        return "models.yaml"

    def env(self, name: str, value: str) -> None:
        self.monkeypatch.setenv(name, value)

    # --- runs that already exist -------------------------------------------------------------

    def local_run(self) -> str:
        """A finished local run in ./out; its run id."""
        self.config()
        assert launcher_main(["run", "models.yaml"]) == 0
        (run,) = (self.project / "out").iterdir()
        return run.name

    @property
    def s3(self):
        if self._s3 is None:
            self._s3 = self.request.getfixturevalue("s3")
        return self._s3

    def s3_run(self) -> str:
        """A finished run in the bucket (under runs/); its run id."""
        self.config(output=self.s3.url(), top=f"cluster: {{s3_endpoint: '{self.s3.endpoint}'}}")
        assert launcher_main(["run", "models.yaml"]) == 0
        return {k.split("/")[1] for k in self.s3.keys("runs/")}.pop()

    def put(self, key: str, body: bytes) -> None:
        self.s3.client.put_object(Bucket=self.s3.bucket, Key=key, Body=body)

    def collect_s3(self, run_id: str, *extra: str) -> list[str]:
        return ["launcher", "collect", run_id, "--from", self.s3.url(), "--endpoint", self.s3.endpoint,
                "--dest", "col", *extra]

    # --- an API model behind a misbehaving server ----------------------------------------

    def api_model(self, fault: Fault | None, *, login: tuple[str, str] | None = None, **keys: object) -> str:
        """An OpenAI model whose server answers every request with ``fault`` (None: well).

        ``login``: the server sits behind a proxy with a login of its own, which the user
        puts in base_url as ``user:password@``.
        """
        server = FakeOpenAI(key=KEY).start()
        self.servers.append(server)
        if fault is not None:
            server.every(1, fault)
        url = server.url
        if login is not None:
            server.basic_auth = login
            url = url.replace("http://", f"http://{login[0]}:{login[1]}@")
        self.env("OPENAI_API_KEY", KEY)
        extra = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in keys.items())
        return self.config(models=f"  - id: gpt-4o\n    backend: openai\n    base_url: {url}\n{extra}")

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@dataclass
class Case:
    id: str
    setup: Callable[[Ctx], list[str]]  # makes the inputs; returns ["launcher"|"runner", *args]
    code: int
    says: str  # in what the command printed (stderr, or stdout for a failed model's summary)
    writes: tuple[str, ...] = ()  # folders (under the project) an exit 0 or 1 may write to
    fixed_by: str = ""
    subprocess: bool = False  # run in a child with a time limit (a case that could hang)
    then: Callable[[Path], None] | None = None  # what else must hold afterwards


def q(text: str | bytes) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        ctx.questions(text)
        return ["launcher", "run", ctx.config()]
    return setup


def questions_folder(ctx: Ctx) -> list[str]:
    (ctx.project / "qdir").mkdir()
    write(ctx.project / "models.yaml", f"questions: qdir\noutput: out\nmodels:\n{ECHO}")
    return ["launcher", "run", "models.yaml"]


def model(models: str, *argv: str, top: str = "", command: str = "run") -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        return ["launcher", command, ctx.config(models=models, top=top), *argv]
    return setup


def output(value: str, *argv: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        return ["launcher", "run", ctx.config(output=value), *argv]
    return setup


def run_args(*argv: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        return ["launcher", "run", ctx.config(), *argv]
    return setup


def output_is_a_file(ctx: Ctx) -> list[str]:
    (ctx.project / "out").write_text("my notes, not a folder")
    return ["launcher", "run", ctx.config()]


def long_run_name(ctx: Ctx) -> list[str]:
    return ["launcher", "run", ctx.config(name="n" * 250)]


def show(n: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        return ["launcher", "show", f"out/{ctx.local_run()}", n]
    return setup


def collect_into_a_file(ctx: Ctx) -> list[str]:
    run_id = ctx.local_run()
    (ctx.project / "col").write_text("a file, not a folder")
    return ["launcher", "collect", run_id, "--from", "out", "--dest", "col"]


def collect_onto_a_file_where_a_folder_goes(ctx: Ctx) -> list[str]:
    run_id = ctx.local_run()
    (ctx.project / "col" / run_id).mkdir(parents=True)
    (ctx.project / "col" / run_id / "echo-a").write_text("a file where the model's folder goes")
    return ["launcher", "collect", run_id, "--from", "out", "--dest", "col"]


def status_from(url: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["launcher", "status", "battery-0000000000", "--from", url]


def collect_from(url: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["launcher", "collect", "battery-0000000000", "--from", url]


def lease_seconds(ctx: Ctx) -> list[str]:
    ctx.env("MEDBENCH_LEASE_SECONDS", "soon")
    return ["launcher", "run", ctx.config()]


def pod_env(name: str, value: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        argv = pod()(ctx)
        ctx.env(name, value)
        return argv
    return setup


def s3_env(name: str, value: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        for var, set_to in FAKE_ENV.items():
            ctx.env(var, set_to)
        ctx.env(name, value)
        return ["launcher", "status", "battery-0000000000", "--from", "s3://medbench/runs",
                "--endpoint", f"http://127.0.0.1:{free_port()}"]
    return setup


def pod(**flags: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        run_id = ctx.local_run()
        args = {"--output": "out", "--run-id": run_id, "--model": "echo-a", **flags}
        return ["runner", *[x for kv in args.items() for x in kv]]
    return setup


def server(fault: Fault, **keys: object) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["launcher", "run", ctx.api_model(fault, max_retries=1, **keys)]


def bucket_key_climbing_out(ctx: Ctx) -> list[str]:
    run_id = ctx.s3_run()
    ctx.put(f"runs/{run_id}/../../escaped.txt", b"outside")
    ctx.put(f"runs/{run_id}/echo-a/../../../up.txt", b"outside")
    return ctx.collect_s3(run_id)


def bucket_key_file_and_folder(ctx: Ctx) -> list[str]:
    run_id = ctx.s3_run()
    ctx.put(f"runs/{run_id}/echo-a/1.txt/notes", b"a key below another key")
    return ctx.collect_s3(run_id)


def bucket_run_json(body: bytes) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        run_id = ctx.s3_run()
        ctx.put(f"runs/{run_id}/run.json", body)
        return ctx.collect_s3(run_id)
    return setup


def bucket_responses_junk(ctx: Ctx) -> list[str]:
    run_id = ctx.s3_run()
    ctx.put(f"runs/{run_id}/echo-a/responses.jsonl", b"\xff\xfe\x00junk")
    return ctx.collect_s3(run_id)


def the_rest_is_collected(project: Path) -> None:
    (run,) = (project / "col").iterdir()
    assert (run / "run.json").is_file() and (run / "echo-a" / "1.txt").is_file()
    assert len((run / "echo-a" / "responses.jsonl").read_text().splitlines()) == 2


def the_answer_wins(project: Path) -> None:
    """A disk cannot hold both echo-a/1.txt and echo-a/1.txt/notes: the run's answer is kept."""
    (run,) = (project / "col").iterdir()
    assert (run / "echo-a" / "1.txt").is_file() and (run / "echo-a" / "2.txt").is_file()


def staged_questions_not_utf8(ctx: Ctx) -> list[str]:
    run_id = ctx.local_run()
    (ctx.project / "out" / run_id / "questions.jsonl").write_bytes(b'{"question": "caf\xe9"}\n')
    (ctx.project / "out" / run_id / "echo-a" / "records" / "000001.json").unlink()
    return ["runner", "--output", "out", "--run-id", run_id, "--model", "echo-a"]


def dead_endpoint(ctx: Ctx) -> list[str]:
    for name, value in FAKE_ENV.items():
        ctx.env(name, value)
    ctx.env("MEDBENCH_S3_MAX_ATTEMPTS", "1")
    return ["launcher", "status", "battery-0000000000", "--from", "s3://medbench/runs",
            "--endpoint", f"http://127.0.0.1:{free_port()}"]


def credentials_in_base_url(ctx: Ctx) -> list[str]:
    """Pasted into base_url, the proxy's login is used and never printed or written."""
    return ["launcher", "run", ctx.api_model(None, login=("alice", PROXY_PASSWORD))]


def deep_yaml(ctx: Ctx) -> list[str]:
    ctx.questions()
    write(ctx.project / "models.yaml",
          "questions: questions.jsonl\nmodels: " + "[" * 50_000 + "]" * 50_000 + "\n")
    return ["launcher", "run", "models.yaml"]


def models_yaml(text: str, command: str = "run") -> Callable[[Ctx], list[str]]:
    """models.yaml exactly as written (beside the good questions file)."""
    def setup(ctx: Ctx) -> list[str]:
        ctx.questions()
        write(ctx.project / "models.yaml", text)
        return ["launcher", command, "models.yaml"]
    return setup


def billion_laughs() -> str:
    """Nine levels of ten aliases under a real key: 10**9 strings once expanded."""
    levels = ["    a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    levels += [f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "questions: questions.jsonl\noutput: out\ncluster:\n  affinity:\n" + "\n".join(levels) + \
        "\nmodels:\n" + ECHO


def template(value: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["launcher", "run", ctx.config(top=f"prompt_template: {json.dumps(value)}")]


def questions_at(name: str, make: Callable[[Path], None],
                 key: str = "questions") -> Callable[[Ctx], list[str]]:
    """models.yaml's ``key`` (questions or system_prompt) names ``name``, which ``make`` creates."""
    def setup(ctx: Ctx) -> list[str]:
        ctx.questions()
        make(ctx.project / name)
        other = "questions: questions.jsonl\n" if key != "questions" else "system_prompt: none\n"
        write(ctx.project / "models.yaml", f"{key}: {name}\n{other}output: out\nmodels:\n{ECHO}")
        return ["launcher", "run", "models.yaml"]
    return setup


def link_to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def fifo(path: Path) -> None:
    os.mkfifo(path)  # nobody ever writes to it: reading it would wait for ever


def sparse(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with path.open("wb") as f:
            f.truncate(size)  # takes no room on disk
    return make


def output_under_a_file(ctx: Ctx) -> list[str]:
    (ctx.project / "notes.txt").write_text("my notes, not a folder")
    return ["launcher", "run", ctx.config(output="notes.txt/runs")]


ITEM_4 = "issue 11 item 4 (markup in printed text)"
ITEM_2 = "issue 11 item 2 (credentials in results)"
ITEM_3 = "issue 11 item 3 (Retry-After)"
LEAD = "launcher/commands/report.py or runner/config/loading.py (listed for the lead)"

CASES = [
    # --- questions files ----------------------------------------------------------------------
    Case("questions-nested-100000-deep", q('{"question": ' + "[" * 100_000 + "]" * 100_000 + "}\n"),
         2, "questions.jsonl:1: not valid JSON: nested too deeply"),
    Case("questions-not-utf8", q(b'{"question": "caf\xe9 au lait?"}\n'), 2, "questions.jsonl: cannot read"),
    Case("questions-line-is-a-list", q('["What is HER2?"]\n'), 2,
         "questions.jsonl:1: expected a JSON object"),
    Case("questions-question-is-a-number", q('{"question": 42}\n'), 2, "questions.jsonl:1: question"),
    Case("questions-options-not-a-list", q('{"question": "x?", "options": 5}\n'), 2,
         "questions.jsonl:1: options"),
    Case("questions-answer-not-an-option", q('{"question": "x?", "options": ["a", "b"], "answer": "Z"}\n'),
         2, "neither an option letter"),
    Case("questions-last-line-cut-short", q(GOOD_QUESTIONS + '{"question": "Is it'), 2,
         "questions.jsonl:3: not valid JSON"),
    Case("questions-file-is-a-folder", questions_folder, 2, "qdir: is a folder"),
    Case("questions-id-of-5000-digits", q('{"id": ' + "9" * 5000 + ', "question": "x?"}\n'), 2,
         "questions.jsonl:1: a number longer than 4,300 digits"),
    Case("questions-option-keys-equal-once-stripped",
         q('{"question": "x?", "options": {" A": "yes", "A ": "no", "B": "maybe"}}\n'), 2,
         "questions.jsonl:1: options: option keys ' A' and 'A ' are the same letter 'A'"),
    Case("questions-meta-nan", q(GOOD_QUESTIONS + '{"question": "x?", "meta": {"score": NaN}}\n'), 2,
         "questions.jsonl:3: not valid JSON: NaN is not a JSON number (write null)"),
    Case("questions-meta-1e999999", q('{"question": "x?", "meta": {"score": 1e999999}}\n'), 2,
         "questions.jsonl:1: not valid JSON: 1e999999 is too large for a number"),
    Case("questions-dev-zero", questions_at("/dev/zero", lambda path: None), 2,
         "/dev/zero: is a device, not a regular file", subprocess=True),
    Case("questions-link-to-dev-zero", questions_at("zero.jsonl", link_to_dev_zero), 2,
         "zero.jsonl: is a device, not a regular file", subprocess=True),
    Case("questions-named-pipe", questions_at("pipe.jsonl", fifo), 2,
         "pipe.jsonl: is a named pipe, not a regular file", subprocess=True),
    Case("questions-over-500-mb", questions_at("huge.jsonl", sparse(500 * 10**6 + 1)), 2,
         "huge.jsonl: larger than 500 MB, the most read for a questions file"),
    Case("system-prompt-dev-zero", questions_at("/dev/zero", lambda path: None, key="system_prompt"), 2,
         "system_prompt: /dev/zero: is a device, not a regular file", subprocess=True),
    Case("system-prompt-over-1-mb", questions_at("prompt.txt", sparse(10**6 + 1), key="system_prompt"), 2,
         "prompt.txt: larger than 1 MB, the most read for a system_prompt file"),
    # --- models.yaml ---------------------------------------------------------------------------
    Case("yaml-nested-50000-deep", deep_yaml, 2, "models.yaml", fixed_by=LEAD),
    Case("yaml-billion-laughs", models_yaml(billion_laughs()), 2,
         "models.yaml:9: this value expands to more than 100,000 values", subprocess=True),
    Case("yaml-alias-inside-itself", models_yaml("questions: questions.jsonl\nmodels: &m [*m]\n"), 2,
         "models.yaml:2: a YAML alias refers to the value that contains it"),
    Case("yaml-two-models-keys", models_yaml(f"questions: questions.jsonl\noutput: out\nmodels:\n{ECHO}"
                                             "models:\n  - id: echo-b\n    backend: echo\n"), 2,
         "models.yaml:6: duplicate key 'models' (first on line 3)"),
    Case("yaml-two-batch-size-keys",
         model("  - id: sshleifer/tiny-gpt2\n    batch_size: 8\n    batch_size: 2\n"), 2,
         "models.yaml:9: duplicate key 'batch_size' (first on line 8)"),
    Case("yaml-max-new-tokens-of-5000-digits",
         models_yaml(f"questions: questions.jsonl\ngeneration:\n  max_new_tokens: {'9' * 5000}\n"
                     f"models:\n{ECHO}"), 2,
         "models.yaml:3: a number 5,000 digits long; expected at most 4,300 digits"),
    Case("yaml-gpu-hour-price-infinite", model(ECHO, top="cluster: {gpu_hour_price: .inf}"), 2,
         "models.yaml:5: cluster.gpu_hour_price: Input should be a finite number"),
    Case("template-format-spec-d", template("Q: {question:d}"), 2,
         "prompt_template: {question:d} has a conversion or format spec"),
    Case("template-conversion-z", template("Q: {question!z}"), 2,
         "prompt_template: {question!z} has a conversion or format spec"),
    Case("template-nested-field", template("Q: {question:{context}}"), 2,
         "prompt_template: {question:{context}} has a conversion or format spec"),
    Case("template-3-gigabytes-of-padding", template("Q: {question:>3000000000}"), 2,
         "prompt_template: {question:>3000000000} has a conversion or format spec", subprocess=True),
    Case("template-file-missing", template("prompts/mcq.txt"), 2,
         "prompt_template: no file prompts/mcq.txt; a template written inline must contain {question}"),
    Case("template-file-dev-zero", template("/dev/zero"), 2,
         "prompt_template: /dev/zero: is a device, not a regular file", subprocess=True),
    Case("model-id-dot", model('  - id: "."\n    backend: echo\n'), 2, "models[0].id: id must not be '.'"),
    Case("model-name-dot", model('  - id: echo-a\n    name: "."\n    backend: echo\n'), 2,
         "models[0].name: name must not be '.'"),
    Case("model-named-records", model("  - id: echo-a\n    name: records\n    backend: echo\n"), 2,
         "its folder 'records' is a name the run layout uses"),
    Case("model-named-leases", model("  - id: leases\n    backend: echo\n"), 2,
         "its folder 'leases' is a name the run layout uses"),
    Case("model-id-300-characters", model(f"  - id: org/{'m' * 296}\n    backend: echo\n"), 2,
         "models[0].id: id is 300 bytes long; at most 200"),
    Case("model-ids-differ-only-in-case", model("  - id: Echo-A\n    backend: echo\n" + ECHO), 2,
         "would both write to"),
    Case("model-id-with-backslash", model('  - id: "org\\\\model"\n    backend: echo\n'), 2,
         "models[0].id: id must not contain '\\'"),
    Case("run-name-250-characters", long_run_name, 2, "name is 250 characters long; at most 189"),
    Case("output-gs-url", output("gs://medbench/runs"), 2, "unsupported scheme"),
    Case("output-s3-without-bucket", output("s3:///runs"), 2, "expected s3://bucket/prefix"),
    Case("output-s3-prefix-climbs-out", output("s3://medbench/../runs"), 2, "'..'"),
    Case("output-is-a-file", output_is_a_file, 2, "out: is a file; expected a folder"),
    Case("output-empty", output('""'), 2, "output: must not be empty"),
    Case("output-under-a-file", output_under_a_file, 2,
         "output notes.txt/runs: notes.txt is a file; expected a folder"),
    Case("model-names-nfc-and-nfd",
         model("  - id: caf\u00e9\n    backend: echo\n  - id: cafe\u0301\n    backend: echo\n"), 2,
         "'cafe\\u0301' and 'caf\\xe9' differ only in how a letter is encoded"),
    Case("api-key-env-is-ours", model("  - id: gpt-4o\n    backend: openai\n"
                                      "    api_key_env: AWS_SECRET_ACCESS_KEY\n"), 2, "api_key_env"),
    Case("api-key-env-not-a-name", model('  - id: gpt-4o\n    backend: openai\n    api_key_env: "my key"\n'),
         2, "api_key_env"),
    Case("namespace-not-a-dns-label", model(ECHO, top="cluster: {namespace: Bad_NS}", command="render"), 2,
         "namespace"),
    Case("queue-not-a-name", model(ECHO, top="cluster: {queue: 'Queue!'}", command="render"), 2, "queue"),
    Case("credentials-in-base-url", credentials_in_base_url, 0, "complete", writes=("out",), fixed_by=ITEM_2),
    Case("markup-in-a-model-id", model('  - id: "org/[/]echo[bold]"\n    backend: echo\n'), 0,
         "org_[_]echo[bold]", writes=("out",), fixed_by=ITEM_4),
    # --- command-line arguments --------------------------------------------------------------
    Case("run-id-dot", run_args("--run-id", "."), 2, "--run-id must not be '.'"),
    Case("run-id-300-characters", run_args("--run-id", "r" * 300), 2, "--run-id is 300 bytes long"),
    Case("run-id-a-layout-name", run_args("--run-id", "leases"), 2, "is a name the run layout uses"),
    Case("run-output-flag-gs", run_args("--output", "gs://medbench/runs"), 2, "unsupported scheme"),
    Case("run-output-flag-climbs-out", run_args("--output", "s3://medbench/../runs"), 2, "'.' or '..'"),
    Case("show-superscript-two", show("²"), 2, "question '²'", fixed_by=LEAD),
    Case("show-no-such-folder", lambda ctx: ["launcher", "show", "nowhere", "1"], 2, "nowhere"),
    Case("collect-dest-is-a-file", collect_into_a_file, 2, "--dest col: is a file"),
    Case("collect-file-where-a-folder-goes", collect_onto_a_file_where_a_folder_goes, 2,
         "is a file where the run has a folder"),
    Case("status-from-gs", status_from("gs://medbench/runs"), 2, "unsupported scheme"),
    Case("collect-from-s3-without-bucket", collect_from("s3:///runs"), 2, "missing bucket name"),
    Case("lease-seconds-not-a-number", lease_seconds, 2, "MEDBENCH_LEASE_SECONDS='soon'"),
    # --- numbers in the environment: one parser (runner.env), one message -------------------------
    Case("env-s3-max-attempts-not-a-number", s3_env("MEDBENCH_S3_MAX_ATTEMPTS", "many"), 2,
         "MEDBENCH_S3_MAX_ATTEMPTS='many': expected a whole number of at least 1"),
    Case("env-s3-max-attempts-zero", s3_env("MEDBENCH_S3_MAX_ATTEMPTS", "0"), 2,
         "MEDBENCH_S3_MAX_ATTEMPTS='0': expected a whole number of at least 1"),
    Case("env-log-interval-not-a-number", pod_env("MEDBENCH_LOG_INTERVAL", "soon"), 2,
         "MEDBENCH_LOG_INTERVAL='soon': expected a number of seconds above 0"),
    Case("env-log-interval-infinite", pod_env("MEDBENCH_LOG_INTERVAL", "inf"), 2,
         "MEDBENCH_LOG_INTERVAL='inf': expected a number of seconds above 0"),
    Case("env-lease-seconds-zero", pod_env("MEDBENCH_LEASE_SECONDS", "0"), 2,
         "MEDBENCH_LEASE_SECONDS='0': expected a number of seconds above 0"),
    Case("env-shards-not-a-number", pod_env("MEDBENCH_SHARDS", "two"), 2,
         "shards (MEDBENCH_SHARDS)='two': expected a whole number of at least 1"),
    Case("env-job-completion-index-negative", pod_env("JOB_COMPLETION_INDEX", "-1"), 2,
         "shard (JOB_COMPLETION_INDEX)='-1': expected a whole number of at least 0"),
    Case("pod-run-id-dot", pod(**{"--run-id": "."}), 2, "run id must not be '.'"),
    Case("pod-model-300-characters", pod(**{"--model": "m" * 300}), 2, "model is 300 bytes long"),
    # --- server responses ----------------------------------------------------------------
    Case("server-answers-garbage", server(Fault.malformed()), 1, "failed", writes=("out",)),
    Case("server-error-body-with-markup",
         server(Fault.status_code(400, {"error": {"message": "bad [/] request [bold]x", "type": "invalid"}})),
         1, "2 of 2 questions failed", writes=("out",), fixed_by=ITEM_4),
    Case("server-rejects-the-key", server(Fault.status_code(401, {"error": {"message": "Incorrect API key",
                                                                             "code": "invalid_api_key"}})),
         1, "rejected the API key", writes=("out",)),
    Case("server-retry-after-an-hour",
         server(Fault.rate_limit(retry_after=3600), max_wait=1, timeout=10), 1, "failed",
         writes=("out",), fixed_by=ITEM_3, subprocess=True),
    Case("s3-endpoint-down", dead_endpoint, 1, "cannot reach S3 endpoint"),
    # --- what is in the bucket -------------------------------------------------------------------
    Case("bucket-key-climbs-out", bucket_key_climbing_out, 0, "/../../escaped.txt': it has no safe place",
         writes=("col",), then=the_rest_is_collected),
    Case("bucket-key-is-file-and-folder", bucket_key_file_and_folder, 0, "echo-a/1.txt'", writes=("col",),
         then=the_answer_wins),
    Case("bucket-run-json-garbage", bucket_run_json(b"<html>502 Bad Gateway</html>"), 2,
         "not a valid run description"),
    Case("bucket-run-json-from-the-future",
         bucket_run_json(json.dumps({"schema_version": 99, "run_id": "x", "name": "x", "created_at": "",
                                     "config": {}, "questions_sha256": "", "n_questions": 0}).encode()),
         2, "newer medbench"),
    Case("bucket-responses-junk", bucket_responses_junk, 0, "assembled responses.jsonl", writes=("col",),
         then=the_rest_is_collected),
    Case("staged-questions-not-utf8", staged_questions_not_utf8, 2, "questions.jsonl"),
]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if not p.is_dir()}


def folders(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}


def run_case(argv: list[str], in_child: bool, project: Path, capsys) -> tuple[int, str, str]:
    if in_child:
        module = "launcher.cli" if argv[0] == "launcher" else "runner.main"
        try:
            proc = subprocess.run([sys.executable, "-m", module, *argv[1:]], cwd=project, capture_output=True,
                                  text=True, timeout=120, env=dict(os.environ))
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{argv}: still running after {e.timeout} s") from None
        return proc.returncode, proc.stdout, proc.stderr
    entry = launcher_main if argv[0] == "launcher" else runner_main
    code = entry(argv[1:])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_line_and_the_right_exit_status(case: Case, project, request, monkeypatch, capsys):
    ctx = Ctx(project, request, monkeypatch)
    try:
        argv = case.setup(ctx)
        capsys.readouterr()
        before, before_dirs = tree(project), folders(project)
        outside = sorted(p.name for p in project.parent.iterdir())
        bucket = ctx.s3.keys() if ctx._s3 is not None else None

        code, out, err = run_case(argv, case.subprocess, project, capsys)
    finally:
        ctx.close()

    said = err + out
    assert "Traceback" not in said, said
    assert code == case.code, f"exit {code}, expected {case.code}: {said}"
    assert case.says in said, f"{case.says!r} not in {said!r}"
    lines = [line for line in err.splitlines() if line.strip()]
    if case.code == 2:
        assert len(lines) == 1, lines
    elif case.code == 1:  # a failed model's log warnings may come first; one error line at most
        assert len([line for line in lines if not line.startswith("WARNING")]) <= 1, lines
    assert PROXY_PASSWORD not in said
    assert sorted(p.name for p in project.parent.iterdir()) == outside  # nothing beside the project
    after, after_dirs = tree(project), folders(project)
    if case.code == 2:  # nothing written, not even an empty folder
        assert after == before and after_dirs == before_dirs
        if bucket is not None:
            assert ctx.s3.keys() == bucket
    else:
        changed = {k for k in after.keys() | before.keys() if after.get(k) != before.get(k)}
        changed |= after_dirs ^ before_dirs
        stray = {k for k in changed if not any(k == w or k.startswith(w + "/") for w in case.writes)}
        assert not stray, f"written outside {case.writes}: {sorted(stray)}"
        for name in changed & after.keys():
            assert PROXY_PASSWORD not in (project / name).read_text(errors="replace"), name
    if case.then is not None:
        case.then(project)
