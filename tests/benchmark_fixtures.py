"""Local copies of the named benchmarks, in each dataset repository's real layout and schema.

Written with ``datasets`` itself, so column types (ClassLabel answers, lists of texts) and the
feature metadata stored in the parquet files are the ones ``datasets`` reads from the Hub:

- ``medqa/``     GBaker/MedQA-USMLE-4-options-hf: id, sent1, sent2, ending0-3, label (int)
- ``medmcqa/data/{split}-00000-of-00001.parquet``  openlifescienceai/medmcqa: id, question,
                 opa-opd, cop (ClassLabel a-d), choice_type, exp, subject_name, topic_name
- ``pubmedqa/pubmed_qa_labeled_fold0_source/{split}/0000.parquet``  bigbio/pubmed_qa's parquet
                 export, source schema: QUESTION, CONTEXTS, LABELS, MESHES, YEAR,
                 reasoning_required_pred, reasoning_free_pred, final_decision, LONG_ANSWER
- ``mmlu/{subject}/{split}-00000-of-00001.parquet``  cais/mmlu: question, subject, choices,
                 answer (ClassLabel A-D)

MedQA, MedMCQA and MMLU rows are written here (short, made-up items, some with the
awkward characters real rows have: braces, quotes, surrounding blanks). PubMedQA's rows are
the shared expert-labelled items of ../shared/data/pubmedqa_200.jsonl converted back to the
Hub schema: its context was the abstract's sections joined with "\n", so it splits back into
CONTEXTS. The shared file lacks the section labels and the two reasoning columns: LABELS gets
"UNLABELLED" per section and both reasoning columns repeat final_decision.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import ClassLabel, Dataset, Features, Sequence, Value

MEDQA_FEATURES = Features({
    "id": Value("string"), "sent1": Value("string"), "sent2": Value("string"),
    "ending0": Value("string"), "ending1": Value("string"), "ending2": Value("string"),
    "ending3": Value("string"), "label": Value("int64"),
})
MEDMCQA_FEATURES = Features({
    "id": Value("string"), "question": Value("string"), "opa": Value("string"), "opb": Value("string"),
    "opc": Value("string"), "opd": Value("string"), "cop": ClassLabel(names=["a", "b", "c", "d"]),
    "choice_type": Value("string"), "exp": Value("string"), "subject_name": Value("string"),
    "topic_name": Value("string"),
})
PUBMEDQA_FEATURES = Features({
    "QUESTION": Value("string"), "CONTEXTS": Sequence(Value("string")), "LABELS": Sequence(Value("string")),
    "MESHES": Sequence(Value("string")), "YEAR": Value("string"),
    "reasoning_required_pred": Value("string"), "reasoning_free_pred": Value("string"),
    "final_decision": Value("string"), "LONG_ANSWER": Value("string"),
})
MMLU_FEATURES = Features({
    "question": Value("string"), "subject": Value("string"), "choices": Sequence(Value("string")),
    "answer": ClassLabel(names=["A", "B", "C", "D"]),
})

_VIGNETTES = [
    ("A 45-year-old man has crushing chest pain radiating to the left arm for 40 minutes. "
     "ECG shows ST elevation in II, III and aVF. Which artery is most likely occluded?",
     ["Left anterior descending", "Right coronary", "Left circumflex", "Left main"], 1),
    ("A 23-year-old woman has fatigue, a haemoglobin of 9 g/dL and a low MCV. Ferritin is low. "
     "What is the most appropriate next step?",
     ["Oral iron", "Vitamin B12 injections", "Bone marrow biopsy", "Blood transfusion"], 0),
    ("A newborn has bilious vomiting; an abdominal X-ray shows a 'double bubble' sign. "
     "Which condition is most associated?",
     ["Pyloric stenosis", "Hirschsprung disease", "Down syndrome", "Cystic fibrosis"], 2),
    ("  A 60-year-old smoker has haemoptysis and hypercalcaemia. Which tumour type is likely?  ",
     ["Small cell carcinoma", "Adenocarcinoma", "Large cell carcinoma", "Squamous cell carcinoma"], 3),
    ("Which drug reverses the effect of {heparin} in an overdose?",
     ["Vitamin K", "Protamine sulfate", "Idarucizumab", "Andexanet alfa"], 1),
    ('A patient says "I can\'t see the left half of things". Where is the lesion?',
     ["Left optic nerve", "Optic chiasm", "Right optic tract", "Left occipital lobe"], 2),
    ("A 30-year-old woman has heat intolerance, weight loss and exophthalmos. Diagnosis?",
     ["Graves disease", "Hashimoto thyroiditis", "Toxic adenoma", "De Quervain thyroiditis"], 0),
    ("Which vitamin deficiency causes Wernicke encephalopathy?",
     ["Vitamin B1 (thiamine)", "Vitamin B3", "Vitamin B6", "Vitamin B12"], 0),
]


def _rows_medqa(split: str, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        q, opts, label = _VIGNETTES[(i + len(split)) % len(_VIGNETTES)]
        rows.append({"id": f"{split}-{i:05d}", "sent1": q, "sent2": "",
                     **{f"ending{k}": o for k, o in enumerate(opts)}, "label": label})
    return rows


def _rows_medmcqa(split: str, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        q, opts, label = _VIGNETTES[(i + 3 * len(split)) % len(_VIGNETTES)]
        rows.append({"id": f"{i:08x}-{split[:3]}-medmcqa", "question": q.strip(),
                     **{f"op{x}": o for x, o in zip("abcd", opts, strict=True)}, "cop": label,
                     "choice_type": "single", "exp": "Explanation: see standard texts." if i % 2 else None,
                     "subject_name": "Medicine", "topic_name": None})
    return rows


def _rows_mmlu(subject: str, split: str, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        q, opts, label = _VIGNETTES[(i + len(subject) + len(split)) % len(_VIGNETTES)]
        rows.append({"question": q + ("\n" if i % 3 == 0 else ""), "subject": subject,
                     "choices": opts, "answer": label})
    return rows


def _write(rows: list[dict], features: Features, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(rows, features=features).to_parquet(str(path))
    return path


SPLIT_ROWS = {"train": 6, "validation": 5, "test": 8}


def build_medqa(root: Path) -> Path:
    """The Hub repository holds train.json / dev.json / test.json; here as parquet files."""
    folder = root / "medqa"
    for split, n in SPLIT_ROWS.items():
        _write(_rows_medqa(split, n), MEDQA_FEATURES, folder / f"{split}.parquet")
    return folder


def build_medqa_json(root: Path) -> Path:
    """The Hub layout itself: JSON lines in train.json / dev.json / test.json ("dev" is validation)."""
    folder = root / "medqa-json"
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train"), ("validation", "dev"), ("test", "test")):
        rows = _rows_medqa(split, SPLIT_ROWS[split])
        (folder / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def build_medmcqa(root: Path) -> Path:
    folder = root / "medmcqa"
    for split in ("train", "validation"):
        _write(_rows_medmcqa(split, SPLIT_ROWS[split]), MEDMCQA_FEATURES,
               folder / "data" / f"{split}-00000-of-00001.parquet")
    test = [{**r, "cop": -1, "exp": ""} for r in _rows_medmcqa("test", 3)]  # no public answers
    _write(test, MEDMCQA_FEATURES, folder / "data" / "test-00000-of-00001.parquet")
    return folder


def pubmedqa_rows(shared_jsonl: Path) -> list[dict]:
    """The shared JSONL items in bigbio/pubmed_qa's source schema, in file order."""
    rows = []
    for line in shared_jsonl.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        contexts = item["context"].split("\n")
        meta = item.get("meta") or {}
        rows.append({
            "QUESTION": item["question"], "CONTEXTS": contexts, "LABELS": ["UNLABELLED"] * len(contexts),
            "MESHES": meta.get("meshes") or [], "YEAR": meta.get("year"),
            "reasoning_required_pred": item["answer"], "reasoning_free_pred": item["answer"],
            "final_decision": item["answer"], "LONG_ANSWER": item.get("reference") or "",
        })
    return rows


