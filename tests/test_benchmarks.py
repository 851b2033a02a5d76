"""Named benchmarks: a user writes `questions: {benchmark: medqa}` and gets the harness's items and prompts.

Local copies in each dataset's real Hub schema stand in for the Hub (tests/benchmark_fixtures.py);
lm-evaluation-harness's own task definitions, pointed at the same files, say what every prompt
and every scored continuation must be.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from launcher.scoring.extract import extract_choice
from runner.benchmarks import (
    BENCHMARKS,
    BenchmarkSource,
    DatasetUnavailable,
    SchemaChanged,
    UnknownBenchmark,
    UnknownSplit,
    UnknownSubject,
)
from runner.benchmarks.prompts import loglikelihood_requests, prompts_for
from runner.benchmarks.sampling import sample_rows
from runner.benchmarks.to_questions import load_benchmark, source_fingerprint
from runner.config import check_template, parse_config
from runner.errors import InputError
from runner.questions import dump_questions, load_questions
from tests import benchmark_fixtures as fx
from tests.conftest import SMOLLM2_GGUF, run_cli, write

ALL = [("medqa", None), ("medmcqa", None), ("pubmedqa", None)] + [("mmlu", s) for s in fx.MMLU_SUBJECTS]
HARNESS_YAML = {"medqa": "medqa/medqa.yaml", "medmcqa": "medmcqa/medmcqa.yaml",
                "pubmedqa": "pubmedqa/pubmedqa.yaml", "mmlu": "mmlu/default/mmlu_{subject}.yaml"}


@pytest.fixture(scope="module", autouse=True)
def datasets_cache(tmp_path_factory):
    """`datasets` writes its Arrow cache into a scratch folder, never the user's."""
    import datasets

    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("datasets-cache")
    yield datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = old


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("benchmarks")
    return {"medqa": fx.build_medqa(root), "medqa-json": fx.build_medqa_json(root),
            "medmcqa": fx.build_medmcqa(root), "mmlu": fx.build_mmlu(root)}


@pytest.fixture(scope="module")
def pubmedqa_copy(tmp_path_factory, pubmedqa) -> Path:
    return fx.build_pubmedqa(tmp_path_factory.mktemp("pubmedqa"), pubmedqa)


def local(name: str, copies: dict[str, Path], request) -> Path:
    return request.getfixturevalue("pubmedqa_copy") if name == "pubmedqa" else copies[name]


