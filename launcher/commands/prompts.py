"""``launcher prompts``: the system-prompt presets."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from runner.prompts import PRESET_SUMMARIES, PRESETS


def register(sub) -> None:
    p = sub.add_parser("prompts", help="list the system-prompt presets")
    p.add_argument("name", nargs="?", help="print this preset's full text")
    p.set_defaults(func=cmd_prompts)


def cmd_prompts(args) -> int:
    console = Console()
    if args.name:
        if args.name not in PRESETS:
            from runner.errors import InputError

            raise InputError(f"unknown preset {args.name!r}; expected one of {', '.join(PRESETS)}")
        # The exact text, byte for byte: rich would wrap it to the terminal (80 columns when
        # piped) and pad lines, so `launcher prompts NAME > file` would not be the preset.
        sys.stdout.write(PRESETS[args.name] + "\n")
        return 0
    table = Table("preset", "persona", "words")
    for name, text in PRESETS.items():
        table.add_row(name, PRESET_SUMMARIES[name], str(len(text.split())))
    console.print(table)
    console.print("Use one as `system_prompt: NAME`, or give a file path, inline text or `none`.")
    return 0
