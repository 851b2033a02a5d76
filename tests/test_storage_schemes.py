"""One registry of storage schemes: every output goes through one URL rule, and a new scheme is
one module and one registry entry (docs/development.md, "Adding a storage scheme").

The proof of the second: ``mem://`` below is a whole scheme written here, in the test, as a
user adding gs:// would write theirs: a ``Storage`` class and a ``Scheme`` entry in ``SCHEMES``.
``launcher run``, ``render``, ``status`` and ``collect`` then work on it without any other
module knowing it exists.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from runner.config import parse_config
from runner.errors import ConfigError, StorageNotFound, StorageURLError
from runner.storage import SCHEMES, PodAccess, Scheme, Storage, open_storage, scheme_of
from tests.conftest import run_cli, write

# --- the throwaway scheme: one module (this class) and one entry (MEM) -------------------------

#: Every bucket of every MemoryStorage, by name: "the server" the stores talk to.
BUCKETS: dict[str, dict[str, bytes]] = {}


class MemoryStorage(Storage):
    """``mem://bucket/prefix``: keys in a dict, shared by every store opened on the bucket."""

    def __init__(self, url: str, *, endpoint_url: str | None = None, max_attempts: int | None = None):
        bucket, self.prefix = SCHEMES["mem"].split(url)
        self.url = f"mem://{bucket}/{self.prefix}".rstrip("/")
        self.objects = BUCKETS.setdefault(bucket, {})

    def _full(self, key: str) -> str:
        return "/".join(p for p in [self.prefix, *key.split("/")] if p)

    def write_bytes(self, key: str, data: bytes) -> None:
        self.objects[self._full(key)] = bytes(data)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.objects[self._full(key)]
        except KeyError:
            raise StorageNotFound(f"{self.url}/{key}: not found") from None

    def exists(self, key: str) -> bool:
        return self._full(key) in self.objects

    def list(self, prefix: str = "") -> list[str]:
        base = self._full(prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[cut:] for k in self.objects if not base or k == base or k.startswith(base + "/"))

    def delete(self, key: str) -> None:
        self.objects.pop(self._full(key), None)


MEM = Scheme(
    name="mem",
    storage=f"{__name__}:MemoryStorage",
    example="mem://bucket/prefix",
    bucket=re.compile(r"^[a-z][a-z0-9-]{2,30}$"),
    bucket_rule="3-31 lower-case letters, digits and '-'",
    title="Memory",
    secret="mem",
    secret_keys=(("MEM_TOKEN", "token"),),
)


@pytest.fixture
def mem(monkeypatch):
    """The mem:// scheme, registered for this test only."""
    monkeypatch.setitem(SCHEMES, "mem", MEM)
    BUCKETS.clear()
    yield BUCKETS
    BUCKETS.clear()


CONFIG = """
name: panel
questions: questions.jsonl
output: {output}
system_prompt: none
models:
  - id: echo-a
    backend: echo
  - id: echo-b
    backend: echo
"""


@pytest.fixture
def panel(project):
    write(project / "questions.jsonl",
          "".join(json.dumps({"question": f"Is lesion {i} malignant?"}) + "\n" for i in range(1, 4)))
    return project


def config(project, output: str) -> str:
    write(project / "models.yaml", CONFIG.format(output=output))
    return "models.yaml"


def test_a_new_scheme_runs_renders_reports_status_and_collects_without_any_other_module(mem, panel, capsys):
    # launcher run: the whole panel is stored in the memory bucket, nothing on the disk.
    assert run_cli("run", config(panel, "mem://lab-runs/panel")) == 0
    out = capsys.readouterr().out
    run_id = re.search(r"run (panel-[0-9a-f]+)", out).group(1)
    keys = set(mem["lab-runs"])
    assert {f"panel/{run_id}/{key}" for key in ("run.json", "echo-a/3.txt", "echo-b/responses.jsonl",
                                                 "echo-a/manifest.json")} <= keys
    assert sorted(p.name for p in panel.iterdir()) == ["models.yaml", "questions.jsonl"]
    # A remote store: the next step is to collect the run, from where it is.
    assert f"next: launcher collect {run_id} --from mem://lab-runs/panel" in out

    # launcher render: pods are told where the run is and read the scheme's Secret; a remote
    # store needs no shared PVC, so no warning about a local folder.
    assert run_cli("render", "models.yaml") == 0
    rendered = capsys.readouterr()
    assert "local folder" not in rendered.err
    jobs = list(yaml.safe_load_all(rendered.out))
    assert len(jobs) == 2
    for job in jobs:
        env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["MEDBENCH_OUTPUT"]["value"] == "mem://lab-runs/panel"
        assert env["MEM_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "medbench-mem", "key": "token",
                                                                 "optional": True}
        assert not any(name.startswith("AWS_") for name in env)
        assert job["metadata"]["annotations"]["medbench.io/output"] == "mem://lab-runs/panel"

    # launcher status and collect find it by --from.
    assert run_cli("status", run_id, "--from", "mem://lab-runs/panel", "--json") == 0
    progress = json.loads(capsys.readouterr().out)
    assert {m["model_dir"]: (m["state"], m["done"]) for m in progress["models"]} == {
        "echo-a": ("complete", 3), "echo-b": ("complete", 3)}
    assert run_cli("collect", run_id, "--from", "mem://lab-runs/panel", "--dest", "col") == 0
    collected = panel / "col" / run_id
    stored = mem["lab-runs"][f"panel/{run_id}/echo-a/2.txt"]
    assert (collected / "echo-a" / "2.txt").read_bytes() == stored
    assert len((collected / "echo-b" / "responses.jsonl").read_text().splitlines()) == 3
    assert not (collected / "leases").exists()