def harness_task(tmp: Path, name: str, subject: str | None, folder: Path):
    """lm-eval's own task for this benchmark, its dataset swapped for the local copy's files."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    task_name = f"medbench_check_{name}_{subject or 'all'}"
    config = {
        "include": str(Path(lm_eval.tasks.__file__).parent / HARNESS_YAML[name].format(subject=subject)),
        "task": task_name,
        "dataset_path": "parquet",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": fx.data_files(name, folder, subject)},
    }
    (tmp / task_name).mkdir()
    (tmp / task_name / "task.yaml").write_text(yaml.safe_dump(config))
    manager = TaskManager(include_defaults=False, include_path=str(tmp / task_name))
    return manager.load([task_name])["tasks"][task_name]


# --- prompts equal to the harness's ------------------------------------------------------


@pytest.mark.parametrize(("name", "subject"), ALL, ids=[f"{n}-{s}" if s else n for n, s in ALL])
def test_every_document_gets_the_harness_prompt_continuations_and_gold(name, subject, copies, request,
                                                                       tmp_path):
    folder = local(name, copies, request)
    task = harness_task(tmp_path, name, subject, folder)
    task.build_all_requests()
    harness: dict[int, list] = {}
    for inst in sorted(task.instances, key=lambda i: (i.doc_id, i.idx)):
        harness.setdefault(inst.doc_id, []).append(inst)

    source = BenchmarkSource(benchmark=name, subject=subject, path=str(folder))
    questions, _ = load_benchmark(source, tmp_path)
    recipe = prompts_for(source).loglikelihood
    assert [q.meta["row"] for q in questions] == sorted(harness)
    for q in questions:
        insts = harness[q.meta["row"]]
        assert loglikelihood_requests(q, recipe) == [i.arguments for i in insts], q.id
        doc = insts[0].doc
        target, choices = task.doc_to_target(doc), task.doc_to_choice(doc)
        gold = target if isinstance(target, int) else choices.index(target)
        assert list(q.options)[gold] == q.gold_letter


@pytest.mark.parametrize(("name", "subject"), ALL, ids=[f"{n}-{s}" if s else n for n, s in ALL])
def test_dataset_config_split_and_task_are_the_harness_task_definitions(name, subject):
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    harness = load_yaml(Path(lm_eval.tasks.__file__).parent / HARNESS_YAML[name].format(subject=subject))
    bench = BENCHMARKS[name]
    assert harness["dataset_path"] == bench.dataset
    # PubMedQA's config is a folder of the parquet export (the script-era config name).
    assert harness.get("dataset_name") == (bench.config_for(subject) or bench.data_dir)
    assert harness["test_split"] == bench.default_split
    assert harness["task"] == bench.task_for(subject)
    assert harness.get("target_delimiter", " ") == bench.loglikelihood(subject).target_delimiter


def test_limit_without_seed_takes_the_rows_the_harness_limit_takes(copies, tmp_path):
    task = harness_task(tmp_path, "medqa", None, copies["medqa"])
    task.build_all_requests(limit=3)
    source = BenchmarkSource(benchmark="medqa", path=str(copies["medqa"]), limit=3)
    questions, _ = load_benchmark(source, tmp_path)
    assert [q.meta["row"] for q in questions] == sorted({i.doc_id for i in task.instances}) == [0, 1, 2]


def test_every_prompt_is_a_valid_prompt_template_and_the_instruction_answer_is_extracted(copies, tmp_path):
    for name, subject in ALL:
        prompts = prompts_for(BenchmarkSource(benchmark=name, subject=subject))
        assert check_template(prompts.loglikelihood.prompt_template)
        assert check_template(prompts.instruction_template)
    source = BenchmarkSource(benchmark="mmlu", subject="anatomy", path=str(copies["mmlu"]))
    (q, *_), _ = load_benchmark(source, tmp_path)
    closing = '"Answer: X", where X is the letter of that option.'
    assert prompts_for(source).instruction_template.endswith(closing)
    reply = "The tumour secretes PTHrP, which points to squamous cell.\nAnswer: D"
    assert extract_choice(reply, q.options) == "D"


# --- loading, sampling, ids -------------------------------------------------------------


def test_pubmedqa_by_name_holds_the_shared_items_with_stable_ids(pubmedqa, pubmedqa_copy, tmp_path):
    source = BenchmarkSource(benchmark="pubmedqa", path=str(pubmedqa_copy))
    questions, prov = load_benchmark(source, tmp_path)
    shared = load_questions(pubmedqa)
    assert len(questions) == len(shared) == 200
    for ours, theirs in zip(questions, shared, strict=True):
        assert (ours.question, ours.context, ours.options, ours.answer, ours.reference) == \
               (theirs.question, theirs.context, theirs.options, theirs.answer, theirs.reference)
    assert [q.id for q in questions[:3]] == ["pubmedqa-test-0", "pubmedqa-test-1", "pubmedqa-test-2"]
    assert [q.index for q in questions[:3]] == [1, 2, 3]
    again, _ = load_benchmark(source, tmp_path)
    assert dump_questions(again) == dump_questions(questions)
    assert prov["benchmark"] == "pubmedqa" and prov["split"] == "test" and prov["n_questions"] == 200


def test_seeded_sample_is_stable_nested_and_in_dataset_order(copies, tmp_path):
    def rows(limit, seed):
        src = BenchmarkSource(benchmark="mmlu", subject="anatomy", path=str(copies["mmlu"]),
                              limit=limit, seed=seed)
        return [q.meta["row"] for q in load_benchmark(src, tmp_path)[0]]

    four = rows(4, 7)
    assert four == sorted(four) and len(set(four)) == 4 and four == rows(4, 7)
    assert set(rows(2, 7)) <= set(four) and set(four) <= set(rows(6, 7))
    assert rows(4, 8) != four
    assert rows(50, 7) == list(range(8))  # a limit over the split's size takes it all
    assert sample_rows(100_000, 3, 0) == sample_rows(100_000, 3, 0) and len(sample_rows(100_000, 3, 0)) == 3


def test_the_hub_layout_in_json_and_a_single_parquet_file_give_the_same_questions(copies, tmp_path):
    json_copy = BenchmarkSource(benchmark="medqa", split="validation", path=str(copies["medqa-json"]))
    parquet_copy = BenchmarkSource(benchmark="medqa", split="validation", path=str(copies["medqa"]))
    one_file = BenchmarkSource(benchmark="medqa", split="validation",
                               path=str(copies["medqa"] / "validation.parquet"))
    got = [load_benchmark(s, tmp_path) for s in (json_copy, parquet_copy, one_file)]
    assert dump_questions(got[0][0]) == dump_questions(got[1][0]) == dump_questions(got[2][0])
    assert got[0][0][0].id == "medqa-validation-0" and got[0][0][0].meta["source_id"] == "validation-00000"
    # The digest is of the bytes read: the run id (which covers the provenance) tells JSON from parquet.
    assert got[0][1]["files_sha256"] != got[1][1]["files_sha256"] == got[2][1]["files_sha256"]


def test_a_relative_path_is_read_from_the_config_folder(copies):
    source = BenchmarkSource(benchmark="medmcqa", path="medmcqa")
    questions, prov = load_benchmark(source, copies["medmcqa"].parent)
    assert prov["split"] == "validation" and len(questions) == fx.SPLIT_ROWS["validation"]
    assert questions[1].meta["explanation"].startswith("Explanation")
    assert "explanation" not in questions[0].meta  # an empty explanation is left out


def test_provenance_records_benchmark_split_revision_and_sample(copies, tmp_path):
    source = BenchmarkSource(benchmark="mmlu", subject="college_medicine", path=str(copies["mmlu"]),
                             limit=3, seed=1)
    questions, prov = load_benchmark(source, tmp_path)
    keys = ("benchmark", "subject", "split", "dataset", "config", "lm_eval_task", "limit", "seed",
            "n_questions", "rows_in_split", "license", "source")
    assert {k: prov[k] for k in keys} == {
        "benchmark": "mmlu", "subject": "college_medicine", "split": "test", "dataset": "cais/mmlu",
        "config": "college_medicine", "lm_eval_task": "mmlu_college_medicine", "limit": 3, "seed": 1,
        "n_questions": 3, "rows_in_split": 8, "license": "MIT", "source": "local"}
    assert prov["pinned_revision"] == BENCHMARKS["mmlu"].revision and prov["revision"] is None
    assert prov["loglikelihood"]["continuations"] == "letters"
    assert all(q.id.startswith("mmlu-college_medicine-test-") for q in questions)
    json.dumps(prov)  # goes into run.json as it is
    # The run id covers the sample and the data, not where the local copy lies.
    moved = BenchmarkSource(**{**source.model_dump(), "path": "mmlu"})
    assert source_fingerprint(load_benchmark(moved, copies["mmlu"].parent)[1]) == source_fingerprint(prov)
    other_seed = BenchmarkSource(**{**source.model_dump(), "seed": 2})
    assert source_fingerprint(load_benchmark(other_seed, tmp_path)[1]) != source_fingerprint(prov)


# --- errors: one line, exit 2 -----------------------------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ({"benchmark": "medqaa"}, "unknown benchmark 'medqaa'; expected one of medqa, medmcqa, pubmedqa, mmlu"),
    ({"benchmark": "medqa", "split": "dev"}, "benchmark 'medqa' has no split 'dev'; expected one of train, "
                                             "validation, test"),
    ({"benchmark": "medmcqa", "split": "test"}, "MedMCQA's test answers are not public"),
    ({"benchmark": "mmlu"}, "benchmark 'mmlu' needs a subject: one of anatomy, clinical_knowledge"),
    ({"benchmark": "mmlu", "subject": "virology"}, "unknown mmlu subject 'virology'"),
    ({"benchmark": "pubmedqa", "subject": "anatomy"}, "benchmark 'pubmedqa' has no subjects"),
    ({"benchmark": "medqa", "seed": 0}, "seed only chooses which rows a limit keeps"),
    ({"benchmark": "medqa", "limit": 0}, "greater than or equal to 1"),
    ({"benchmark": "medqa", "revision": "main"}, "full commit hash"),
    ({"benchmark": "medqa", "splt": "test"}, "Extra inputs are not permitted"),
])
def test_a_bad_source_is_one_clear_line(fields, message):
    with pytest.raises(ValidationError) as e:
        BenchmarkSource.model_validate(fields)
    assert message in str(e.value)


@pytest.mark.parametrize(("fields", "error"), [
    ({"benchmark": "nope"}, UnknownBenchmark),
    ({"benchmark": "mmlu", "subject": "virology"}, UnknownSubject),
    ({"benchmark": "medqa", "split": "dev"}, UnknownSplit),
])
def test_load_benchmark_checks_names_itself_with_input_errors(fields, error, tmp_path):
    # A source that skipped validation (built in code) still fails as bad input, exit 2.
    with pytest.raises(error) as e:
        load_benchmark(BenchmarkSource.model_construct(**fields), tmp_path)
    assert isinstance(e.value, InputError) and e.value.exit_code == 2 and "\n" not in str(e.value)


def test_a_bad_source_in_models_yaml_names_the_line(tmp_path):
    text = "questions:\n  benchmark: mmlu\n  subject: virology\nmodels:\n  - id: x\n    backend: echo\n"
    with pytest.raises(InputError) as e:
        parse_config(text, "models.yaml", tmp_path)
    assert str(e.value).startswith("models.yaml:1: questions: unknown mmlu subject 'virology'")
    assert e.value.exit_code == 2 and "\n" not in str(e.value)


def test_no_network_and_no_cache_names_the_dataset_and_how_to_download_it(tmp_path):
    with pytest.raises(DatasetUnavailable) as e:
        load_benchmark(BenchmarkSource(benchmark="mmlu", subject="anatomy"), tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and e.value.exit_code == 2
    assert "cais/mmlu@c30699e is not in the datasets cache" in msg
    assert "launcher benchmarks mmlu --subject anatomy --split test --download" in msg


@pytest.fixture
def seeded_cache(tmp_path, monkeypatch):
    """An empty datasets cache of this test's own, seeded as a machine with network would have left it."""
    import datasets

    cache = tmp_path / "datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def test_offline_a_cached_download_is_used_and_its_revision_recorded(copies, seeded_cache, tmp_path):
    pinned = BENCHMARKS["mmlu"].revision
    fx.seed_hub_cache(seeded_cache, "cais/mmlu", pinned, fx.data_files("mmlu", copies["mmlu"], "anatomy"),
                      config="anatomy")
    questions, prov = load_benchmark(BenchmarkSource(benchmark="mmlu", subject="anatomy"), tmp_path)
    assert (prov["source"], prov["revision"], prov["pinned_revision"]) == ("hub", pinned, pinned)
    same_files = BenchmarkSource(benchmark="mmlu", subject="anatomy", path=str(copies["mmlu"]))
    local_copy, _ = load_benchmark(same_files, tmp_path)
    assert dump_questions(questions) == dump_questions(local_copy)


