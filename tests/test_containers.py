"""The runner images, built for real, running the Jobs ``launcher submit`` creates, as a cluster would.

Each test is a user's story on a one-node "cluster": ``launcher submit`` stages a run in moto's S3
and creates Jobs in the fake API server; ``tests/kubelet.py`` runs every Job's pods as Docker
containers of the images ``scripts/build-images.sh`` built from this checkout (the Job's
command, env, Secrets, user, securityContext, volumes and limits as a kubelet applies them); then
``launcher status``, ``logs``, ``collect`` and ``report`` work on the host. And the build script,
when a build goes wrong, leaves nothing half-built under the image's name.

Needs a Docker daemon and a base image with Python 3.11 (``local/python:3.11-slim`` from
scripts/local-base-image.sh, or MEDBENCH_IMAGES_BASE); without them every test here is skipped
with one line saying why. ``-m "not containers"`` deselects them; ``-m "not gpu_image"`` leaves
out the two that need the 9 GB GPU image (built once, then reused while its inputs are unchanged).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from launcher.k8s.render import ANN_MODEL_DIR
from launcher.k8s.sizing import quantity_bytes
from tests.conftest import REPO, SMOLLM2_GGUF, run_cli, write
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.k8s_api import FakeKubernetes, admin_setup
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.s3 import FAKE_ENV, moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures
from tests.kubelet import Kubelet, containers_left, docker, require_docker
from tests.test_build_images import build_images, one_line

pytestmark = pytest.mark.containers

LOCAL_BASE = "local/python:3.11-slim"
BASE = os.environ.get("MEDBENCH_IMAGES_BASE", LOCAL_BASE)
require_docker(BASE)  # else the whole module is skipped, with one line saying why
GPU_IMAGE = "registry.example.org/medbench-runner:0.1.0"
CPU_IMAGE = "registry.example.org/medbench-runner-cpu:0.1.0"
OPENAI_KEY = "sk-containers-0123456789"
GEMINI_KEY = "AIza-containers-0123456789"
QUESTIONS = [
    "What does HER2 stand for?",
    "Is tamoxifen a selective oestrogen receptor modulator?",
    "Name one risk factor for breast cancer.",
    "What is the first-line treatment of early-stage seminoma?",
    "Which gene is mutated in most cases of chronic myeloid leukaemia?",
    "What does BRCA1 do?",
    "Is imatinib a tyrosine kinase inhibitor?",
    "What is a sentinel lymph node?",
]


# --- the images: built once per session, reused across sessions while their inputs are unchanged ---


def build(kind: str, base: str) -> str:
    """The image of this checkout, by scripts/build-images.sh: its tag (a hash of the inputs)."""
    started = time.monotonic()
    done = subprocess.run(["bash", "scripts/build-images.sh", f"--{kind}", "--base", base, "--tag-by-inputs"],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr
    line = re.search(rf"^{kind}: (\S+) .*$", done.stdout, re.M)
    assert line, done.stdout
    print(f"\n{line.group(0)} ({time.monotonic() - started:.0f} s in this session)")
    return line.group(1)


@pytest.fixture(scope="session")
def cpu_image() -> str:
    return build("cpu", BASE)


@pytest.fixture(scope="session")
def gpu_image() -> str:
    return build("gpu", BASE)


# --- scripts/build-images.sh when a build goes wrong: nothing half-built is tagged ----------------


@pytest.fixture
def daemon():
    """Images a test makes, removed at its end."""
    made: list[str] = []
    yield made
    for ref in made:
        docker("rmi", "-f", ref, check=False)


def repo_images(repo: str) -> list[str]:
    out = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    return sorted(r for r in out if r.startswith(repo) or r.startswith("medbench-build-tmp:"))


def test_a_base_image_without_python_is_refused_before_building(daemon, tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hostname").write_text("bare\n")
    base = f"medbench-test-bare:{uuid.uuid4().hex[:8]}"
    tar = subprocess.run(["tar", "-C", str(tmp_path), "-c", "etc"], capture_output=True, check=True).stdout
    subprocess.run(["docker", "import", "-", base], input=tar, capture_output=True, check=True)
    daemon.append(base)
    repo = f"medbench-test-{uuid.uuid4().hex[:8]}"
    done = build_images("--cpu", "--base", base, "--repo", repo)
    assert done.returncode == 1
    assert f"base image {base} has no usable Python 3.11 with venv" in one_line(done)
    assert repo_images(repo) == []


def test_a_base_image_that_cannot_be_pulled_says_so(daemon):
    done = build_images("--cpu", "--base", "registry.invalid/python:3.11.14-slim-bookworm")
    assert done.returncode == 1
    assert "cannot be pulled (no registry? use --local-base)" in one_line(done)


def test_a_failed_build_tags_nothing_and_leaves_the_earlier_image_alone(daemon, tmp_path):
    # A base with Python where the image's first step cannot work: /opt/venv is already a file.
    base = f"medbench-test-broken:{uuid.uuid4().hex[:8]}"
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE}\nRUN touch /opt/venv\n")
    docker("build", "-q", "-t", base, str(tmp_path))
    daemon.append(base)
    repo = f"medbench-test-{uuid.uuid4().hex[:8]}"
    earlier = f"{repo}/medbench-runner-cpu:1.0"
    docker("tag", BASE, earlier)  # the image a previous build gave this name
    daemon.append(earlier)
    before = docker("image", "inspect", "-f", "{{.Id}}", earlier).stdout

    done = build_images("--cpu", "--base", base, "--repo", repo, "--tag", "1.0")
    # The steps that did build stay as untagged cache on the broken base: removed at the end.
    base_id = docker("image", "inspect", "-f", "{{.Id}}", base).stdout.strip()
    daemon[:0] = [i for i in docker("images", "-q", "--no-trunc", "-f", "dangling=true").stdout.split()
                  if base_id in docker("history", "-q", "--no-trunc", i).stdout.split()]
    assert done.returncode == 1
    line = one_line(done)
    assert "the cpu image did not build (Step " in line and "RUN python -m venv /opt/venv" in line
    log = Path(line.rsplit("the log: ", 1)[1].rstrip(")"))
    assert "venv" in log.read_text()
    shutil.rmtree(log.parent)
    assert repo_images(repo) == [earlier]  # no temporary tag left behind either
    assert docker("image", "inspect", "-f", "{{.Id}}", earlier).stdout == before


def test_an_image_over_its_budget_is_not_tagged(daemon, cpu_image):
    repo = f"medbench-test-{uuid.uuid4().hex[:8]}"
    # The real CPU image (its layers cached by the session's build), against a 100 MB budget.
    done = build_images("--cpu", "--base", BASE, "--repo", repo, "--tag", "1.0",
                        env={"MEDBENCH_CPU_IMAGE_BUDGET_MB": "100"})
    assert done.returncode == 1
    line = one_line(done)
    assert "the cpu image is " in line and "over its budget of 100 MB" in line
    assert f"not tagged {repo}/medbench-runner-cpu:1.0" in line
    assert repo_images(repo) == []


# --- a one-node cluster: the fake API server, its admin set-up, the kubelet ---------------------


@pytest.fixture
def cluster(tmp_path, monkeypatch, s3, cpu_image):
    """The fake API server with the admin's set-up and this test's Secrets, a kubeconfig for it,
    and a kubelet that runs its Jobs from the images built here. Every container it started is
    removed at the end."""
    fake = FakeKubernetes().start()
    admin_setup(fake)
    for name, data in {
        "medbench-s3": {"access-key-id": FAKE_ENV["AWS_ACCESS_KEY_ID"],
                        "secret-access-key": FAKE_ENV["AWS_SECRET_ACCESS_KEY"]},
        "medbench-openai": {"api-key": OPENAI_KEY},
        "medbench-gemini": {"api-key": GEMINI_KEY},
    }.items():
        fake.apply({"kind": "Secret", "metadata": {"name": name}, "stringData": data})
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(fake.kubeconfig()))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "medbench-cache"))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubelet = Kubelet(fake, {CPU_IMAGE: cpu_image})
    try:
        yield kubelet
    finally:
        kubelet.close()
        fake.stop()
        assert not list(containers_left(kubelet.session))


def write_panel(project: Path, s3, models: str, *, n: int = 5, backoff: int = 2) -> Path:
    """A models.yaml of these models (YAML list items) over the first ``n`` questions, into S3."""
    write(project / "q.jsonl", "".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS[:n]))
    head = (f"name: ward\nquestions: q.jsonl\noutput: {s3.url()}\n"
            "generation: {max_new_tokens: 32}\n"
            f"cluster:\n  namespace: medbench\n  image: {GPU_IMAGE}\n  cpu_image: {CPU_IMAGE}\n"
            f"  s3_endpoint: {s3.endpoint}\n  backoff_limit: {backoff}\n")
    path = project / "models.yaml"
    path.write_text(head + "models:\n" + models, encoding="utf-8")
    return path


def submit(cfg: Path, capsys) -> str:
    """`launcher submit`: the run id it printed."""
    assert run_cli("submit", cfg) == 0, capsys.readouterr().err
    return re.search(r"\bward-[0-9a-f]{10}\b", capsys.readouterr().out).group(0)


def job_of(kubelet: Kubelet, model_dir: str) -> dict:
    return next(j for j in kubelet.jobs() if j["metadata"]["annotations"][ANN_MODEL_DIR] == model_dir)


def status(run_id: str, capsys) -> dict:
    assert run_cli("status", run_id, "--json") == 0
    return json.loads(capsys.readouterr().out)


def stored(s3, run_id: str, model_dir: str, name: str) -> str:
    return s3.read(f"runs/{run_id}/{model_dir}/{name}").decode()


def records(s3, run_id: str, model_dir: str) -> list[dict]:
    return [json.loads(x) for x in stored(s3, run_id, model_dir, "responses.jsonl").splitlines()]


# --- (a) the API panel and an echo model, from the CPU image, into S3 ------------------------------


def test_an_api_panel_runs_in_its_image_into_s3_and_status_collect_report_read_it(cluster, s3, project,
                                                                                  capsys):
    with FakeOpenAI(key=OPENAI_KEY) as oai, FakeGemini(key=GEMINI_KEY) as gem:
        cfg = write_panel(project, s3, f"""
  - id: gpt-4o
    base_url: {oai.url}
  - id: gemini-3-pro-preview
    base_url: {gem.url}
  - id: echo-check
    backend: echo
