"""Every storage key of a run, in one place (see DESIGN.md, "What a run leaves in storage").

Keys are relative POSIX paths under the storage root (a folder or ``s3://bucket/prefix``)::

    <run_id>/run.json, <run_id>/questions.jsonl
    <run_id>/<model_dir>/N.txt                  answer N, the original tool's layout
    <run_id>/<model_dir>/records/NNNNNN.json    the full record of question N; marks N done
    <run_id>/<model_dir>/responses.jsonl        assembled from the records
    <run_id>/<model_dir>/manifest.json          (shards/<i>.json per shard of a sharded model)
    <run_id>/<model_dir>/vectors/*.npz          an encoder's vectors, one file a batch
    <run_id>/<model_dir>/embeddings.npy         row i = question i+1
    <run_id>/leases/<model_dir>.<shard>.json    who runs the model (shard) now; gone when done
    <run_id>/<model_dir>/similarity/<encoder>-<hash>/<shard>.npz   its answers' similarity vectors
    <run_id>/similarity/<encoder>-<hash>/references.npz           the reference answers' vectors
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass

RUN_JSON = "run.json"
QUESTIONS = "questions.jsonl"
RESPONSES = "responses.jsonl"
MANIFEST = "manifest.json"
RECORDS_DIR = "records"
SHARDS_DIR = "shards"
VECTORS_DIR = "vectors"
EMBEDDINGS_FILE = "embeddings.npy"
RUNNER_LOG = "runner.log"
LEASES_DIR = "leases"
SIMILARITY_DIR = "similarity"
REFERENCES_FILE = "references.npz"

#: Names the layout gives files and folders of its own, in a run's folder or a model's, and
#: those ``launcher report`` writes beside them: a model folder (or run id) by one of these
#: names would mix its files with the layout's.
RESERVED_NAMES = frozenset({
    RUN_JSON, QUESTIONS, RESPONSES, MANIFEST, RECORDS_DIR, SHARDS_DIR, VECTORS_DIR, EMBEDDINGS_FILE,
    RUNNER_LOG, LEASES_DIR, SIMILARITY_DIR, "report.html", "metrics.csv", "metrics.json", "judge",
})


@dataclass(frozen=True)
class Keys:
    run_id: str
    model_dir: str = ""

    @property
    def run_json(self) -> str:
        return f"{self.run_id}/{RUN_JSON}"

    @property
    def questions(self) -> str:
        return f"{self.run_id}/{QUESTIONS}"

    @property
    def model(self) -> str:
        return f"{self.run_id}/{self.model_dir}"

    def answer(self, index: int) -> str:
        return f"{self.model}/{index}.txt"

    def record(self, index: int) -> str:
        return f"{self.model}/{RECORDS_DIR}/{index:06d}.json"

    @property
    def records(self) -> str:
        return f"{self.model}/{RECORDS_DIR}/"

    @property
    def responses(self) -> str:
        return f"{self.model}/{RESPONSES}"

    @property
    def manifest(self) -> str:
        return f"{self.model}/{MANIFEST}"

    def shard_manifest(self, shard: int) -> str:
        return f"{self.model}/{SHARDS_DIR}/{shard}.json"

    def log(self, shard: int = 0, shards: int = 1) -> str:
        return f"{self.model}/{RUNNER_LOG}" if shards == 1 else f"{self.model}/{SHARDS_DIR}/{shard}.log"

    @property
    def vectors(self) -> str:
        return f"{self.model}/{VECTORS_DIR}/"

    def vector_batch(self, indices: list[int]) -> str:
        # Named by what it holds: the same questions give the same key (an identical rewrite on
        # a rerun), different batches never collide.
        digest = hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()[:12]
        return f"{self.vectors}{min(indices):06d}-{max(indices):06d}-{digest}.npz"

    @property
    def embeddings(self) -> str:
        return f"{self.model}/{EMBEDDINGS_FILE}"

    def answer_vectors(self, folder: str) -> str:
        """The model's answers' vectors for one encoder identity (``<encoder>-<hash>``), one file a shard."""
        return f"{self.model}/{SIMILARITY_DIR}/{folder}/"

    def reference_vectors(self, folder: str) -> str:
        """The run's reference answers' vectors for one encoder identity."""
        return f"{self.run_id}/{SIMILARITY_DIR}/{folder}/"

    @property
    def leases(self) -> str:
        return f"{self.run_id}/{LEASES_DIR}/"

    def lease(self, shard: int = 0) -> str:
        """The lease of one shard of the model (shard 0 for a model that is not sharded)."""
        # Flat, so the folder empties (and goes) when the last lease is released. The shard is
        # the last dotted part, so no two (model, shard) pairs share a name.
        return f"{self.leases}{self.model_dir}.{shard}.json"


def record_index(key: str) -> int | None:
    """The question index a record key names, or None for any other key."""
    name = key.rsplit("/", 1)[-1]
    if not name.endswith(".json"):
        return None
    try:
        return int(name[:-5])
    except ValueError:
        return None


_ANSWER = re.compile(r"^[0-9]+\.txt$")
_SHARD_FILE = re.compile(r"^[0-9]+\.(json|log)$")
_MODEL_FILES = frozenset({RESPONSES, MANIFEST, RUNNER_LOG, EMBEDDINGS_FILE})


def is_layout_file(key: str, run_id: str, model_dirs: Collection[str]) -> bool:
    """True for a key that the layout above writes as a file in run ``run_id``, whose models
    are ``model_dirs``: run.json, a model's N.txt, a record, its manifest... A key of any
    other shape was put there by something else."""
    head, _, rel = key.partition("/")
    if head != run_id:
        return False
    parts = rel.split("/")
    if parts in ([RUN_JSON], [QUESTIONS]):
        return True
    if len(parts) < 2 or parts[0] not in model_dirs:
        return False
    rest = parts[1:]
    if len(rest) == 1:
        return rest[0] in _MODEL_FILES or bool(_ANSWER.match(rest[0]))
    if len(rest) == 2:
        folder, name = rest
        return ((folder == RECORDS_DIR and record_index(name) is not None)
                or (folder == SHARDS_DIR and bool(_SHARD_FILE.match(name)))
                or (folder == VECTORS_DIR and name.endswith(".npz")))
    return False
