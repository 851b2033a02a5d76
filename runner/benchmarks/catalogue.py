"""The named benchmarks: where each lives on the Hub, its splits, licence, and how it is asked.

Dataset ids, configs, splits and the log-likelihood prompts follow lm-evaluation-harness's own
task definitions (``lm_eval/tasks/{medqa,medmcqa,pubmedqa,mmlu/default}``, lm-eval 0.4.13);
the tests render every benchmark through the harness's task objects and compare character
for character. Revisions are the Hub commits those datasets resolved to (see each entry).

Log-likelihood prompts are written in our ``prompt_template`` syntax (``{question}``,
``{context}``, ``{options}`` with ``{options}`` = ``"A. text"`` lines), which is what the
runner fills; the harness's text is reproduced exactly by that syntax for all four datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from runner.benchmarks import schemas

Continuations = Literal["letters", "option_texts"]


@dataclass(frozen=True)
class Loglikelihood:
    """How lm-evaluation-harness scores a benchmark by log-likelihood.

    The context is ``prompt_template`` filled with the question (no system prompt, no chat
    template: ``prompt_format: plain``, ``system_prompt: none``). Each option is scored as
    the continuation ``target_delimiter + X`` where X is the option's letter
    (``continuations="letters"``: MedQA, MedMCQA, MMLU score " A" … " D") or the option's
    text (``"option_texts"``: PubMedQA scores " yes" / " no" / " maybe").
    """

    prompt_template: str
    continuations: Continuations
    target_delimiter: str = " "


@dataclass(frozen=True)
class Subject:
    """One MMLU subject: its own Hub config, splits and lm-eval task."""

    name: str
    splits: dict[str, int]
    measures: str

    @property
    def words(self) -> str:
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    dataset: str
    revision: str | None
    license: str
    measures: str
    default_split: str
    lm_eval_task: str
    #: split name -> rows, at the pinned revision (for subjects, see ``subjects``)
    splits: dict[str, int]
    schema: schemas.Schema
    #: Hub config (``load_dataset(dataset, config)``); for MMLU the subject is the config
    config: str | None = None
    #: folder of the dataset repository that holds this config's files (PubMedQA's parquet export)
    data_dir: str | None = None
    #: revision note: where the pin comes from
    revision_note: str = ""
    subjects: dict[str, Subject] = field(default_factory=dict)
    _loglikelihood: Callable[[Subject | None], Loglikelihood] | None = None
    _instruction: Callable[[Subject | None], str] | None = None

    def subject(self, name: str | None) -> Subject | None:
        """The subject entry (``None`` for benchmarks without subjects); names are checked by the caller."""
        return self.subjects[name] if (self.subjects and name is not None) else None

    def splits_for(self, subject: str | None) -> dict[str, int]:
        s = self.subject(subject)
        return s.splits if s else self.splits

    def config_for(self, subject: str | None) -> str | None:
        return subject if self.subjects else self.config

    def local_folder_for(self, subject: str | None) -> str | None:
        """The sub-folder of a local copy in the Hub's layout that holds this config's files."""
        return subject if self.subjects else self.data_dir

    def task_for(self, subject: str | None) -> str:
        return f"{self.lm_eval_task}_{subject}" if self.subjects else self.lm_eval_task

    def id_prefix(self, subject: str | None) -> str:
        return f"{self.name}-{subject}" if self.subjects else self.name

    def loglikelihood(self, subject: str | None) -> Loglikelihood:
        assert self._loglikelihood is not None
        return self._loglikelihood(self.subject(subject))

    def instruction_template(self, subject: str | None) -> str:
        assert self._instruction is not None
        return self._instruction(self.subject(subject))


# --- the instruction prompt for generative models -----------------------------------------
# One documented wording for every multiple-choice benchmark: the question, its lettered
# options, and a closing line the answer extractor reads as an explicit answer phrase
# ("Answer: C"; launcher/scoring/extract.py rule 1).
_CLOSE = (
    "Choose the single best option. Explain your reasoning briefly, then end with a line of "
    'the form "Answer: X", where X is the letter of that option.'
)


def _mc_instruction(intro: str) -> str:
    return f"{intro}\n\n{{question}}\n\n{{options}}\n\n{_CLOSE}"


_PUBMEDQA_INSTRUCTION = (
    "Read the abstract of a biomedical research article (its conclusion removed) and answer "
    "the research question with yes, no or maybe.\n\n"
    "Abstract:\n{context}\n\nQuestion: {question}\n\nOptions:\n{options}\n\n" + _CLOSE
)

# --- lm-evaluation-harness's log-likelihood prompts, in our template syntax ---------------
# medqa_4options (preprocess_medqa.doc_to_text): "Question: Q\nA. a\n…D. d\nAnswer:"
_MEDQA_LL = Loglikelihood("Question: {question}\n{options}\nAnswer:", "letters")
# medmcqa (utils_medmcqa.doc_to_text): "Question: Q\nChoices:\nA. a\n…D. d\nAnswer:"
_MEDMCQA_LL = Loglikelihood("Question: {question}\nChoices:\n{options}\nAnswer:", "letters")
# pubmedqa (preprocess_pubmedqa.doc_to_text), CONTEXTS joined with "\n"; choices yes/no/maybe
_PUBMEDQA_LL = Loglikelihood("Abstract: {context}\nQuestion: {question}\nAnswer:", "option_texts")


def _mmlu_ll(subject: Subject | None) -> Loglikelihood:
    # mmlu/default: the subject's description, then "{{question.strip()}}\nA. …\nAnswer:";
    # the question is stripped when the row is mapped (schemas.mmlu).
    assert subject is not None
    return Loglikelihood(
        f"The following are multiple choice questions (with answers) about {subject.words}.\n\n"
        "{question}\n{options}\nAnswer:",
        "letters",
    )


def _mmlu_instruction(subject: Subject | None) -> str:
    assert subject is not None
    return _mc_instruction(f"The following is a multiple-choice question about {subject.words}.")


def _fixed(value):
    return lambda _subject: value


_MMLU_SUBJECTS = {
    s.name: s
    for s in (
        Subject("anatomy", {"test": 135, "validation": 14, "dev": 5},
                "gross and systems anatomy, at the level of an introductory course"),
        Subject("clinical_knowledge", {"test": 265, "validation": 29, "dev": 5},
                "clinical knowledge: signs, procedures, normal values, first-line management"),
        Subject("college_biology", {"test": 144, "validation": 16, "dev": 5},
                "undergraduate biology: cell and molecular biology, genetics, physiology, evolution"),
        Subject("college_medicine", {"test": 173, "validation": 22, "dev": 5},
                "undergraduate-level medicine and physiology, including short study passages"),
        Subject("medical_genetics", {"test": 100, "validation": 11, "dev": 5},
                "medical genetics: inheritance, genetic disease, cytogenetics, testing"),
        Subject("professional_medicine", {"test": 272, "validation": 31, "dev": 5},
                "USMLE-style clinical vignettes at professional (licensing) level"),
    )
}

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            name="medqa",
            title="MedQA (USMLE, 4 options)",
            dataset="GBaker/MedQA-USMLE-4-options-hf",
            # main on the Hub ("Upload dev.json", 2023-01-30), the last commit of the repo.
            revision="17af9355ef89fba60de966eabaeba797c695f86e",
            revision_note="Hub main, last commit (2023-01-30)",
            license="CC-BY-SA-4.0",
            measures="US medical licensing exam (USMLE Steps 1-3) clinical vignettes: clinical "
                     "knowledge and reasoning, 4 options",
            default_split="test",
            lm_eval_task="medqa_4options",
            splits={"train": 10178, "validation": 1272, "test": 1273},
            schema=schemas.MEDQA,
            _loglikelihood=_fixed(_MEDQA_LL),
            _instruction=_fixed(_mc_instruction(
                "The following is a multiple-choice question from the US medical licensing exam (USMLE).")),
        ),
        Benchmark(
            name="medmcqa",
            title="MedMCQA",
            dataset="openlifescienceai/medmcqa",
            # main on the Hub: "Convert dataset to Parquet (#4)".
            revision="91c6572c454088bf71b679ad90aa8dffcd0d5868",
            revision_note="Hub main, the parquet conversion",
            license="Apache-2.0",
            measures="Indian medical entrance exams (AIIMS, NEET-PG): breadth of medical knowledge "
                     "over 21 subjects, 4 options. Scored on validation: the test answers are not public",
            # The harness scores validation (test_split: validation); test has no answers (cop = -1).
            default_split="validation",
            lm_eval_task="medmcqa",
            splits={"train": 182822, "validation": 4183},
            schema=schemas.MEDMCQA,
            _loglikelihood=_fixed(_MEDMCQA_LL),
            _instruction=_fixed(_mc_instruction(
                "The following is a multiple-choice question from an Indian medical entrance exam "
                "(AIIMS / NEET-PG).")),
        ),
        Benchmark(
            name="pubmedqa",
            title="PubMedQA (expert-labelled, PQA-L)",
            dataset="bigbio/pubmed_qa",
            # The repository's main branch holds a loading script, which `datasets` no longer
            # runs (>= 4.0); its parquet export (refs/convert/parquet) holds the same rows as
            # files, one folder per config (the harness's dataset_name is the folder here).
            # Pinned to that branch's commit "Delete old duckdb index files" (2024-03-08).
            revision="13a7d15476092370cbabb6475390e7e69b74d2f2",
            revision_note="refs/convert/parquet (2024-03-08); main is a loading script",
            data_dir="pubmed_qa_labeled_fold0_source",
            license="MIT",
            measures="reading biomedical research abstracts (conclusion removed) to answer the "
                     "research question yes / no / maybe",
            default_split="test",
            lm_eval_task="pubmedqa",
            splits={"train": 450, "validation": 50, "test": 500},
            schema=schemas.PUBMEDQA,
            _loglikelihood=_fixed(_PUBMEDQA_LL),
            _instruction=_fixed(_PUBMEDQA_INSTRUCTION),
        ),
        Benchmark(
            name="mmlu",
            title="MMLU, medical subjects",
            dataset="cais/mmlu",
            revision="c30699e8356da336a370243923dbaf21066bb9fe",
            revision_note="Hub main (parquet, 2024-03-08)",
            license="MIT",
            measures="exam questions from six medical and biology subjects of MMLU (pick one with "
                     "subject:), 4 options",
            default_split="test",
            lm_eval_task="mmlu",
            splits={},
            schema=schemas.MMLU,
            subjects=_MMLU_SUBJECTS,
            _loglikelihood=_mmlu_ll,
            _instruction=_mmlu_instruction,
        ),
    )
}
