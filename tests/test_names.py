"""Ids, names and run ids become folder names: the ones that would escape or collide are
refused (one line, exit 2), and every ordinary one still works.

Refused: ``.`` (it names the folder above), a name the run layout uses itself (``records``,
``leases``, ``run.json``...), two models whose folders differ only in case (one folder on
macOS and Windows), and anything over 200 bytes. The bad-input battery (test_bad_input.py)
runs each through the CLI; here the boundaries.
"""

from __future__ import annotations

import pytest

from runner.artefacts.keys import RESERVED_NAMES
from runner.config import check_run_id, parse_config
from runner.errors import ConfigError
from tests.conftest import run_cli, write


def config(model: str, name: str = "panel") -> str:
    return f"name: {name}\nquestions: q.jsonl\nmodels:\n  - {model}\n    backend: echo\n"


@pytest.mark.parametrize("model, folder", [
    ("id: google/medgemma-27b-text-it", "google_medgemma-27b-text-it"),
    ("id: org/model.v1.5", "org_model.v1.5"),
    ("id: org/a..b", "org_a..b"),  # dots inside a name are not a path part
    ("id: .hidden-model", ".hidden-model"),
    ("id: org/records", "org_records"),  # only the whole folder name is reserved
    ("id: records\n    name: records-v2", "records-v2"),  # a name gets a reserved id out of the way
    ("id: Модель-ε/μ", "Модель-ε_μ"),
    (f"id: org/{'m' * 196}", f"org_{'m' * 196}"),  # exactly 200 bytes
    (f"id: {'é' * 100}", "é" * 100),  # 200 bytes of UTF-8
    ("id: 'org/[/]model'", "org_[_]model"),
])
def test_ordinary_names_are_accepted(model, folder):
    assert parse_config(config(model)).models[0].model_dir == folder


@pytest.mark.parametrize("model, expected", [
    ('id: "."', "models[0].id: id must not be '.'"),
    ("id: org/./model", "models[0].id: id must not be '.'"),
    ('id: echo\n    name: "."', "models[0].name: name must not be '.'"),
    (f"id: org/{'m' * 197}", "models[0].id: id is 201 bytes long; at most 200"),
    (f"id: {'é' * 101}", "models[0].id: id is 202 bytes long; at most 200"),
    ("id: echo\n    name: Leases", "its folder 'Leases' is a name the run layout uses"),
    ('id: "org\\\\model"', "models[0].id: id must not contain '\\'"),
])
def test_names_that_escape_or_collide_are_refused(model, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(config(model))
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("reserved", sorted(RESERVED_NAMES))
def test_every_name_the_layout_uses_is_refused_as_a_folder(reserved):
    with pytest.raises(ConfigError, match=f"its folder '{reserved}' is a name the run layout uses"):
        parse_config(config(f'id: echo\n    name: "{reserved}"'))


def test_two_folders_that_differ_only_in_case_are_refused():
    with pytest.raises(ConfigError, match="would both write to 'echo'"):
        parse_config(config("id: Echo\n    backend: echo\n  - id: echo"))


def test_a_run_name_leaves_room_for_the_run_id():
    assert parse_config(config("id: echo", name="n" * 189)).name == "n" * 189
    with pytest.raises(ConfigError, match="name is 190 characters long; at most 189"):
        parse_config(config("id: echo", name="n" * 190))


@pytest.mark.parametrize("run_id, ok", [
    ("panel-3f2a9c1d07", True), ("r" * 200, True), (".", False), ("..", False), ("r" * 201, False),
    ("leases", False), ("a/b", False), ("", False),
])
def test_run_ids(run_id, ok):
    if ok:
        assert check_run_id(run_id) == run_id
    else:
        with pytest.raises(ValueError):
            check_run_id(run_id)


@pytest.mark.parametrize("command", [["status", "."], ["collect", "."], ["status", "x" * 300]])
def test_status_and_collect_refuse_a_run_id_that_names_no_run_folder(project, capsys, command):
    write(project / "results" / "keep.txt", "x")
    assert run_cli(*command) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run id ") and err.count("\n") == 1
    assert [p.name for p in (project / "results").iterdir()] == ["keep.txt"]
