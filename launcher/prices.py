"""API prices for the plan's cost column: one small table, with the date it was written down.

US dollars per million tokens, standard (not batch, not priority) tier, text prompts under 200k
tokens, as the providers published them on ``AS_OF`` at ``SOURCES``. Prices change: the plan
prints the date beside every total, and an entry's own ``prices:`` replaces the table for that
model (and is what the runner uses for the manifest's recorded cost).

A model id matches the longest key it starts with, so ``gpt-4o-2024-08-06`` is priced as
``gpt-4o`` and ``gpt-4o-mini`` as itself.
"""

from __future__ import annotations

from runner.config import APIModel, ModelBase, Prices

AS_OF = "2025-11-20"
SOURCES = ("https://openai.com/api/pricing/", "https://ai.google.dev/gemini-api/docs/pricing")

_TABLE: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    # Google (prompts up to 200k tokens; thinking tokens are billed as output)
    "gemini-3-pro-preview": (2.00, 12.00),
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
}
PRICES: dict[str, Prices] = {k: Prices(input_per_million=i, output_per_million=o)
                             for k, (i, o) in _TABLE.items()}


def price_for(spec: ModelBase) -> tuple[Prices | None, str]:
    """The model's prices and where they came from: its entry's ``prices``, else the table."""
    if not isinstance(spec, APIModel):
        return None, ""
    if spec.prices is not None:
        return spec.prices, "its entry's prices"
    model = spec.id.lower()
    keys = [k for k in PRICES if model == k or model.startswith(k + "-")]
    if not keys:
        return None, ""
    return PRICES[max(keys, key=len)], f"price table of {AS_OF}"


def cost(prices: Prices, input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * prices.input_per_million + output_tokens * prices.output_per_million) / 1e6
