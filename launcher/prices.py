"""API prices for the plan's cost column, from each API backend's dated price table.

US dollars per million tokens, standard (not batch, not priority) tier, text prompts under 200k
tokens, as each provider published them on the date its table gives (its descriptor's
``prices``, ``runner.config.backends``). Prices change: the plan prints the date beside every
total, and an entry's own ``prices:`` replaces the table for that model (and is what the runner
uses for the manifest's recorded cost).

A model id matches the longest key it starts with, so ``gpt-4o-2024-08-06`` is priced as
``gpt-4o`` and ``gpt-4o-mini`` as itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from runner.config import APIModel, ModelBase, Prices, descriptor
from runner.config.backends import PriceTable


def table_of(spec: ModelBase) -> PriceTable | None:
    return descriptor(spec.backend).prices if isinstance(spec, APIModel) else None


def price_for(spec: ModelBase) -> tuple[Prices | None, str]:
    """The model's prices and where they came from: its entry's ``prices``, else its backend's table."""
    if not isinstance(spec, APIModel):
        return None, ""
    if spec.prices is not None:
        return spec.prices, "its entry's prices"
    table = table_of(spec)
    if table is None:
        return None, ""
    model = spec.id.lower()
    keys = [k for k in table.per_million if model == k or model.startswith(k + "-")]
    if not keys:
        return None, ""
    i, o = table.per_million[max(keys, key=len)]
    return Prices(input_per_million=i, output_per_million=o), f"price table of {table.as_of}"


def tables_used(specs: Iterable[ModelBase]) -> list[PriceTable]:
    """The price tables these models are priced from, each once."""
    out: list[PriceTable] = []
    for spec in specs:
        table = table_of(spec)
        if table is not None and table not in out and price_for(spec)[1].startswith("price table"):
            out.append(table)
    return out


def cost(prices: Prices, input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * prices.input_per_million + output_tokens * prices.output_per_million) / 1e6
