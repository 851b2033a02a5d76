"""System-prompt presets and the rules that turn a question into what a model is sent.

Three rules for local models, chosen per model and recorded in its manifest:

- ``chat``: the model's own chat template, system prompt as a system turn.
- ``chat-folded``: the template rejects (or silently drops) a system turn — Gemma-family
  models such as MedGemma — so the system prompt opens the first user turn instead.
- ``plain``: no template (BioMedLM): ``SYSTEM\\n\\nQUESTION\\nAnswer:``.
- ``pmc-llama``: PMC-LLaMA's published instruction / input / response format.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from runner.errors import ConfigError
from runner.prompt_file import read_prompt_file
from runner.questions import Question

PRESETS: dict[str, str] = {
    "oncology-expert": (
        "You are a renowned research scientist and medical expert with more than 20 years of "
        "clinical experience in oncology, particularly breast cancer research. Your work spans "
        "clinical practice and laboratory research, from tumour biology and molecular subtypes to "
        "screening, diagnosis, treatment and survivorship.\n\n"
        "When you answer:\n"
        "- Base every statement on current medical evidence and clinical guidelines, and say "
        "where the evidence is uncertain or evolving.\n"
        "- Use precise medical terminology, explained so that an educated reader can follow.\n"
        "- Draw on both clinical and laboratory research where it helps the answer.\n"
        "- Be accurate and scientifically rigorous; do not speculate beyond the evidence.\n"
        "- State clearly that your answer is for information only and is not personal medical "
        "advice; the reader should consult their own clinician about their care."
    ),
    "general-physician": (
        "You are an experienced physician with broad medical knowledge across multiple "
        "specialties. Provide clear, evidence-based medical information suitable for both "
        "healthcare professionals and educated patients."
    ),
    "cardiologist": (
        "You are a board-certified cardiologist with 15+ years of clinical experience. "
        "Specialize in cardiovascular disease, interventional cardiology, and heart failure "
        "management. Provide detailed, evidence-based cardiovascular medical information."
    ),
    "patient-educator": (
        "You are a medical educator specializing in patient communication. Explain complex "
        "medical concepts in clear, accessible language while maintaining scientific accuracy. "
        "Focus on helping patients understand their health conditions."
    ),
    "research-scientist": (
        "You are a medical research scientist analyzing clinical data and literature. Provide "
        "detailed scientific explanations with emphasis on research methodology, statistical "
        "analysis, and current evidence from peer-reviewed studies."
    ),
}

PRESET_SUMMARIES = {
    "oncology-expert": "oncology and breast-cancer research scientist and clinician (default)",
    "general-physician": "physician with broad knowledge across specialties",
    "cardiologist": "board-certified cardiologist",
    "patient-educator": "medical educator writing for patients",
    "research-scientist": "research scientist focused on methodology and evidence",
}

NONE = "none"


def _prompt_file(value: str, base_dir: Path) -> Path | None:
    """Where ``value`` would be as a file (relative to models.yaml), or None if it cannot be a path."""
    if "\n" in value or len(value) >= 300:
        return None
    try:
        p = Path(value).expanduser()
    except RuntimeError:  # "~someone" with no such user
        return None
    return p if p.is_absolute() else base_dir / p


def _exists(p: Path | None) -> bool:
    """Something other than a folder is there: a file, a device, a pipe, or a link (even a
    dangling one). Reading it says what is wrong with anything but a regular text file."""
    try:
        return p is not None and (p.is_symlink() or (p.exists() and not p.is_dir()))
    except OSError:  # a long line of inline text is not a valid file name (ENAMETOOLONG)
        return False


def resolve_system_prompt(value: str | None, base_dir: Path) -> str | None:
    """A preset name, a path to a text file, ``none``, or the inline text itself.

    An existing file always wins, whatever its name: ``system_prompt: myprompt`` reads the
    file ``myprompt`` beside models.yaml. A value that is both a preset and an existing file
    is an error, as it is impossible to tell which the user meant.
    """
    if value is None or value.strip().lower() == NONE:
        return None
    v = value.strip()
    p = _prompt_file(v, base_dir)
    if p is not None and _exists(p):
        if v in PRESETS:
            raise ConfigError(
                f"system_prompt: {v!r} is both a preset and the file {p}; write './{v}' to use "
                "the file, or rename the file to use the preset"
            )
        try:
            return read_prompt_file(p, "system_prompt").strip()
        except ConfigError as e:
            raise ConfigError(f"system_prompt: {e}") from None
    if v in PRESETS:
        return PRESETS[v]
    single_token = " " not in v and "\n" not in v
    if p is not None and (v.endswith((".txt", ".md")) or (single_token and "/" in v)):
        raise ConfigError(f"system_prompt: file {p} does not exist")
    # A short single token that is neither a preset nor a file is almost surely a misspelt preset.
    if single_token and len(v) < 40:
        raise ConfigError(
            f"system_prompt: unknown preset {v!r} (and no file {p}); expected one of "
            f"{', '.join(PRESETS)}, a file path, inline text, or 'none'"
        )
    return v


def prompt_hash(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()[:16]


def format_options(options: dict[str, str] | None) -> str:
    if not options:
        return ""
    return "\n".join(f"{k}. {v}" for k, v in options.items())


def render_question(q: Question, template: str | None = None) -> str:
    """The user message for one question: context, question and options."""
    if template is not None:
        return template.format(
            question=q.question, context=q.context or "", options=format_options(q.options)
        )
    parts = []
    if q.context:
        parts.append(f"Context:\n{q.context}")
    parts.append(f"Question: {q.question}" if (q.context or q.options) else q.question)
    if q.options:
        parts.append("Options:\n" + format_options(q.options))
        parts.append("Answer with the letter of the correct option, then explain briefly.")
    return "\n\n".join(parts)


PMC_LLAMA_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
PMC_LLAMA_DEFAULT_INSTRUCTION = "Answer the following medical question."


def messages_for(system: str | None, user: str) -> list[dict]:
    msgs = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": user})
    return msgs


def folded_messages(system: str | None, user: str) -> list[dict]:
    content = f"{system}\n\n{user}" if system else user
    return [{"role": "user", "content": content}]


def plain_prompt(system: str | None, user: str, templated: bool) -> str:
    # A user-given template controls its own ending (lm-eval parity); ours adds "Answer:".
    body = user if templated else f"{user}\nAnswer:"
    return f"{system}\n\n{body}" if system else body


def pmc_llama_prompt(system: str | None, user: str) -> str:
    return PMC_LLAMA_TEMPLATE.format(instruction=system or PMC_LLAMA_DEFAULT_INSTRUCTION, input=user)


_SENTINEL = "\u2063medbench-system-sentinel\u2063"


def _template_keeps_system(tokenizer) -> bool:
    """True when the chat template renders a system turn of its own.

    False when it raises on one (Gemma 2), drops it, or folds it into the user turn itself
    (Gemma 3, MedGemma: only blank lines between system text and question); the folded
    rule then gives the same text and names what happened.
    """
    try:
        text = tokenizer.apply_chat_template(
            messages_for(_SENTINEL, "hi"), tokenize=False, add_generation_prompt=True
        )
    except Exception:  # noqa: BLE001 - jinja raises whatever the template author chose
        return False
    if not isinstance(text, str) or _SENTINEL not in text:
        return False
    after = text[text.index(_SENTINEL) + len(_SENTINEL) :]
    return "hi" in after and after[: after.index("hi")].strip() != ""


def choose_format(requested: str, tokenizer, model_id: str) -> str:
    """The rule a model gets: chat, chat-folded, plain or pmc-llama."""
    # Published as PMC_LLaMA / PMC_LLAMA; local copies are often named pmc-llama.
    if requested == "pmc-llama" or (
        requested == "auto" and "pmc_llama" in model_id.lower().replace("-", "_")
    ):
        return "pmc-llama"
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if requested == "plain" or (requested == "auto" and not has_template):
        return "plain"
    if not has_template:
        raise ConfigError(
            f"{model_id}: prompt_format 'chat' but the tokenizer has no chat template; "
            "use 'plain' or 'pmc-llama'"
        )
    return "chat" if _template_keeps_system(tokenizer) else "chat-folded"


def build_prompt(fmt: str, tokenizer, system: str | None, user: str, templated: bool) -> str:
    if fmt == "plain":
        return plain_prompt(system, user, templated)
    if fmt == "pmc-llama":
        return pmc_llama_prompt(system, user)
    msgs = messages_for(system, user) if fmt == "chat" else folded_messages(system, user)
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def embedding_text(q: Question, template: str | None = None) -> str:
    """The text a question is embedded as by an encoder.

    With a template (the model's or the file's ``prompt_template``) it is filled exactly as
    for generative models. Without one: the question, then its options (``A. yes``, one a
    line), then its context, separated by blank lines. The question and options come first
    because long inputs are cut at the end: a truncated PubMedQA item loses the tail of its
    abstract, never the question.
    """
    if template is not None:
        return render_question(q, template)
    parts = [q.question]
    if q.options:
        parts.append(format_options(q.options))
    if q.context:
        parts.append(q.context)
    return "\n\n".join(parts)