def test_offline_a_cached_other_revision_is_refused_unless_asked_for(copies, seeded_cache, tmp_path):
    other = "0123456789abcdef0123456789abcdef01234567"
    fx.seed_hub_cache(seeded_cache, "GBaker/MedQA-USMLE-4-options-hf", other,
                      fx.data_files("medqa", copies["medqa"]))
    with pytest.raises(DatasetUnavailable) as e:
        load_benchmark(BenchmarkSource(benchmark="medqa"), tmp_path)
    assert str(e.value).startswith("medqa: the datasets cache holds GBaker/MedQA-USMLE-4-options-hf@0123456, "
                                   "not the pinned 17af935, and the Hub cannot be reached")
    questions, prov = load_benchmark(BenchmarkSource(benchmark="medqa", revision=other), tmp_path)
    assert prov["revision"] == other and len(questions) == fx.SPLIT_ROWS["test"]


def _medqa_file(tmp_path: Path, **change) -> Path:
    rows = [{"id": f"t-{i}", "sent1": f"Question {i}?", "sent2": "", "ending0": "a", "ending1": "b",
             "ending2": "c", "ending3": "d", "label": i % 4} for i in range(3)]
    rows[2].update(change)
    features = fx.MEDQA_FEATURES.copy()
    for column in [c for c in features if c not in rows[0]]:
        del features[column]
    return fx._write([{k: v for k, v in r.items() if k in features} for r in rows], features,
                     tmp_path / "test.parquet")


