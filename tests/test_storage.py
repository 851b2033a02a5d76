"""One storage contract, two backends: a local folder and S3 (moto on loopback, real boto3).

Whatever the runner, ``collect`` and ``status`` rely on is checked here against both, so a run
behaves the same on a laptop and in a bucket. The S3-only part covers what only a network
store can do to you: 5xx, throttling, a dead endpoint, missing credentials or bucket.
"""

from __future__ import annotations

import hashlib

import pytest

from runner.config import parse_config
from runner.errors import ConfigError, StorageError, StorageNotFound
from runner.storage import LocalStorage, Storage, open_storage
from runner.storage.s3 import S3Storage
from tests.fakes.s3 import free_port, moto_endpoint_fixture, s3_fixture  # noqa: F401 - fixtures

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "results")
    fake = request.getfixturevalue("s3")
    return open_storage(fake.url("runs"), endpoint_url=fake.endpoint)


# --- the contract, on both backends --------------------------------------------------------


def test_written_keys_read_back(storage):
    storage.write_text("run-1/model/1.txt", "Tamoxifen blocks the oestrogen receptor.")
    storage.write_bytes("run-1/model/blob.bin", b"\x00\x01\xff")
    assert storage.read_text("run-1/model/1.txt") == "Tamoxifen blocks the oestrogen receptor."
    assert storage.read_bytes("run-1/model/blob.bin") == b"\x00\x01\xff"
    storage.write_text("run-1/model/1.txt", "second answer")
    assert storage.read_text("run-1/model/1.txt") == "second answer"


def test_unicode_text_survives(storage):
    storage.write_text("r/m/2.txt", "Ki-67 ≥ 20 % → höheres Risiko")
    assert storage.read_text("r/m/2.txt") == "Ki-67 ≥ 20 % → höheres Risiko"


def test_a_missing_key_is_not_found(storage):
    assert not storage.exists("r/m/1.txt")
    with pytest.raises(StorageNotFound):
        storage.read_bytes("r/m/1.txt")
    storage.write_text("r/m/1.txt", "x")
    assert storage.exists("r/m/1.txt")


def test_list_is_recursive_sorted_and_relative(storage):
    for key in ["r/b/2.txt", "r/a/records/000001.json", "r/a/1.txt", "r/run.json", "other/x.txt"]:
        storage.write_text(key, key)
    assert storage.list("r") == ["r/a/1.txt", "r/a/records/000001.json", "r/b/2.txt", "r/run.json"]
    assert storage.list("r/a/records/") == ["r/a/records/000001.json"]
    assert storage.list("") == sorted(
        ["r/b/2.txt", "r/a/records/000001.json", "r/a/1.txt", "r/run.json", "other/x.txt"])
    assert storage.list("nothing-here") == []


def test_a_prefix_names_a_folder_not_a_string_start(storage):
    storage.write_text("run/model/1.txt", "a")
    storage.write_text("run/model-2/1.txt", "b")
    assert storage.list("run/model") == ["run/model/1.txt"]


def test_empty_segments_are_ignored(storage):
    storage.write_text("r//m/1.txt", "x")
    assert storage.read_text("r/m/1.txt") == "x"
    assert storage.list("r") == ["r/m/1.txt"]


def test_delete_removes_and_tolerates_missing(storage):
    storage.write_text("r/m/1.txt", "x")
    storage.delete("r/m/1.txt")
    assert not storage.exists("r/m/1.txt")
    storage.delete("r/m/1.txt")
    assert storage.list("r") == []


def test_files_upload_and_download(storage, tmp_path):
    src = tmp_path / "src" / "embeddings.npy"
    src.parent.mkdir()
    src.write_bytes(bytes(range(256)) * 100)
    storage.upload_file("r/m/embeddings.npy", src)
    dest = tmp_path / "dest" / "deep" / "embeddings.npy"
    storage.download_file("r/m/embeddings.npy", dest)
    assert dest.read_bytes() == src.read_bytes()


def test_downloading_a_missing_key_leaves_no_file(storage, tmp_path):
    dest = tmp_path / "dest" / "1.txt"
    with pytest.raises(StorageNotFound):
        storage.download_file("r/m/1.txt", dest)
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir()] == []


def test_size_and_etag_describe_the_content(storage):
    storage.write_text("r/m/1.txt", "twelve bytes")
    size, etag = storage.size_and_etag("r/m/1.txt")
    assert size == 12
    # Local folders have no tag; S3's tag of a single PUT is the MD5 of the content.
    assert etag in (None, hashlib.md5(b"twelve bytes").hexdigest())
    with pytest.raises(StorageNotFound):
        storage.size_and_etag("r/m/2.txt")


@pytest.mark.parametrize("key", ["r/../../etc/passwd", "../x", "r/m/../../y"])
def test_keys_cannot_climb_out_of_the_output(storage, key):
    with pytest.raises(StorageError, match=r"'\.\.'"):
        storage.write_text(key, "x")


# --- names that become keys are checked at config time ------------------------------------


def _config(model_line: str, name: str = "t") -> str:
    return f"name: {name}\nquestions: q.jsonl\nmodels:\n  - {model_line}\n    backend: echo\n"