""")
        run_id = submit(cfg, capsys)
        runs = [cluster.start(job) for job in cluster.jobs()]
        for run in runs:
            cluster.wait(run, timeout=240)
            assert run.state == "complete", run.logs()
        # The keys came from the Secrets, by secretKeyRef, into the pods: the fakes saw them.
        assert oai.requests and all(r.key_ok for r in oai.requests)
        assert gem.requests and all(r.key_ok for r in gem.requests)

    # Each pod ran as the Job asked: the image's non-root user, no capabilities, no privilege
    # escalation, a read-only root filesystem with /tmp on a scratch volume, its memory limit.
    pod = runs[0].attempts[0].pod
    host = json.loads(docker("inspect", "-f", "{{json .HostConfig}}", pod).stdout)
    config = json.loads(docker("inspect", "-f", "{{json .Config}}", pod).stdout)
    mounts = json.loads(docker("inspect", "-f", "{{json .Mounts}}", pod).stdout)
    assert config["User"] == "10001:10001" and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"] and host["Memory"] == 2**30
    assert host["ReadonlyRootfs"] is True and {"/tmp", "/cache"} <= {m["Destination"] for m in mounts}

    for model_dir in ("gpt-4o", "gemini-3-pro-preview", "echo-check"):
        recs = records(s3, run_id, model_dir)
        assert [r["index"] for r in recs] == [1, 2, 3, 4, 5]
        assert all(r["response"] and not r.get("error") for r in recs), model_dir
        assert json.loads(stored(s3, run_id, model_dir, "manifest.json"))["status"] == "complete"
    assert records(s3, run_id, "gpt-4o")[0]["response"] == f"Answer to: {QUESTIONS[0]}"
    # The small image has no torch: the answers' similarity vectors are left to the report, quietly.
    api = json.loads(stored(s3, run_id, "gpt-4o", "manifest.json"))
    assert api["answer_vectors"]["skipped"].startswith("torch and transformers not installed here")
    assert not [w for w in api["warnings"] if w.startswith("answer embeddings")]

    # On the laptop, by the run id alone: the Jobs' states and the answers, then the results.
    seen = status(run_id, capsys)
    assert seen["jobs"] == {m: "complete" for m in ("gpt-4o", "gemini-3-pro-preview", "echo-check")}
    assert [(m["state"], m["done"]) for m in seen["models"]] == [("complete", 5)] * 3
    assert run_cli("collect", run_id, "--dest", project / "results") == 0
    local = project / "results" / run_id
    assert (local / "gpt-4o" / "1.txt").read_text().strip() == f"Answer to: {QUESTIONS[0]}"
    assert run_cli("report", local, "--encoder", "none") == 0
    assert "gemini-3-pro-preview" in (local / "report.html").read_text()
    capsys.readouterr()
    # ...and what the pods printed, from the (fake) cluster.
    assert run_cli("logs", run_id, "echo-check") == 0
    assert "echo-check: complete (5/5 answered, 0 errors)" in capsys.readouterr().out


def manifest_done(s3, run_id: str, model_dir: str, name: str = "manifest.json") -> int:
    try:
        return int(json.loads(stored(s3, run_id, model_dir, name))["done"])
    except Exception:  # not written yet
        return 0


# --- (c) a sharded model: an Indexed Job, one container per index ---------------------------------


def test_a_sharded_model_runs_as_an_indexed_job_of_two_containers_and_merges_to_one_output(
        cluster, s3, project, capsys):
    cfg = write_panel(project, s3, """
  - id: echo-check
    backend: echo
    shards: 2
