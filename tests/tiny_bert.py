"""A tiny random BERT and its WordPiece tokenizer, saved as a normal Hugging Face folder.

Real BERT code paths (tokenizer, padding, attention mask, token types, position limit) at a
size that runs in milliseconds: 2 layers, hidden size 32, at most ``max_positions`` tokens.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the of and in to a is with for was were patients study cancer breast treatment risk "
    "results methods conclusion background whether does do can are after than or not no yes maybe"
).split()


def vocabulary() -> list[str]:
    """Special tokens, common words, and every letter and digit alone and as a ``##`` piece,
    so any English text tokenizes without [UNK] floods."""
    chars = list(string.ascii_lowercase + string.digits)
    punct = list(string.punctuation)
    return SPECIAL + WORDS + chars + [f"##{c}" for c in chars] + punct


def build_tiny_bert(folder: Path, *, max_positions: int = 64, seed: int = 0) -> Path:
    """Write config, random weights and tokenizer to ``folder``; returns it."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = BertTokenizer(vocab=str(vocab_file), do_lower_case=True, model_max_length=max_positions)
    tok.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    BertModel(config).eval().save_pretrained(folder)
    return folder
