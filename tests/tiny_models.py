"""Tiny random causal LMs, saved to a folder and loaded back the way a user's model is.

Each builder writes ``config.json``, the weights, ``generation_config.json`` and a small
tokenizer (with or without a chat template) to a folder, so the tests go through
``AutoTokenizer.from_pretrained`` / ``AutoModelForCausalLM.from_pretrained`` exactly as the
Hugging Face backend does for MedGemma, PMC-LLaMA or BioMedLM, without the Hub.

The tokenizer is a byte-level BPE trained in memory on a few medical sentences: any text
round-trips through it (no unknown tokens), so what the runner decodes is what the model
produced. The models have two layers and a hidden size of 32: random weights, real code paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GenerationConfig,
    GPT2Config,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

CORPUS = [
    "Breast cancer is the most common cancer in women worldwide.",
    "HER2-positive tumours respond to trastuzumab and pertuzumab.",
    "Tamoxifen is a selective oestrogen receptor modulator.",
    "Screening mammography reduces mortality in women aged fifty to seventy.",
    "Answer the following medical question with evidence.",
    "Question: Context: Options: Answer: yes no maybe",
    "Below is an instruction that describes a task, paired with an input.",
]

# The Gemma 3 / MedGemma template as published: a system turn is not a turn of its own but
# is prepended, with a blank line, to the first user turn.
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# Gemma 2's template (and older MedGemma-like fine-tunes): a system turn is an error.
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

# ChatML, as SmolLM2 and Qwen use it: a system turn of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Specials:
    bos: str | None
    eos: str
    pad: str | None
    extra: tuple[str, ...] = ()
    #: Prepend BOS when a plain prompt is encoded with special tokens (Llama-style).
    bos_on_encode: bool = False


GEMMA_SPECIALS = Specials("<bos>", "<eos>", "<pad>", ("<start_of_turn>", "<end_of_turn>"))
CHATML_SPECIALS = Specials("<|im_start|>", "<|im_end|>", None, ("<|endoftext|>",))
LLAMA_SPECIALS = Specials("<s>", "</s>", None, ("<unk>",), bos_on_encode=True)
GPT2_SPECIALS = Specials(None, "<|endoftext|>", None)


def make_tokenizer(specials: Specials, chat_template: str | None) -> PreTrainedTokenizerFast:
    """A byte-level BPE of a few hundred tokens, trained on CORPUS, special tokens first."""
    names = [t for t in (specials.bos, specials.eos, specials.pad, *specials.extra) if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=names,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    if specials.bos_on_encode:
        bos_id = tok.token_to_id(specials.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{specials.bos} $A", pair=f"{specials.bos} $A $B",
            special_tokens=[(specials.bos, bos_id)],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=specials.bos,
        eos_token=specials.eos,
        pad_token=specials.pad,
        additional_special_tokens=list(specials.extra),
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def _save(config, tokenizer: PreTrainedTokenizerFast, folder: Path, eos_ids: list[int]) -> Path:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids if len(eos_ids) > 1 else eos_ids[0],
        bos_token_id=config.bos_token_id,
        pad_token_id=config.pad_token_id,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _ids(tok: PreTrainedTokenizerFast) -> dict:
    return {
        "vocab_size": len(tok),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }


def build_gemma3(folder: Path, chat_template: str = GEMMA3_TEMPLATE) -> Path:
    """A two-layer Gemma3ForCausalLM (the text model MedGemma 27B text-it is)."""
    tok = make_tokenizer(GEMMA_SPECIALS, chat_template)
    config = Gemma3TextConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=1024, sliding_window=64,
        layer_types=["sliding_attention", "full_attention"], **_ids(tok),
    )
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    return _save(config, tok, folder, [tok.eos_token_id, end_of_turn])


def build_llama(folder: Path, chat_template: str | None = CHATML_TEMPLATE,
                extra_eos: list[int] | None = None) -> Path:
    """A two-layer LlamaForCausalLM; ChatML template by default, ``None`` for no template.

    ``extra_eos`` adds stop ids to generation_config.json, as models with several end
    tokens (Llama 3's <|eot_id|>) declare them.
    """
    specials = CHATML_SPECIALS if chat_template is not None else LLAMA_SPECIALS
    tok = make_tokenizer(specials, chat_template)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=1024, tie_word_embeddings=False, **_ids(tok),
    )
    return _save(config, tok, folder, [tok.eos_token_id, *(extra_eos or [])])


def build_gpt2(folder: Path) -> Path:
    """A two-layer GPT-2 with no chat template: how BioMedLM 2.7B ships."""
    tok = make_tokenizer(GPT2_SPECIALS, None)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=1024, **_ids(tok))
    return _save(config, tok, folder, [tok.eos_token_id])


@dataclass(frozen=True)
class TinyZoo:
    """Folders of one tiny model per prompt rule, built once per test session."""

    llama_chat: Path  # ChatML template with a system role -> "chat"
    gemma3: Path  # Gemma 3 template, folds the system turn itself -> "chat-folded"
    gemma2_style: Path  # template raises "System role not supported" -> "chat-folded"
    gpt2: Path  # no template (BioMedLM) -> "plain"
    pmc_llama: Path  # Llama with no template, named like PMC-LLaMA -> "pmc-llama"


def build_zoo(root: Path) -> TinyZoo:
    return TinyZoo(
        llama_chat=build_llama(root / "llama-chat"),
        gemma3=build_gemma3(root / "gemma3"),
        gemma2_style=build_gemma3(root / "gemma2-style", chat_template=GEMMA2_TEMPLATE),
        gpt2=build_gpt2(root / "gpt2"),
        pmc_llama=build_llama(root / "PMC_LLaMA_tiny", chat_template=None),
    )
