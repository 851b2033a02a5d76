"""API runner throughput: sequential vs concurrent, and whether requests_per_minute holds.

A loopback OpenAI-compatible server answers every request in 250 ms; it runs in a process of
its own, as a real API does, so its threads do not share the runner's interpreter lock. The
full runner path is measured (real openai SDK, api_runner, ModelRun writing N.txt and records
to a temporary folder):

1. 200 questions with ``concurrency: 1`` (sequential) and with ``concurrency: 32``;
   target: concurrency 32 at least 20x faster;
2. ``requests_per_minute: 600`` with ``concurrency: 32`` over a shorter window (80
   requests by default): the rate the server saw must stay at or under 600 a minute.

The questions default to the PubMedQA sample shipped in questions/ (50 items); a file with
fewer than ``--n`` questions is repeated to ``--n`` (only the number of requests matters here).

    .venv/bin/python bench/bench_api.py [--questions PATH] [--n 200] [--rpm-n 80]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.fakes when run as a script

from runner.artefacts.stored import stage_run  # noqa: E402
from runner.config import parse_config  # noqa: E402
from runner.engine.model_run import ModelRun  # noqa: E402
from runner.plan import make_plan  # noqa: E402
from runner.questions import Question, load_questions  # noqa: E402
from runner.storage import LocalStorage  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI, Fault  # noqa: E402

KEY = "sk-bench-0123456789"
SAMPLE = REPO / "questions" / "pubmedqa_sample.jsonl"
LATENCY = 0.25


def _fault(spec: tuple) -> Fault:
    """A fault from a picklable spec: ("429", retry_after_seconds) or ("500",)."""
    return Fault.rate_limit(retry_after=spec[1]) if spec[0] == "429" else Fault.server_error(int(spec[0]))


def _serve(conn, latency: float, every: list[tuple[int, tuple]], in_flight: tuple[int, tuple] | None) -> None:
    """Child process: the fake server, answering "starts", "refused", "clear" and "stop" over a pipe.

    ``every``: (n, fault spec) pairs, every n-th request answered with that fault;
    ``in_flight``: (n, fault spec), the fault for any request beyond n being answered at once.
    """
    with FakeOpenAI(key=KEY, latency=latency) as server:
        for n, spec in every:
            server.every(n, _fault(spec))
        if in_flight is not None:
            server.limit_in_flight(in_flight[0], _fault(in_flight[1]))
        conn.send(server.url)
        while True:
            cmd = conn.recv()
            if cmd == "starts":
                conn.send([r.at for r in server.requests])
            elif cmd == "refused":
                conn.send(server.refused_in_flight)
            elif cmd == "clear":
                server.requests.clear()
                conn.send(None)
            else:
                return


class RemoteServer:
    def __init__(self, latency: float, *, every: list[tuple[int, tuple]] | None = None,
                 in_flight: tuple[int, tuple] | None = None):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, latency, every or [], in_flight), daemon=True)

    def __enter__(self) -> RemoteServer:
        self.proc.start()
        self.url = self.conn.recv()
        return self

    def ask(self, cmd: str):
        self.conn.send(cmd)
        return self.conn.recv()

    def __exit__(self, *exc) -> None:
        self.conn.send("stop")
        self.proc.join(timeout=10)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def first_n(questions: Path, n: int) -> list[Question]:
    """The file's first ``n`` questions, the file repeated if shorter: a repeat gets a fresh id
    and position, and a mark in its text, so that every prompt (and so every answer) differs."""
    base = load_questions(questions)
    out = []
    for i in range(n):
        q, lap = base[i % len(base)], i // len(base)
        update: dict[str, object] = {"index": i + 1}
        if lap:
            update |= {"id": f"{q.id}~{lap}", "question": f"{q.question} (repeat {lap})"}
        out.append(q.model_copy(update=update))
    return out


def run_model(url: str, questions: Path, n: int, check: Callable[[Path], None] | None = None,
              **model: object) -> tuple[float, float]:
    """One model over the first ``n`` questions: wall seconds and this process's CPU seconds.

    ``check`` is handed the model's folder before it is deleted.
    """
    keys = "".join(f"\n    {k}: {json.dumps(v)}" for k, v in model.items())
    text = (f"name: bench\nquestions: {questions}\noutput: unused\n"
            f"generation: {{max_new_tokens: 64}}\n"
            f"models:\n  - id: gpt-4o\n    backend: openai\n    base_url: {url}{keys}\n")
    cfg = parse_config(text)
    qs = first_n(questions, n)
    plan = make_plan(cfg, questions=qs)
    with tempfile.TemporaryDirectory() as tmp:
        storage = LocalStorage(tmp)
        stage_run(plan, storage)
        t, cpu = time.perf_counter(), cpu_seconds()
        manifest = ModelRun(plan, plan.tasks[0], storage).run()
        wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu
        if check is not None:
            check(Path(tmp) / plan.run_id / plan.tasks[0].model_dir)
    if manifest.status != "complete":
        raise SystemExit(f"bench run failed: {manifest.error}")
    return wall, cpu


def rate_per_minute(starts: list[float]) -> float:
    """Requests a minute over the window from the first request to the last."""
    starts = sorted(starts)
    return (len(starts) - 1) / (starts[-1] - starts[0]) * 60.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=Path, default=SAMPLE)
    ap.add_argument("--n", type=int, default=200, help="questions for the concurrency comparison")
    ap.add_argument("--rpm-n", type=int, default=80, help="requests for the rate-limit check")
    args = ap.parse_args()
    os.environ["OPENAI_API_KEY"] = KEY

    in_file = len(load_questions(args.questions))
    repeated = f" (the file's {in_file}, repeated)" if in_file < args.n else ""
    print(f"loopback server latency {LATENCY * 1000:.0f} ms; "
          f"{args.n} questions from {args.questions}{repeated}")
    with RemoteServer(LATENCY) as server:
        seq, cpu1 = run_model(server.url, args.questions, args.n, concurrency=1)
        print(f"concurrency  1: {seq:7.2f} s  {args.n / seq:6.2f} answers/s  (runner CPU {cpu1:.2f} s)")
        conc, cpu32 = run_model(server.url, args.questions, args.n, concurrency=32)
        print(f"concurrency 32: {conc:7.2f} s  {args.n / conc:6.2f} answers/s  (runner CPU {cpu32:.2f} s)")
        # 200 questions at 32 in flight take ceil(200 / 32) = 7 rounds of 250 ms at best.
        floor = math.ceil(args.n / 32) * LATENCY
        print(f"speed-up: {seq / conc:.1f}x (target >= 20x; best possible {args.n * LATENCY / floor:.1f}x: "
              f"{math.ceil(args.n / 32)} rounds of {LATENCY * 1000:.0f} ms = {floor:.2f} s)")

        server.ask("clear")
        t, _ = run_model(server.url, args.questions, args.rpm_n, concurrency=32, requests_per_minute=600)
        starts = server.ask("starts")
        rate = rate_per_minute(starts)
        gaps = [b - a for a, b in zip(sorted(starts), sorted(starts)[1:], strict=False)]
        print(f"requests_per_minute 600, concurrency 32, {args.rpm_n} requests: {t:.2f} s; "
              f"measured {rate:.1f}/min ({rate / 600:.3f} of the limit); "
              f"smallest gap between requests {min(gaps) * 1000:.1f} ms (limit spacing 100 ms)")
        ok = seq / conc >= 20 and rate <= 600
    print("PASS" if ok else "MISS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