""", n=8)
    run_id = submit(cfg, capsys)
    job = job_of(cluster, "echo-check")
    assert job["spec"]["completionMode"] == "Indexed"
    run = cluster.run(job, timeout=240)
    assert run.state == "complete", run.logs()

    assert sorted(a.index for a in run.attempts) == [0, 1]
    for a in run.attempts:  # each container learnt its index as a pod does, from the Job controller
        env = json.loads(docker("inspect", "-f", "{{json .Config.Env}}", a.pod).stdout)
        assert f"JOB_COMPLETION_INDEX={a.index}" in env and "MEDBENCH_SHARDS=2" in env
        assert f"shard {a.index + 1}/2" in a.log
    recs = records(s3, run_id, "echo-check")
    assert [r["index"] for r in recs] == list(range(1, 9))  # one output, every answer once
    assert all(QUESTIONS[r["index"] - 1] in r["prompt"] and r["response"] for r in recs)
    keys = s3.keys(f"runs/{run_id}/echo-check/")
    assert {f"runs/{run_id}/echo-check/shards/{i}.log" for i in (0, 1)} <= set(keys)
    assert status(run_id, capsys)["jobs"] == {"echo-check": "complete"}


# --- (d) a container killed midway: the Job's retry is a new container that continues ----------


def test_a_container_killed_midway_is_retried_and_every_answer_is_stored_exactly_once(
        cluster, s3, project, capsys):
    # The killed pod's lease would keep its shard for the default 60 s before the retry may take
    # over; 4 s keeps the test short (the wait itself is what is being shown).
    cluster.extra_env["MEDBENCH_LEASE_SECONDS"] = "4"
    cfg = write_panel(project, s3, """
  - id: echo-check
    backend: echo
    batch_size: 1
    delay: 0.4