def test_a_dataset_whose_columns_changed_is_one_line_and_exit_2(tmp_path):
    path = _medqa_file(tmp_path)
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(path).drop(["ending3"]), path)
    with pytest.raises(SchemaChanged) as e:
        load_benchmark(BenchmarkSource(benchmark="medqa", path=str(path)), tmp_path)
    assert str(e.value) == (
        "medqa (local copy) split test: schema changed: missing column(s) ending3 "
        "(has: id, sent1, sent2, ending0, ending1, ending2, label); "
        "medbench maps id, sent1, ending0, ending1, ending2, ending3, label")
    assert e.value.exit_code == 2


def test_a_value_outside_the_schema_names_its_row(tmp_path):
    path = _medqa_file(tmp_path, label=7)
    with pytest.raises(SchemaChanged, match=r"^medqa \(local copy\) split test row 2: schema changed: "
                                            r"label is 7, expected an option number 0-3$"):
        load_benchmark(BenchmarkSource(benchmark="medqa", path=str(path)), tmp_path)


def test_a_local_copy_without_the_split_says_what_it_has(tmp_path):
    _medqa_file(tmp_path / "only-test")
    with pytest.raises(UnknownSplit, match=r"holds no files of split 'train' \(found: test;"):
        load_benchmark(BenchmarkSource(benchmark="medqa", split="train", path="only-test"), tmp_path)
    with pytest.raises(DatasetUnavailable, match="path .*nowhere: no such file or folder"):
        load_benchmark(BenchmarkSource(benchmark="medqa", path="nowhere"), tmp_path)
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetUnavailable, match=r"^medqa: cannot read .*broken\.parquet: .+$"):
        load_benchmark(BenchmarkSource(benchmark="medqa", path="broken.parquet"), tmp_path)


