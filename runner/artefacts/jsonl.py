"""The one JSONL reader and writer of medbench.

JSON strings may hold U+2028, U+2029 and U+0085 unescaped, and real text does (PubMedQA
abstracts have them). ``str.splitlines()`` treats those as line ends and would cut a record in
two, so lines are split on ``"\\n"`` only (a ``"\\r"`` before it is dropped): JSON itself never
has a raw newline inside a value. Every file of a run that holds one object a line is written
with :func:`dumps_lines` and read with :func:`parse`.

Only standard JSON is read or written: ``NaN``, ``Infinity`` and numbers too large for a float
(``1e999999``), which Python's json module accepts and writes by default, are refused both
ways, since every other JSON reader refuses the file that holds them. So is an integer longer
than Python converts from text (``sys.get_int_max_str_digits()``, 4300 digits by default).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from pydantic import BaseModel


class JSONLError(ValueError):
    """A line that is not one JSON value; ``lineno`` is 1-based."""

    def __init__(self, lineno: int, message: str):
        super().__init__(message)
        self.lineno = lineno
        self.message = message


def dumps(obj: Any) -> str:
    """One value as one line (no trailing newline). Non-ASCII text is kept as it is.

    A pydantic model (a record) is written by pydantic, without its None fields.
    """
    if isinstance(obj, BaseModel):
        return obj.model_dump_json(exclude_none=True)  # NaN and infinity become null
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def dumps_lines(objs: Iterable[Any]) -> str:
    """Objects as JSONL text, each line ending in a newline."""
    return "".join(dumps(o) + "\n" for o in objs)


def lines(text: str) -> Iterator[tuple[int, str]]:
    """``(lineno, line)`` for every line of ``text``, blank ones included, split on "\\n" only."""
    for lineno, raw in enumerate(text.split("\n"), start=1):
        yield lineno, raw.removesuffix("\r")


def binary_lines(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """``(lineno, line)`` of a file opened in binary mode, streamed; split on b"\n" only."""
    for lineno, raw in enumerate(f, start=1):
        yield lineno, raw.rstrip(b"\r\n")


class _NotStandard(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotStandard(f"{name} is not a JSON number (write null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotStandard(f"{text[:20]}{'…' if len(text) > 20 else ''} is too large for a number")
    return value


def loads(line: str | bytes, lineno: int) -> Any:
    """One line's value; ``JSONLError`` when it is not standard JSON (or UTF-8) or nests absurdly deep."""
    try:
        return json.loads(line, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise JSONLError(lineno, f"not valid JSON: {e.msg} (column {e.colno})") from None
    except UnicodeDecodeError:
        raise JSONLError(lineno, "not valid UTF-8") from None
    except RecursionError:
        raise JSONLError(lineno, "not valid JSON: nested too deeply") from None
    except _NotStandard as e:
        raise JSONLError(lineno, f"not valid JSON: {e}") from None
    except ValueError:  # int(text) past sys.get_int_max_str_digits()
        raise JSONLError(lineno, f"a number longer than {sys.get_int_max_str_digits():,} digits") from None


def parse(text: str, *, skip_bad: bool = False) -> Iterator[tuple[int, Any]]:
    """``(lineno, value)`` for every non-blank line.

    ``skip_bad`` drops lines that are not JSON (a line cut short by a kill mid-append) instead
    of raising ``JSONLError``.
    """
    for lineno, line in lines(text):
        if not line.strip():
            continue
        try:
            yield lineno, loads(line, lineno)
        except JSONLError:
            if not skip_bad:
                raise