""", n=8)
    run_id = submit(cfg, capsys)
    run = cluster.start(job_of(cluster, "echo-check"))
    cluster.wait(run, timeout=120, until=lambda r: manifest_done(s3, run_id, "echo-check") >= 3)
    cluster.kill(run.attempts[0])
    cluster.wait(run, timeout=180)

    assert run.state == "complete", run.logs()
    first, second = run.attempts
    assert first.exit_code == 137 and not first.oom_killed and second.exit_code == 0
    assert first.pod != second.pod  # restartPolicy Never: a new pod, a new container
    recs = records(s3, run_id, "echo-check")
    assert [r["index"] for r in recs] == list(range(1, 9))
    assert all(r["response"] and not r.get("error") for r in recs)
    # The second attempt took over the first's lease once it expired, and said where it resumed.
    assert "waiting until it finishes or its lease expires" in second.log
    assert re.search(r"resuming: [3-7] of 8 answers already stored", second.log)
    # The runner's own log, in storage, tells both attempts' story.
    log = stored(s3, run_id, "echo-check", "runner.log")
    assert log.count(f"run {run_id}, model echo-check") == 2, log
    assert "resuming:" in log and "echo-check: complete (8/8 answered, 0 errors)" in log
    seen = status(run_id, capsys)
    assert seen["jobs"] == {"echo-check": "complete"} and seen["models"][0]["done"] == 8


# --- (e) a container over its memory limit -------------------------------------------------------


def test_a_container_over_its_memory_limit_is_oom_killed_and_status_says_so(cluster, s3, project, capsys):
    cfg = write_panel(project, s3, """
  - id: echo-check
    backend: echo
    resources: {memory: 40Mi}
