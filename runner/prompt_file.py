"""Reading a prompt file (a system prompt or a prompt template) named in models.yaml.

Its own module, below both ``runner.config`` and ``runner.prompts``: each reads such files, and
``runner.prompts`` importing ``runner.config`` would import it back through the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

from runner.errors import MB, ConfigError

#: The largest prompt file read (a system prompt or a template): a prompt is a few kilobytes,
#: and /dev/zero is endless.
MAX_PROMPT_FILE = 1 * MB


def read_prompt_file(p: Path, key: str) -> str:
    """The text of a prompt file named by ``key``; ``ConfigError`` (starting with the path) when
    it is not a readable text file of at most ``MAX_PROMPT_FILE`` bytes."""
    return ConfigError.read_text(p, missing="no such file", folder="expected a text file",
                                 limit=MAX_PROMPT_FILE, what=f"a {key} file")