def test_a_new_schemes_own_url_rule_is_the_one_config_and_flags_check(mem, panel, capsys):
    assert run_cli("run", config(panel, "mem://X_Y/panel")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "'X_Y' is not a bucket name Memory allows (3-31 lower-case letters, digits and '-')" in err
    assert run_cli("run", config(panel, "results"), "--output", "mem://ab/x") == 2
    assert "'ab' is not a bucket name Memory allows" in capsys.readouterr().err
    assert not BUCKETS and not (panel / "results").exists()


def test_an_unregistered_scheme_is_one_line_naming_those_there_are(panel, capsys):
    assert run_cli("run", config(panel, "mem://lab-runs/panel")) == 2
    err = capsys.readouterr().err
    assert err == ("error: models.yaml:3: output: unsupported scheme 'mem://'; expected a folder (such as "
                   "results) or s3://bucket/prefix (got 'mem://lab-runs/panel')\n")


# --- one URL rule for every output -----------------------------------------------------------------

BAD_OUTPUTS = ["s3:///runs", "s3://Bad_Bucket/runs", "s3://medbench/../runs", "s3://medbench//runs",
               "s3://medbench/./runs", "s3://../runs", "gs://medbench/runs", "s3://medbench/runs\n/x", " "]


@pytest.mark.parametrize("url", BAD_OUTPUTS)
def test_models_yaml_output_and_every_flag_are_held_to_the_same_rule(url, project, capsys):
    write(project / "questions.jsonl", '{"question": "q"}\n')
    with pytest.raises(ConfigError) as e:
        parse_config(CONFIG.format(output=json.dumps(url)), base_dir=project)
    problem = str(e.value).partition("output: ")[2].rpartition(" (got ")[0]  # config quotes the value
    assert problem
    with pytest.raises(StorageURLError) as opened:
        open_storage(url)
    assert str(opened.value).endswith(f": {problem}")
    write(project / "models.yaml", CONFIG.format(output="out"))
    for argv in (["run", "models.yaml", "--output", url], ["status", "panel-0000000000", "--from", url],
                 ["collect", "panel-0000000000", "--from", url]):
        assert run_cli(*argv) == 2, argv
        err = capsys.readouterr().err
        assert err == f"error: {argv[2]} {url!r}: {problem}\n", argv
    assert not (project / "out").exists()


@pytest.mark.parametrize("argv", [["run", "models.yaml", "--output", ""],
                                  ["status", "panel-0000000000", "--from", ""],
                                  ["collect", "panel-0000000000", "--from", ""],
                                  ["collect", "panel-0000000000", "--dest", ""]])
def test_an_empty_output_flag_is_refused_not_ignored(argv, project, capsys):
    write(project / "questions.jsonl", '{"question": "q"}\n')
    write(project / "models.yaml", CONFIG.format(output="out"))
    assert run_cli(*argv) == 2
    flag = argv[2]
    assert capsys.readouterr().err == (f"error: {flag} '': must not be empty; expected a folder (such as "
                                       "results) or s3://bucket/prefix\n")
    assert sorted(p.name for p in project.iterdir()) == ["models.yaml", "questions.jsonl"]


@pytest.mark.parametrize("dest", ["s3://medbench/runs", "gs://medbench/runs"])
def test_collect_brings_a_run_into_a_local_folder_only(dest, project, capsys):
    assert run_cli("collect", "panel-0000000000", "--from", "out", "--dest", dest) == 2
    assert capsys.readouterr().err == (f"error: --dest {dest!r}: collect downloads into a local folder; "
                                       "give a folder such as results\n")
    assert list(project.iterdir()) == []


def test_what_the_registry_says_of_s3_and_of_a_folder(project):
    write(project / "questions.jsonl", '{"question": "q"}\n')
    cluster = parse_config(CONFIG.format(output="s3://medbench/runs") + "cluster:\n  s3_endpoint: "
                           "http://minio.minio:9000\n  secrets: {s3: team-s3}\n", base_dir=project).cluster
    s3 = scheme_of("s3://medbench/runs")
    assert s3.remote and not scheme_of("results").remote and not scheme_of("/shared/runs").remote
    assert s3.endpoint(cluster) == "http://minio.minio:9000"
    access = s3.pod_access(cluster)
    assert access.env == (("AWS_ENDPOINT_URL", "http://minio.minio:9000"),)
    # The Secret models.yaml names (cluster.secrets.s3), its keys optional: a workload identity
    # may stand in for them...
    assert [(k.env, k.secret, k.key, k.optional) for k in access.secrets] == [
        ("AWS_ACCESS_KEY_ID", "team-s3", "access-key-id", True),
        ("AWS_SECRET_ACCESS_KEY", "team-s3", "secret-access-key", True)]
    # ...except at a store's own endpoint, which has none: there they are needed.
    assert all("takes keys" in k.needed for k in access.secrets)
    cluster.s3_endpoint = None
    assert s3.pod_access(cluster).env == () and not any(k.needed for k in s3.pod_access(cluster).secrets)
    assert scheme_of("results").pod_access(cluster) == PodAccess()