""", backoff=1)
    run_id = submit(cfg, capsys)
    run = cluster.run(job_of(cluster, "echo-check"), timeout=120)

    assert run.state == "failed" and run.reason == "BackoffLimitExceeded"
    assert [a.oom_killed for a in run.attempts] == [True, True]  # backoff_limit 1: two attempts
    seen = status(run_id, capsys)
    assert seen["jobs"]["echo-check"] == ("failed: OOMKilled (out of memory: over its 40Mi memory limit; "
                                          "give the model more with resources: {memory: ...})")
    # It never wrote a word to storage, yet it shows failed, not pending for ever.
    assert seen["models"][0]["state"] == "failed" and seen["models"][0]["done"] == 0
    assert "launcher logs" in seen["models"][0]["error"]


# --- (b) the GPU image, on CPU: the quickstart's real model, weights on the HF cache volume ------


@pytest.fixture
def hf_cache(cluster, gpu_image, smollm2_dir):
    """The HF cache PVC as a named Docker volume holding SmolLM2's GGUF under /cache/models, as an
    admin (or an earlier Job) would have put it there; removed at the end."""
    volume = f"medbench-test-hf-cache-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", volume)
    try:
        # Written as the pods' user, through the image: the volume starts as the image's /cache.
        docker("run", "--rm", "--network", "none", "--user", "10001:10001", "-v", f"{volume}:/cache",
               "-v", f"{smollm2_dir}:/weights:ro", "--entrypoint", "sh", gpu_image, "-c",
               f"mkdir -p /cache/models/smollm2 && cp /weights/{SMOLLM2_GGUF} /cache/models/smollm2/")
        cluster.images[GPU_IMAGE] = gpu_image
        cluster.volumes["medbench-hf-cache"] = volume
        yield volume
    finally:
        cluster.close()
        docker("volume", "rm", "-f", volume, check=False)


@pytest.mark.gpu_image
def test_the_quickstart_model_answers_inside_the_gpu_image_on_cpu(cluster, hf_cache, s3, project, capsys):
    cfg = write_panel(project, s3, f"""
  - id: HuggingFaceTB/SmolLM2-135M-Instruct
    path: /cache/models/smollm2
    gguf_file: {SMOLLM2_GGUF}
    gpus: 0
    batch_size: 4
