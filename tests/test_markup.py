"""Text that is not ours is printed as written: ``[/]`` and ``[bold]`` are not rich markup.

A server's error, a model's name, a folder, a question id: any of them may hold square
brackets. ``launcher run`` and ``launcher collect`` print them verbatim, and neither their
summary nor their progress line ends in a MarkupError.
"""

from __future__ import annotations

import io
import json

from rich.console import Console
from rich.progress import Progress

from launcher.local import RichProgress, progress_columns
from runner.config import parse_config
from runner.engine import concurrent_driver as api_runner
from runner.plan import make_plan
from tests.conftest import run_cli, write
from tests.fakes.openai_server import FakeOpenAI, Fault

KEY = "sk-markup-0123456789abcdef"
SERVER_SAYS = "no access to [/]gpt-4o [bold]for this project[/bold] [red]"
QUESTIONS = [
    {"id": "q[/]1", "question": "Is [bold] metformin first-line\u2028in type 2 diabetes?"},
    {"id": "q2", "question": "Does aspirin [/] reduce\u2029stroke risk?"},
]


def _questions(project) -> None:
    (project / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")


def test_launcher_run_prints_server_text_names_and_folders_as_written(project, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setattr(api_runner, "DEFAULT_POLICY", api_runner.RetryPolicy(base_delay=0.01, max_delay=0.05))
    _questions(project)
    with FakeOpenAI(key=KEY) as server:
        server.enqueue(Fault.status_code(403, {"error": {"message": SERVER_SAYS, "type": "permission"}}))
        cfg = write(project / "models.yaml", f"""
            name: markup
            questions: q.jsonl
            output: "out[/]runs"
            models:
              - id: echo-model
                name: "[bold]echo"
                backend: echo
              - id: gpt-4o
                name: "gpt[red]"
                backend: openai
                base_url: {server.url}
                concurrency: 1
            """)

        assert run_cli("run", cfg) == 1  # the API model was refused

    out = " ".join(capsys.readouterr().out.split())  # long lines wrap at the console's width
    assert "Traceback" not in out
    assert "[bold]echo" in out and "gpt[red]" in out  # the summary's names, as written
    assert SERVER_SAYS in out  # the refusal, quoted exactly
    assert "out[/]runs/markup-" in out  # the start line and the next-step line
    assert (project / "out[" / "]runs").is_dir()


def test_launcher_collect_prints_folders_as_written(project, capsys):
    _questions(project)
    cfg = write(project / "models.yaml", """
        name: markup
        questions: q.jsonl
        output: out
        models:
          - id: echo-model
            backend: echo
        """)
    assert run_cli("run", cfg) == 0
    run_id = make_plan(parse_config(cfg.read_text(), base_dir=project)).run_id
    capsys.readouterr()

    assert run_cli("collect", run_id, "--from", "out", "--dest", "copy[/]here[bold]") == 0

    out = " ".join(capsys.readouterr().out.split())
    assert f"into copy[/]here[bold]/{run_id}" in out and f"launcher report copy[/]here[bold]/{run_id}" in out
    assert (project / "copy[" / "]here[bold]" / run_id / "echo-model" / "1.txt").is_file()


def test_the_progress_line_shows_what_a_model_waits_for_as_written(project):
    _questions(project)
    cfg = write(project / "models.yaml", """
        name: markup
        questions: q.jsonl
        models:
          - id: echo-model
            name: "[bold]echo"
            backend: echo
        """)
    task = make_plan(parse_config(cfg.read_text(), base_dir=project)).tasks[0]
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=False, color_system=None)
    progress = Progress(*progress_columns(), console=console)
    hooks = RichProgress(progress)

    hooks.start(task, total=2, done=0)
    hooks.note("question q[/]1: rate limit, retry 1/5 in 120s (the server asked for 3600s; max_wait is 120s)")
    console.print(progress.get_renderable())
    hooks.note("")
    console.print(progress.get_renderable())

    first, second = buffer.getvalue().splitlines()[:2]
    assert "[bold]echo" in first and "question q[/]1: rate limit, retry 1/5 in 120s" in first
    assert "[bold]echo" in second and "rate limit" not in second  # the wait is over
