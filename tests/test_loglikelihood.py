"""`scoring: loglikelihood`: options ranked by log-likelihood, as lm-evaluation-harness does.

A tiny random Llama (with a tokenizer that adds BOS, as Llama's does) checks the definition
against a direct, one-option-at-a-time computation; then real runs through ``launcher run``
check what lands in responses.jsonl.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerFast

from launcher.scoring.run_data import load_run
from runner.backends.loglik import encode_pair, score_options
from tests.conftest import SMOLLM2_GGUF, run_cli, write

CORPUS = [
    "Abstract: Tamoxifen lowers recurrence in oestrogen receptor positive breast cancer.",
    "Question: Does screening reduce mortality? Answer: yes no maybe",
    "HER2-positive tumours respond to trastuzumab.",
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """A two-layer random Llama and a byte-level BPE tokenizer that prepends <s>."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=fast.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    return model, tok


ITEMS = [
    ("Abstract: Tamoxifen lowers recurrence.\nQuestion: Does it work?\nAnswer:", ["yes", "no", "maybe"]),
    ("Question: Does screening reduce mortality?\nAnswer:", ["yes", "no", "maybe"]),
    ("HER2-positive tumours respond to", ["trastuzumab", "tamoxifen", "screening mammography"]),
    ("Answer: ", ["yes", "no"]),  # trailing space: moves into the continuation, as in lm-eval
]


def direct_loglikelihood(model, tok, context: str, option: str) -> float:
    """log P(" option" | context) with one unpadded forward pass per option."""
    whole = tok(context.rstrip() + context[len(context.rstrip()):] + " " + option)["input_ids"]
    ctx = tok(context.rstrip())["input_ids"]
    cont = whole[len(ctx):]
    with torch.no_grad():
        logits = model(torch.tensor([whole[:-1]])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[len(ctx) - 1 + k, t]) for k, t in enumerate(cont))


def test_option_loglikelihoods_equal_a_direct_computation(loaded):
    model, tok = loaded
    scored = score_options(model, tok, ITEMS, rows_per_batch=16)
    for (context, options), item in zip(ITEMS, scored, strict=True):
        assert item.error is None
        expected = [direct_loglikelihood(model, tok, context, o) for o in options]
        assert item.loglikelihoods == pytest.approx(expected, abs=1e-4)
        assert all(ll < 0 for ll in item.loglikelihoods)


def test_batching_does_not_change_the_scores(loaded):
    model, tok = loaded
    one_by_one = [score_options(model, tok, [it], rows_per_batch=1)[0].loglikelihoods for it in ITEMS]
    batched = [s.loglikelihoods for s in score_options(model, tok, ITEMS[::-1], rows_per_batch=64)][::-1]
    for a, b in zip(one_by_one, batched, strict=True):
        assert a == pytest.approx(b, abs=1e-5)


def test_context_and_continuation_split_like_lm_eval(loaded):
    _, tok = loaded
    ctx, cont = encode_pair(tok, "Answer:", " yes")
    assert ctx[0] == tok.bos_token_id and cont[0] != tok.bos_token_id
    assert ctx + cont == tok("Answer: yes")["input_ids"]
    # A trailing space belongs to the continuation.
    assert encode_pair(tok, "Answer: ", "yes") == (ctx, cont)
    # A prompt that already starts with BOS gets no second one.
    ctx_bos, _ = encode_pair(tok, "<s>Answer:", " yes")
    assert ctx_bos.count(tok.bos_token_id) == 1


def test_a_question_without_options_is_an_error_of_its_own(loaded):
    model, tok = loaded
    scored = score_options(model, tok, [("Question: What is HER2?\nAnswer:", []), ITEMS[0]])
    assert "needs a multiple-choice question" in scored[0].error
    assert scored[1].error is None and len(scored[1].loglikelihoods) == 3


def test_launcher_run_records_loglikelihoods_and_per_item_errors(project, tiny_llama):
    write(project / "q.jsonl", """
        {"id": "a", "question": "Does tamoxifen lower recurrence?", "context": "Tamoxifen trial.", "options": ["yes", "no", "maybe"], "answer": "yes"}
        {"id": "b", "question": "What is HER2?"}
    """)  # noqa: E501
    write(project / "models.yaml", f"""
        name: ll
        questions: q.jsonl
        system_prompt: none
        output: out
        models:
          - id: tiny/llama
            path: {tiny_llama}
            scoring: loglikelihood
            prompt_format: plain
            prompt_template: "Abstract: {{context}}\\nQuestion: {{question}}\\nAnswer:"
    """)
    assert run_cli("run", "models.yaml", "--run-id", "r1") == 1  # item b cannot be scored
    folder = project / "out" / "r1" / "tiny_llama"
    # A model with a failed item is read back from its records, as the report does.
    recs = {r["id"]: r for r in load_run(project / "out" / "r1").models[0].records.values()}
    a = recs["a"]
    assert a["prompt"] == "Abstract: Tamoxifen trial.\nQuestion: Does tamoxifen lower recurrence?\nAnswer:"
    assert len(a["option_loglikelihoods"]) == 3
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    expected = [direct_loglikelihood(model, tok, a["prompt"], o) for o in ("yes", "no", "maybe")]
    assert a["option_loglikelihoods"] == pytest.approx(expected, abs=1e-4)
    assert a["response"] == {"A": "yes", "B": "no", "C": "maybe"}[a["prediction"]]
    assert (folder / "1.txt").read_text() == a["response"]
    assert "needs a multiple-choice question" in recs["b"]["error"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["parameters"]["resolved"]["scoring"] == "loglikelihood"


@pytest.mark.slow
def test_smollm2_scores_pubmedqa_by_loglikelihood(project, smollm2_dir, pubmedqa):
    lines = [line for line in pubmedqa.read_text().splitlines() if line.strip()][:5]
    (project / "q.jsonl").write_text("\n".join(lines) + "\n")
    write(project / "models.yaml", f"""
        name: smol-ll
        questions: q.jsonl
        system_prompt: none
        output: out
        models:
          - id: HuggingFaceTB/SmolLM2-135M-Instruct
            path: {smollm2_dir}
            gguf_file: {SMOLLM2_GGUF}
            scoring: loglikelihood
            prompt_format: plain
            prompt_template: "Abstract: {{context}}\\nQuestion: {{question}}\\nAnswer:"
    """)
    assert run_cli("run", "models.yaml", "--run-id", "r") == 0
    folder = project / "out" / "r" / "HuggingFaceTB_SmolLM2-135M-Instruct"
    recs = [json.loads(x) for x in (folder / "responses.jsonl").read_text().splitlines()]
    assert len(recs) == 5
    for r in recs:
        lls = r["option_loglikelihoods"]
        assert len(lls) == 3 and all(math.isfinite(x) and x < 0 for x in lls)
        best = max(range(3), key=lambda j: lls[j])
        assert r["prediction"] == "ABC"[best]
        norm = max(range(3), key=lambda j: lls[j] / len(["yes", "no", "maybe"][j]))
        assert r["prediction_norm"] == "ABC"[norm]
        assert r["response"] == ["yes", "no", "maybe"][best]
        assert (folder / f"{r['index']}.txt").read_text() == r["response"]
