"""A loopback fake of the Hugging Face Hub's HTTP API, for sizing models without their weights.

What ``huggingface_hub`` asks of the Hub, on 127.0.0.1 (point ``HF_ENDPOINT`` at ``url``):

- ``GET /api/models/{repo}[/revision/{rev}]``: model info with ``sha``, ``gated`` and, for
  safetensors repos whose info says so, the ``safetensors`` parameter summary the Hub computes;
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{file}`` with the headers ``hf_hub_download`` needs
  (``X-Repo-Commit``, ``ETag``, ``Content-Length``) and HTTP ``Range`` requests, which is how
  ``get_safetensors_metadata`` reads only the header of each ``*.safetensors`` file;
- the Hub's error contract: ``X-Error-Code`` ``RepoNotFound`` / ``RevisionNotFound`` /
  ``EntryNotFound`` / ``GatedRepo`` (a gated repo answers only a token in ``tokens``).

A safetensors file here is its real header (8-byte length, then the JSON of every tensor's
dtype, shape and offsets) and no tensor data: a 70B model costs a few hundred kilobytes. The
repos are built from real configs by ``causal_lm_tensors``. Every request is kept in
``requests`` so a test can see what was (not) asked.

Import ``hf_hub_fixture`` into a test module to use it (it registers as the fixture ``hub``).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.fakes.loopback import serve, shut

_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1}
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")


def safetensors_header(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    """A safetensors file without its data: what a Range request for the header returns."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        size = n * _BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob


def causal_lm_tensors(config: dict, dtype: str = "BF16") -> dict[str, tuple[str, list[int]]]:
    """The tensors of a Llama-family checkpoint with this config (names as transformers saves them)."""
    c = config.get("text_config", config)
    h, layers, inter = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
    heads = c["num_attention_heads"]
    kv = c.get("num_key_value_heads", heads)
    hd = c.get("head_dim", h // heads)
    t: dict[str, tuple[str, list[int]]] = {"model.embed_tokens.weight": (dtype, [c["vocab_size"], h])}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = (dtype, [heads * hd, h])
        t[p + "self_attn.k_proj.weight"] = (dtype, [kv * hd, h])
        t[p + "self_attn.v_proj.weight"] = (dtype, [kv * hd, h])
        t[p + "self_attn.o_proj.weight"] = (dtype, [h, heads * hd])
        t[p + "mlp.gate_proj.weight"] = (dtype, [inter, h])
        t[p + "mlp.up_proj.weight"] = (dtype, [inter, h])
        t[p + "mlp.down_proj.weight"] = (dtype, [h, inter])
        t[p + "input_layernorm.weight"] = (dtype, [h])
        t[p + "post_attention_layernorm.weight"] = (dtype, [h])
    t["model.norm.weight"] = (dtype, [h])
    if not c.get("tie_word_embeddings", True):
        t["lm_head.weight"] = (dtype, [c["vocab_size"], h])
    return t


def parameter_count(tensors: dict[str, tuple[str, list[int]]]) -> int:
    total = 0
    for _dtype, shape in tensors.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def safetensors_files(tensors: dict[str, tuple[str, list[int]]], shards: int = 1) -> dict[str, bytes]:
    """``model.safetensors``, or N shards and the ``model.safetensors.index.json`` that maps them."""
    if shards == 1:
        return {"model.safetensors": safetensors_header(tensors)}
    names = list(tensors)
    files: dict[str, bytes] = {}
    weight_map: dict[str, str] = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s * len(names) // shards:(s + 1) * len(names) // shards]}
        files[fname] = safetensors_header(part)
        weight_map.update(dict.fromkeys(part, fname))
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    #: whether model info carries the Hub's safetensors summary (mirrors and proxies may leave it out)
    info_safetensors: bool = True


@dataclass
class FakeHub:
    """The fake Hub's repos and the requests it saw; ``url`` once started."""

    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def add(self, repo_id: str, files: dict[str, bytes | dict], *, revision: str = "main",
            gated: bool = False, info_safetensors: bool = True) -> None:
        blobs = {k: v if isinstance(v, bytes) else json.dumps(v).encode() for k, v in files.items()}
        self.repos[(repo_id, revision)] = Repo(blobs, gated, info_safetensors)

    def start(self) -> FakeHub:
        self._server, self._thread, self.url = serve(type("Handler", (_Handler,), {"hub": self}))
        return self

    def stop(self) -> None:
        shut(self._server, self._thread)
        self._server = None

    # --- the API -----------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append((method, path, headers))
        m = _INFO.match(path)
        if m and method == "GET":
            return self._info(unquote(m["repo"]), unquote(m["rev"] or "main"))
        m = _RESOLVE.match(path)
        if m and method in ("GET", "HEAD"):
            return self._resolve(unquote(m["repo"]), unquote(m["rev"]), unquote(m["file"]), headers,
                                 method == "HEAD")
        return _error(404, "RepoNotFound", f"no route {path}")

    def _repo(self, repo_id: str, rev: str) -> tuple[Repo | None, tuple[int, dict[str, str], bytes] | None]:
        if not any(r == repo_id for r, _ in self.repos):
            return None, _error(404, "RepoNotFound", "Repository not found")
        repo = self.repos.get((repo_id, rev))
        if repo is None:
            return None, _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo, None

    def _info(self, repo_id: str, rev: str) -> tuple[int, dict[str, str], bytes]:
        repo, err = self._repo(repo_id, rev)
        if err is not None or repo is None:
            return err or _error(404, "RepoNotFound", "Repository not found")
        info: dict[str, Any] = {"id": repo_id, "modelId": repo_id, "sha": _sha(repo_id, rev),
                                "private": False, "gated": "manual" if repo.gated else False,
                                "siblings": [{"rfilename": f} for f in sorted(repo.files)]}
        if repo.info_safetensors:
            counts: dict[str, int] = {}
            for name, blob in repo.files.items():
                if name.endswith(".safetensors"):
                    for dtype, n in _header_counts(blob).items():
                        counts[dtype] = counts.get(dtype, 0) + n
            if counts:
                info["safetensors"] = {"parameters": counts, "total": sum(counts.values())}
        return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()

    def _resolve(self, repo_id: str, rev: str, name: str, headers: dict[str, str],
                 head: bool) -> tuple[int, dict[str, str], bytes]:
        repo, err = self._repo(repo_id, rev)
        if err is not None or repo is None:
            return err or _error(404, "RepoNotFound", "Repository not found")
        sha = _sha(repo_id, rev)
        if repo.gated:
            auth = headers.get("authorization", "")
            if auth.removeprefix("Bearer ") not in self.tokens:
                return _error(401, "GatedRepo", "Access to model is restricted; you must be authenticated")
        if name not in repo.files:
            code, hdrs, body = _error(404, "EntryNotFound", f"{name} does not exist")
            return code, {**hdrs, "X-Repo-Commit": sha}, body
        blob = repo.files[name]
        out = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(blob).hexdigest()}"',
               "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        status, body = 200, blob
        rng = re.match(r"bytes=(\d+)-(\d*)", headers.get("range", ""))
        if rng and not head:
            start = int(rng[1])
            end = min(int(rng[2]) if rng[2] else len(blob) - 1, len(blob) - 1)
            body = blob[start:end + 1]
            status = 206
            out["Content-Range"] = f"bytes {start}-{end}/{len(blob)}"
        out["Content-Length"] = str(len(body))
        return status, out, b"" if head else body


