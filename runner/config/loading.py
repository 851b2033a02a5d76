"""Reading models.yaml: YAML, then pydantic, every problem as ``file:line: field: what is expected``."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from runner.config.backends import BACKENDS, key_env_clashes
from runner.config.run import RunConfig
from runner.errors import ConfigError


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path in the YAML document to its 1-based line, for error messages."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _line_map(v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, path + (i,), out)
    return out


def _loc_parts(loc: tuple) -> tuple:
    """Drop the discriminator tag pydantic inserts after a list index (models.2.hf.x)."""
    parts: list = []
    for i, p in enumerate(loc):
        if i > 0 and isinstance(loc[i - 1], int) and p in BACKENDS:
            continue
        if i > 0 and loc[i - 1] == "questions" and p in ("file", "benchmark"):
            continue
        if isinstance(p, str) and p.startswith("function-"):
            continue
        parts.append(p)
    return tuple(parts)


def format_loc(parts: tuple) -> str:
    s = ""
    for p in parts:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s


def _message(err: ErrorDetails) -> str:
    t = err["type"]
    ctx = err.get("ctx") or {}
    if t == "extra_forbidden":
        return "unknown key (check the spelling; see docs/reference/models-yaml.md)"
    if t == "missing":
        return "required key is missing"
    if t == "literal_error":
        return f"expected one of {ctx.get('expected', '')}"
    if t == "union_tag_invalid":
        return f"unknown backend {ctx.get('tag')!r}; expected one of {', '.join(BACKENDS)}"
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def format_validation_error(e: ValidationError, source: str, lines: dict[tuple, int]) -> str:
    """One line per problem: ``file:line: field.path: what is expected``."""
    out = []
    for err in e.errors():
        parts = _loc_parts(tuple(err["loc"]))
        if err["type"] == "union_tag_invalid":
            parts += ("backend",)
        line = None
        for n in range(len(parts), -1, -1):
            if parts[:n] in lines:
                line = lines[parts[:n]]
                break
        where = f"{source}:{line}" if line else source
        field = format_loc(parts)
        got = err.get("input")
        got_s = ""
        if err["type"] not in ("missing", "extra_forbidden") and not isinstance(got, dict | list):
            got_s = f" (got {got!r})"
        out.append(f"{where}: {field + ': ' if field else ''}{_message(err)}{got_s}")
    return "\n".join(out)


def parse_config(text: str, source: str = "models.yaml", base_dir: Path | None = None) -> RunConfig:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply to be a models.yaml") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        raise ConfigError(f"{source}: the file is empty; it needs at least 'questions' and 'models'")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: expected a mapping of keys (questions:, models:, ...)")
    lines = _line_map(node) if node is not None else {}
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, lines)) from None
    clashes = key_env_clashes(cfg.models)
    if clashes:
        raise ConfigError("\n".join(
            f"{source}:{lines.get(('models', i, 'api_key_env'), lines.get(('models', i), 1))}: {message}"
            for i, message in clashes))
    cfg.base_dir = base_dir if base_dir is not None else Path(".")
    return cfg


def load_config(path: str | Path) -> RunConfig:
    p = Path(path)
    text = ConfigError.read_text(p, missing="no such file (expected a models.yaml, see examples/)",
                                 folder="expected a models.yaml file")
    return parse_config(text, source=str(p), base_dir=p.parent)