""", n=3)
    run_id = submit(cfg, capsys)
    job = job_of(cluster, "HuggingFaceTB_SmolLM2-135M-Instruct")
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == GPU_IMAGE
    assert {"name": "cache", "persistentVolumeClaim": {"claimName": "medbench-hf-cache"}} in pod["volumes"]
    run = cluster.run(job, timeout=900)
    assert run.state == "complete", run.logs()

    recs = records(s3, run_id, "HuggingFaceTB_SmolLM2-135M-Instruct")
    assert [r["index"] for r in recs] == [1, 2, 3]
    assert all(r["response"].strip() and not r.get("error") for r in recs)
    manifest = json.loads(stored(s3, run_id, "HuggingFaceTB_SmolLM2-135M-Instruct", "manifest.json"))
    assert manifest["status"] == "complete"
    lines = (REPO / "images" / "requirements-gpu.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))
    # The image's own torch and transformers (the pinned CUDA builds) ran the model.
    for pkg in ("torch", "transformers"):
        assert manifest["versions"][pkg] == pins[pkg], pkg
    # The image carries the report's encoder: the answers' similarity vectors were made in the pod.
    vectors = manifest["answer_vectors"]
    assert (vectors["encoder"], vectors["answers"], vectors["embedded"]) == ("minilm", 3, 3), vectors
    assert not [w for w in manifest["warnings"] if w.startswith("answer embeddings")]
    assert [k for k in s3.keys(f"runs/{run_id}/HuggingFaceTB_SmolLM2-135M-Instruct/similarity/")
            if k.endswith("/0.npz")]
    assert status(run_id, capsys)["jobs"] == {"HuggingFaceTB_SmolLM2-135M-Instruct": "complete"}


@pytest.mark.gpu_image
def test_vllm_imports_in_the_gpu_image(gpu_image):
    done = docker("run", "--rm", "--network", "none", "--entrypoint", "python", gpu_image, "-c",
                  "import vllm, torch; print(vllm.__version__, torch.__version__, torch.version.cuda)",
                  timeout=300)
    assert done.stdout.split()[-3:] == ["0.32.0", "2.13.0+cu130", "13.0"], done.stdout + done.stderr



# --- what the Job controller does with bad input, and a node without GPUs --------------------------


def test_bad_input_fails_the_job_at_once_without_a_retry(cluster, s3, project, capsys):
    cfg = write_panel(project, s3, """
  - id: echo-check
    backend: echo
""")
    run_id = submit(cfg, capsys)
    s3.client.delete_object(Bucket=s3.bucket, Key=f"runs/{run_id}/run.json")  # nothing staged now
    run = cluster.run(job_of(cluster, "echo-check"), timeout=120)

    # podFailurePolicy: exit code 2 fails the Job at once, though backoff_limit allows 2 retries.
    assert run.state == "failed" and run.reason == "PodFailurePolicy"
    (attempt,) = run.attempts
    assert attempt.exit_code == 2
    assert f"error: s3://{s3.bucket}/runs/{run_id}/run.json not found" in attempt.log
    assert "Traceback" not in attempt.log


def test_a_gpu_job_waits_unschedulable_on_a_node_without_gpus(cluster, s3, project, capsys):
    cfg = write_panel(project, s3, """
  - id: HuggingFaceTB/SmolLM2-135M-Instruct
    gpus: 1
""")
    run_id = submit(cfg, capsys)
    job = job_of(cluster, "HuggingFaceTB_SmolLM2-135M-Instruct")
    run = cluster.start(job)
    cluster.step(run)
    assert run.state == "running" and not run.attempts[0].started
    # The table needs the run's storage, which has the stage only.
    assert status(run_id, capsys)["jobs"] == {
        "HuggingFaceTB_SmolLM2-135M-Instruct":
            "pending: Unschedulable (0/1 nodes are available: 1 Insufficient nvidia.com/gpu.)"}
    # On a node with a GPU, its /dev/shm would be the Job's in-memory emptyDir, at its size.
    pod = next(p for p in cluster.api.pods.values() if p["metadata"]["name"] == run.attempts[0].pod)
    pod = json.loads(json.dumps(pod))
    for key in ("limits", "requests"):
        pod["spec"]["containers"][0]["resources"][key].pop("nvidia.com/gpu")
    cluster.images[GPU_IMAGE] = "medbench-runner:any"
    cluster.volumes["medbench-hf-cache"] = "any-volume"
    args = cluster.docker_run_args(pod)
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"]
    assert args[args.index("--shm-size") + 1] == str(quantity_bytes(shm))
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert args[args.index("--memory") + 1] == str(quantity_bytes(limits["memory"]))
    assert args[args.index("--cpus") + 1] == str(int(limits["cpu"]))