def _sha(repo_id: str, rev: str) -> str:
    return hashlib.sha1(f"{repo_id}@{rev}".encode()).hexdigest()


def _header_counts(blob: bytes) -> dict[str, int]:
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    counts: dict[str, int] = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        size = 1
        for d in t["shape"]:
            size *= d
        counts[t["dtype"]] = counts.get(t["dtype"], 0) + size
    return counts


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": message}).encode()
    return status, {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json",
                    "Content-Length": str(len(body))}, body


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out, body = self.hub.handle(self.command, url.path, headers)
        self.send_response(status)
        for k, v in out.items():
            self.send_header(k, v)
        if "Content-Length" not in out:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


# --- the panel's models, as the Hub describes them -------------------------------------------------
# The configs hold the real models' published sizes (their config.json on the Hub), so the
# parameter counts sizing finds are the real ones: MedGemma 27B 27.0B, PMC-LLaMA 13B 13.0B,
# BioMedLM 2.7B, Llama 3.1 70B 70.6B, BERT-base encoders 0.11B.

MEDGEMMA_27B = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": 5376,
                "intermediate_size": 21504, "num_hidden_layers": 62, "num_attention_heads": 32,
                "num_key_value_heads": 16, "head_dim": 128, "vocab_size": 262208,
                "max_position_embeddings": 131072, "sliding_window": 1024, "torch_dtype": "bfloat16"}
PMC_LLAMA_13B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 5120,
                 "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40,
                 "vocab_size": 32001, "max_position_embeddings": 2048, "tie_word_embeddings": False,
                 "torch_dtype": "float32"}
BIOMEDLM = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 2560, "n_layer": 32,
            "n_head": 20, "n_positions": 1024, "vocab_size": 28896, "torch_dtype": "float32"}
LLAMA_70B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
             "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
             "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
             "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


def bert_base(vocab: int) -> dict:
    return {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": vocab,
            "max_position_embeddings": 512, "torch_dtype": "float32"}


def pytorch_bin_repo(config: dict) -> dict[str, bytes | dict]:
    """A repo with .bin weights only (no safetensors): the Hub knows its size from config.json alone."""
    return {"config.json": config, "pytorch_model.bin.index.json": {"weight_map": {}}}


def add_panel(hub: FakeHub) -> None:
    """The oncology panel's local models, laid out as their Hub repos are."""
    hub.add("google/medgemma-27b-text-it",
            {"config.json": MEDGEMMA_27B, **safetensors_files(causal_lm_tensors(MEDGEMMA_27B), shards=12)},
            gated=True)
    hub.add("axiong/PMC_LLaMA_13B", pytorch_bin_repo(PMC_LLAMA_13B))
    hub.add("stanford-crfm/BioMedLM", pytorch_bin_repo(BIOMEDLM))
    hub.add("meta-llama/Llama-3.1-70B-Instruct",
            {"config.json": LLAMA_70B, **safetensors_files(causal_lm_tensors(LLAMA_70B), shards=30)},
            info_safetensors=False)
    hub.add("cambridgeltl/SapBERT-from-PubMedBERT-fulltext", pytorch_bin_repo(bert_base(30522)))
    hub.add("michiyasunaga/BioLinkBERT-base", pytorch_bin_repo(bert_base(28895)))
    hub.add("microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext",
            pytorch_bin_repo(bert_base(30522)))


@pytest.fixture(name="hub")
def hf_hub_fixture(tmp_path, monkeypatch):
    """The fake Hub with the panel's models, ``HF_ENDPOINT`` pointing at it, the Hub switched on for
    huggingface_hub (conftest switches it off for every other test), and empty caches."""
    import huggingface_hub.constants

    fake = FakeHub().start()
    add_panel(fake)
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("MEDBENCH_CACHE", str(tmp_path / "medbench-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    try:
        yield fake
    finally:
        fake.stop()
