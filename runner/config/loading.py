"""Reading models.yaml: YAML, then pydantic, every problem as ``file:line: field: what is expected``."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from runner.config.backends import key_env_clashes
from runner.config.run import RunConfig
from runner.errors import ConfigError

#: Most values a models.yaml may hold once every alias is expanded where it is used. A panel of
#: a hundred models is a few thousand; "billion laughs" (nine levels of ten aliases) is 10**9,
#: which the line map and every dump of the config would otherwise walk one by one.
MAX_YAML_VALUES = 100_000
_MERGE = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    """A value the loader will not build; ``line`` is 1-based."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what it would otherwise take silently or crash on."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        # YAML says keys are unique, PyYAML keeps the last: a second `models:` would drop the
        # first list without a word. Keys a merge (`<<: *base`) brings in may be overridden.
        first: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise _Refused(line, f"duplicate key {key!r} (first on line {first[key]}); "
                                         "each key may appear once in a mapping")
                first[key] = line
            except TypeError:  # an unhashable key: PyYAML's own error says so below
                pass
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python's int-from-text limit (sys.get_int_max_str_digits)
            digits = sum(c.isdigit() for c in str(node.value))
            raise _Refused(node.start_mark.line + 1,
                           f"a number {digits:,} digits long; expected at most "
                           f"{sys.get_int_max_str_digits():,} digits") from None


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _check_size(root: yaml.Node) -> None:
    """``_Refused`` when the document, with every alias expanded, holds more than
    ``MAX_YAML_VALUES`` values, or when an alias refers to a value that contains it.

    A node an alias shares is sized once (memoised), so this costs the document's own size.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        line = node.start_mark.line + 1
        if id(node) in open_nodes:
            raise _Refused(line, "a YAML alias refers to the value that contains it (an endless value)")
        open_nodes.add(id(node))
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(v) for v in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(id(node))
        if n > MAX_YAML_VALUES:
            raise _Refused(line, f"this value expands to more than {MAX_YAML_VALUES:,} values (an alias "
                                 "counts as many as it stands for); a models.yaml needs far fewer")
        sizes[id(node)] = n
        return n

    size(root)


def _load(text: str) -> tuple[yaml.Node | None, object]:
    """The document's node tree (for line numbers) and its value, built from one parse."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_size(node)
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


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
    """Drop the discriminator tag pydantic inserts in a union (questions.benchmark.x)."""
    parts: list = []
    for i, p in enumerate(loc):
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
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def format_validation_error(e: ValidationError, source: str, lines: dict[tuple, int]) -> str:
    """One line per problem: ``file:line: field.path: what is expected``."""
    out = []
    for err in e.errors():
        parts = _loc_parts(tuple(err["loc"]))
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
        node, data = _load(text)
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply to be a models.yaml") from None
    except _Refused as e:
        raise ConfigError(f"{source}:{e.line}: {e.message}") from None
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
    base_dir = base_dir if base_dir is not None else Path(".")
    try:
        # A prompt_template file is read relative to models.yaml while validating.
        cfg = RunConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, lines)) from None
    clashes = key_env_clashes(cfg.models)
    if clashes:
        raise ConfigError("\n".join(
            f"{source}:{lines.get(('models', i, 'api_key_env'), lines.get(('models', i), 1))}: {message}"
            for i, message in clashes))
    cfg.base_dir = base_dir
    return cfg


def load_config(path: str | Path) -> RunConfig:
    p = Path(path)
    text = ConfigError.read_text(p, missing="no such file (expected a models.yaml, see examples/)",
                                 folder="expected a models.yaml file", what="a models.yaml")
    return parse_config(text, source=str(p), base_dir=p.parent)