# --- launcher benchmarks ----------------------------------------------------------------


def test_launcher_benchmarks_lists_sizes_splits_and_licences(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert run_cli("benchmarks") == 0
    out = capsys.readouterr().out
    for needle in ("medqa", "train 10178, validation 1272, test* 1273", "CC-BY-SA-4.0",
                   "medmcqa", "validation* 4183", "Apache-2.0", "bigbio/pubmed_qa @ 13a7d15",
                   "professional_medicine", "test* 272, validation 31, dev 5", "MIT"):
        assert needle in out, needle


def test_launcher_benchmarks_name_shows_its_prompts(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert run_cli("benchmarks", "medqa") == 0
    out = capsys.readouterr().out
    assert "'Question: {question}\\n{options}\\nAnswer:'" in out and "option letters" in out
    assert "17af9355ef89fba60de966eabaeba797c695f86e" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["benchmarks", "nosuch"], "unknown benchmark 'nosuch'"),
    (["benchmarks", "mmlu", "--subject", "virology"], "unknown mmlu subject 'virology'"),
    (["benchmarks", "--download"], "need a benchmark name"),
    (["benchmarks", "medqa", "--download"], "is not in the datasets cache"),
])
def test_launcher_benchmarks_errors_are_one_line_exit_2(argv, message, capsys):
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_listing_benchmarks_imports_no_datasets_library():
    code = ("import sys\nfrom launcher.cli import main\nmain(['benchmarks'])\n"
            "import runner.benchmarks\nsys.exit(1 if 'datasets' in sys.modules else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- SmolLM2: the benchmark by name scores as the shared file does -------------------------

N_SMOL = 3


def _smol_config(smollm2_dir: Path, template: str, questions: str, output: Path, name: str) -> str:
    return f"""
        name: {name}
        questions: {questions}
        system_prompt: none
        output: {output}
        models:
          - id: HuggingFaceTB/SmolLM2-135M-Instruct
            path: {smollm2_dir}
            gguf_file: {SMOLLM2_GGUF}
            dtype: float32
            device: cpu
            scoring: loglikelihood
            prompt_format: plain
            prompt_template: {json.dumps(template)}
    """


def _records(output: Path, run_id: str) -> list[dict]:
    folder = output / run_id / "HuggingFaceTB_SmolLM2-135M-Instruct"
    return [json.loads(x) for x in (folder / "responses.jsonl").read_text().splitlines()]


def _same_choices(ours: list[dict], shared: list[dict]) -> None:
    assert len(ours) == len(shared) == N_SMOL
    def in_order(records):
        return sorted(records, key=lambda r: r["index"])

    for a, b in zip(in_order(ours), in_order(shared), strict=True):
        assert a["prompt"] == b["prompt"]
        assert a["option_loglikelihoods"] == pytest.approx(b["option_loglikelihoods"], abs=1e-4)
        assert (a["prediction"], a["prediction_norm"]) == (b["prediction"], b["prediction_norm"])


@pytest.fixture(scope="module")
def shared_file_run(tmp_path_factory, smollm2_dir, pubmedqa) -> list[dict]:
    """SmolLM2 on the first items of the shared PubMedQA file, with lm-eval's PubMedQA prompt."""
    work = tmp_path_factory.mktemp("shared-run")
    lines = [x for x in pubmedqa.read_text().splitlines() if x.strip()][:N_SMOL]
    (work / "q.jsonl").write_text("\n".join(lines) + "\n")
    template = "Abstract: {context}\nQuestion: {question}\nAnswer:"
    write(work / "models.yaml",
          _smol_config(smollm2_dir, template, str(work / "q.jsonl"), work / "out", "shared"))
    assert run_cli("run", str(work / "models.yaml"), "--run-id", "shared") == 0
    return _records(work / "out", "shared")


@pytest.mark.slow
def test_smollm2_on_pubmedqa_by_name_makes_the_shared_file_choices(tmp_path, smollm2_dir, pubmedqa_copy,
                                                                   shared_file_run):
    # models.yaml names the benchmark; the loglikelihood model sets no prompt_template, system
    # prompt or prompt format of its own and gets the harness's (plain, no system prompt).
    write(tmp_path / "models.yaml", f"""
        name: byname
        questions: {{benchmark: pubmedqa, path: {pubmedqa_copy}, limit: {N_SMOL}}}
        output: {tmp_path / "out"}
        models:
          - id: HuggingFaceTB/SmolLM2-135M-Instruct
            path: {smollm2_dir}
            gguf_file: {SMOLLM2_GGUF}
            dtype: float32
            device: cpu
            scoring: loglikelihood
    """)
    assert run_cli("run", str(tmp_path / "models.yaml"), "--run-id", "byname") == 0
    staged = load_questions(tmp_path / "out" / "byname" / "questions.jsonl")
    assert [q.id for q in staged] == [f"pubmedqa-test-{i}" for i in range(N_SMOL)]
    _same_choices(_records(tmp_path / "out", "byname"), shared_file_run)
    info = json.loads((tmp_path / "out" / "byname" / "run.json").read_text())
    assert info["questions_source"]["benchmark"] == "pubmedqa"
    assert info["questions_source"]["split"] == "test"


@pytest.mark.slow
def test_smollm2_on_medqa_by_name_scores_the_option_letters_as_the_harness_does(tmp_path, smollm2_dir,
                                                                                copies):
    # MedQA is scored by the letters " A" .. " D" after the harness's prompt: the plan hands the
    # runner that convention, and with one-character choices acc_norm is acc.
    write(tmp_path / "models.yaml", f"""
        name: medqa-letters
        questions: {{benchmark: medqa, path: {copies["medqa"]}, limit: 2}}
        output: {tmp_path / "out"}
        models:
          - id: HuggingFaceTB/SmolLM2-135M-Instruct
            path: {smollm2_dir}
            gguf_file: {SMOLLM2_GGUF}
            dtype: float32
            device: cpu
            scoring: loglikelihood
    """)
    assert run_cli("run", str(tmp_path / "models.yaml"), "--run-id", "letters") == 0
    folder = tmp_path / "out" / "letters" / "HuggingFaceTB_SmolLM2-135M-Instruct"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["parameters"]["loglikelihood_choices"] == "letters"
    assert manifest["parameters"]["prompt_format"] == "plain"
    source = BenchmarkSource(benchmark="medqa", path=str(copies["medqa"]), limit=2)
    questions, _ = load_benchmark(source, tmp_path)
    recipe = prompts_for(source).loglikelihood
    for rec, q in zip(_records(tmp_path / "out", "letters"), questions, strict=True):
        (context, _), *_ = loglikelihood_requests(q, recipe)
        assert rec["prompt"] == context and len(rec["option_loglikelihoods"]) == 4
        assert rec["prediction"] == rec["prediction_norm"]
        assert rec["response"] == q.options[rec["prediction"]]