def build_pubmedqa(root: Path, shared_jsonl: Path) -> Path:
    """All shared items as the test split; the first 20 again as train and 5 as validation."""
    folder = root / "pubmedqa"
    config = folder / "pubmed_qa_labeled_fold0_source"
    rows = pubmedqa_rows(shared_jsonl)
    for split, part in (("test", rows), ("train", rows[:20]), ("validation", rows[20:25])):
        _write(part, PUBMEDQA_FEATURES, config / split / "0000.parquet")
    return folder


MMLU_SUBJECTS = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
                 "medical_genetics", "professional_medicine")


def build_mmlu(root: Path) -> Path:
    folder = root / "mmlu"
    for subject in MMLU_SUBJECTS:
        for split, n in (("test", 8), ("validation", 4), ("dev", 5)):
            _write(_rows_mmlu(subject, split, n), MMLU_FEATURES,
                   folder / subject / f"{split}-00000-of-00001.parquet")
    return folder


def build_all(root: Path, shared_pubmedqa: Path) -> dict[str, Path]:
    """Every benchmark's local copy under ``root``, by catalogue name."""
    return {
        "medqa": build_medqa(root),
        "medmcqa": build_medmcqa(root),
        "pubmedqa": build_pubmedqa(root, shared_pubmedqa),
        "mmlu": build_mmlu(root),
    }


def data_files(name: str, folder: Path, subject: str | None = None) -> dict[str, str]:
    """Split -> file of a local copy, for loaders that take explicit files (lm-eval's task config)."""
    three = ("train", "validation", "test")
    if name == "medqa":
        return {s: str(folder / f"{s}.parquet") for s in three}
    if name == "medmcqa":
        return {s: str(folder / "data" / f"{s}-00000-of-00001.parquet") for s in three}
    if name == "pubmedqa":
        return {s: str(folder / "pubmed_qa_labeled_fold0_source" / s / "0000.parquet") for s in three}
    if name == "mmlu":
        splits = ("test", "validation", "dev")
        return {s: str(folder / str(subject) / f"{s}-00000-of-00001.parquet") for s in splits}
    raise KeyError(name)


def seed_hub_cache(cache: Path, repo_id: str, revision: str, files: dict[str, str],
                   config: str = "default") -> Path:
    """Leave ``files`` in a datasets cache as a Hub download of ``repo_id`` at ``revision`` leaves them.

    ``datasets`` caches a Hub dataset under ``<namespace>___<snake_name>/<config>/<version>/<commit>``
    and, offline, serves the latest such folder. The packaged parquet builder (the one a parquet
    Hub repository is read with) prepares the files; the folder is then put where the download
    would have put it: what a machine that loaded the benchmark with network holds afterwards.
    """
    import shutil

    from datasets.naming import camelcase_to_snakecase
    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo_id.split("/")
    builder = Parquet(cache_dir=str(cache / ".build"), dataset_name=name, config_name=config, hash=revision,
                      data_files=files)
    builder.download_and_prepare()
    folder = cache / f"{namespace}___{camelcase_to_snakecase(name)}" / config
    dest = folder / str(builder.config.version) / revision
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(builder.cache_dir, dest)
    shutil.rmtree(cache / ".build")
    return dest