@pytest.mark.parametrize(
    "model_line, expected",
    [
        ('id: "../../etc/cron.d/x"', "models[0].id: id must not contain '..'"),
        ('id: "/abs/model"', "models[0].id: id must not start with '/'"),
        ('id: "org/../other"', "models[0].id: id must not contain '..'"),
        ('id: "bad\\u0007bell"', "models[0].id: id must not contain control characters"),
        ('id: ok\n    name: "../escape"', "models[0].name: name must not contain '..'"),
        ('id: ok\n    name: "a/b"', "models[0].name: name must not contain '/'"),
    ],
)
def test_unsafe_model_names_are_rejected_at_config_time(model_line, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(_config(model_line))
    assert expected in str(e.value)


@pytest.mark.parametrize("name", ["../runs", "/abs", "a/b", "tab\there"])
def test_unsafe_run_names_are_rejected_at_config_time(name):
    with pytest.raises(ConfigError, match=r"models\.yaml:1: name: "):
        parse_config(_config("id: ok", name=f'"{name}"'))


# --- S3 only: what a network store does to you ---------------------------------------------


def test_s3_keys_live_under_the_prefix(s3):
    storage = S3Storage(s3.url("team/runs"), endpoint_url=s3.endpoint)
    storage.write_text("r/m/1.txt", "x")
    assert s3.keys() == ["team/runs/r/m/1.txt"]
    assert storage.url == f"s3://{s3.bucket}/team/runs"


def test_s3_requests_carry_no_default_checksums(s3):
    """boto3 >= 1.36 adds CRC32 checksums by default; MinIO and Ceph may reject them."""
    storage = S3Storage(s3.url(), endpoint_url=s3.endpoint)
    storage.write_text("r/m/1.txt", "x")
    assert storage.read_text("r/m/1.txt") == "x"
    for _method, _path, headers in s3.proxy.requests:
        lowered = {k.lower() for k in headers}
        assert not any(h.startswith("x-amz-checksum-") for h in lowered), headers
        assert "x-amz-sdk-checksum-algorithm" not in lowered


def test_s3_uses_the_endpoint_from_the_environment(s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)  # the S3-specific one wins
    storage = open_storage(s3.url())
    storage.write_text("r/1.txt", "x")
    assert s3.read("runs/r/1.txt") == b"x"


def test_s3_server_errors_are_retried(s3):
    storage = S3Storage(s3.url(), endpoint_url=s3.endpoint)
    s3.proxy.fail(times=2, method="PUT")
    storage.write_text("r/m/1.txt", "kept")
    assert s3.proxy.injected == 2
    assert s3.read("runs/r/m/1.txt") == b"kept"


def test_s3_throttling_is_retried(s3):
    storage = S3Storage(s3.url(), endpoint_url=s3.endpoint)
    storage.write_text("r/m/1.txt", "kept")
    s3.proxy.throttle(times=1, method="GET", path_contains="list-type")
    s3.proxy.throttle(times=1, method="GET", path_contains="1.txt")
    assert storage.list("r") == ["r/m/1.txt"]
    assert storage.read_text("r/m/1.txt") == "kept"
    assert s3.proxy.injected == 2 and s3.proxy.pending_faults() == 0


def test_s3_gives_up_with_a_clear_error_when_faults_persist(s3):
    storage = S3Storage(s3.url(), endpoint_url=s3.endpoint, max_attempts=2)
    s3.proxy.fail(times=10, method="PUT")
    with pytest.raises(StorageError) as e:
        storage.write_text("r/m/1.txt", "x")
    assert str(e.value) == (
        f"S3 PutObject s3://{s3.bucket}/runs/r/m/1.txt failed after 2 attempts: "
        "InternalError: We encountered an internal error. Please try again."
    )


def test_s3_endpoint_down_is_one_clear_line(s3):
    dead = f"http://127.0.0.1:{free_port()}"
    storage = S3Storage(s3.url(), endpoint_url=dead, max_attempts=2)
    with pytest.raises(StorageError) as e:
        storage.read_text("r/run.json")
    msg = str(e.value)
    assert msg.startswith(f"cannot reach S3 endpoint {dead}: ")
    assert "\n" not in msg


def test_s3_endpoint_going_down_loses_nothing_written(s3):
    storage = S3Storage(s3.url(), endpoint_url=s3.endpoint, max_attempts=2)
    storage.write_text("r/m/1.txt", "first")
    s3.proxy.down = True
    with pytest.raises(StorageError, match=f"^cannot reach S3 endpoint {s3.endpoint}: "):
        storage.write_text("r/m/2.txt", "second")
    s3.proxy.down = False
    assert storage.read_text("r/m/1.txt") == "first"
    assert storage.list("r") == ["r/m/1.txt"]


def test_s3_without_credentials_says_how_to_set_them(s3, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage = S3Storage(s3.url(), endpoint_url=s3.endpoint)
    with pytest.raises(StorageError, match="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        storage.write_text("r/1.txt", "x")


def test_s3_missing_bucket_is_named(s3):
    storage = S3Storage("s3://no-such-bucket-here/runs", endpoint_url=s3.endpoint)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist at http://127"):
        storage.write_text("r/1.txt", "x")


def test_s3_large_files_go_up_in_parts(s3, tmp_path):
    storage = S3Storage(s3.url(), endpoint_url=s3.endpoint,
                        multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    big = tmp_path / "embeddings.npy"
    big.write_bytes(hashlib.sha256(b"seed").digest() * (11 * MiB // 32))
    storage.upload_file("r/m/embeddings.npy", big)
    size, etag = storage.size_and_etag("r/m/embeddings.npy")
    assert size == big.stat().st_size
    assert etag.endswith("-3")  # three parts: 5 + 5 + 1 MiB
    assert s3.proxy.count("PUT", "uploadId=") == 3
    storage.download_file("r/m/embeddings.npy", tmp_path / "back.npy")
    assert (tmp_path / "back.npy").read_bytes() == big.read_bytes()


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix"])
def test_s3_url_needs_a_bucket(url):
    with pytest.raises(StorageError, match="missing bucket name"):
        S3Storage(url)
