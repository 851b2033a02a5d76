"""The extraction rules as first written, straightforwardly: the reference the fast version must match.

A verbatim copy of launcher/scoring/extract.py before it was made fast (commit e581060), kept
only for tests/test_extract.py, which compares both on thousands of varied answers. Do not
change it to follow a rule change: change both, and the comparison shows the rule moved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DECOR = " \t\n*_`\"'“”‘’#>([{"
_TRAIL = " \t\n*_`\"'“”‘’.,;:!?)]}"

# What introduces an answer; the candidate starts where the match ends.
_MARKERS = re.compile(
    r"(?:\b(?:final|correct|best|right|my)\s+(?:answer|option|choice)"
    r"|\banswer|\bchoice|\bresponse)"
    r"[*_\s]*(?:is|would\s+be|must\s+be|should\s+be|will\s+be|[:=\-–—])[*_\s]*"
    r"|\bI\s+(?:would\s+|will\s+)?(?:choose|select|pick|go\s+with)\s+",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"\bnone\s+of\s+the\s+(?:above|options|choices|answers)\b|\bcannot\s+be\s+determined\b"
    r"|\bcan(?:no|')t\s+(?:answer|determine|choose)\b|\bnot\s+enough\s+information\b",
    re.IGNORECASE,
)
_OPTION_WORD = re.compile(r"(?:option|choice|letter)\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Extraction:
    """The chosen option's label (or None) and which rule found it."""

    choice: str | None
    rule: str


def _label_at(s: str, labels: list[str], strict_case: bool) -> str | None:
    """The label ``s`` starts with, if it stands alone there (``B``, ``B.``, ``B)``, ``b:``)."""
    for label in labels:
        if s.startswith(label):
            rest = s[len(label) :]
            if not rest or not rest[0].isalnum():
                # "A patient..." starts with the article, not option A.
                if label.upper() == "A" and re.match(r" +[a-z]", rest):
                    continue
                return label
    if strict_case:
        return None
    for label in labels:
        low = label.lower()
        if low != label and s.startswith(low):
            rest = s[len(low) :]
            # Lower-case "a" and "i" are words ("the answer is a mix"): they read as labels
            # only when punctuation or the end follows them; other letters need a boundary.
            if not rest or re.match(r"\s*(?:[.):\]*,;]|$)", rest):
                return label
            if low not in ("a", "i") and not rest[0].isalnum():
                return label
    return None


def _text_at(s: str, options: dict[str, str]) -> str | None:
    """The label of the option whose text ``s`` starts with, as whole words."""
    low = s.lower()
    for label, text in sorted(options.items(), key=lambda kv: -len(kv[1])):
        t = text.strip().lower()
        if t and low.startswith(t):
            rest = low[len(t) :]
            if not rest or not rest[0].isalnum():
                return label
    return None


def _candidate(s: str, options: dict[str, str], labels: list[str]) -> str | None:
    s = s.lstrip(_DECOR)
    s = _OPTION_WORD.sub("", s, count=1) if _OPTION_WORD.match(s) else s
    s = s.lstrip(_DECOR)
    return _label_at(s, labels, strict_case=False) or _text_at(s, options)


def _listing_lines(lines: list[str], options: dict[str, str]) -> set[int]:
    """Indices of lines that restate an option (``A. yes``), when there are two or more."""
    found = set()
    for i, line in enumerate(lines):
        m = re.match(r"^[\s*_\-•]*[(\[]?([A-Za-z0-9]{1,2})[.):\]]+\s*(.+?)[\s.]*$", line)
        if not m:
            continue
        label, text = m.group(1), m.group(2).strip(_TRAIL).lower()
        label = label if label in options else label.upper()
        if label in options and options[label].strip().lower() == text:
            found.add(i)
    return found if len(found) >= 2 else set()


def extract(text: str | None, options: dict[str, str] | None) -> Extraction:
    """The option a free-text answer chose, by the rules in this module's docstring."""
    if not options or text is None or not text.strip():
        return Extraction(None, "empty" if options else "not multiple choice")
    labels = sorted(options, key=len, reverse=True)
    lines = text.splitlines()
    listing = _listing_lines(lines, options)
    body = "\n".join(line for i, line in enumerate(lines) if i not in listing)

    # 1. the last explicit answer phrase that names an option
    chosen = None
    markers = list(_MARKERS.finditer(body))  # scanned once: long answers make this the slow part
    for m in markers:
        c = _candidate(body[m.end() :], options, labels)
        if c is not None:
            chosen = c
    tail = re.compile(r"\b(" + "|".join(re.escape(x) for x in labels) + r")\)?\s+is\s+(?:the\s+)?"
                      r"(?:correct|right|best)\b")
    last_marker_end = markers[-1].end() if markers else -1
    for m in tail.finditer(body):
        if m.start() > last_marker_end:
            chosen = m.group(1)
    if chosen is not None:
        return Extraction(chosen, "answer phrase")

    # 2. the whole answer is a label or an option's text
    bare = body.strip().strip(_DECOR + _TRAIL)
    if bare in options:
        return Extraction(bare, "label")
    if len(bare) == 1 and bare.upper() in options:
        return Extraction(bare.upper(), "label")
    for label, t in options.items():
        if bare.lower() == t.strip().lower():
            return Extraction(label, "option text")

    # 3. opens with a label and punctuation, or with an option's text
    head = body.lstrip(_DECOR)
    c = _label_at(head, labels, strict_case=True)
    if c is not None and re.match(r"\s*(?:[.):\]\-–,]|\*\*|$)", head[len(c) :]):
        return Extraction(c, "leading label")
    c = _text_at(head, options)
    # "Yes, …" opens with an answer; "Yes and no…" does not.
    if c is not None and re.match(r"[*_\s]*(?:[.,;:!)\-–—]|$)", head[len(options[c].strip()) :]):
        return Extraction(c, "leading option text")

    # 4. the last line that is only a label
    for line in reversed(body.splitlines()):
        bare_line = line.strip().strip(_DECOR + _TRAIL)
        if bare_line in options:
            return Extraction(bare_line, "label line")

    # 5. the last label marked as one, in parentheses or bold
    marked = re.compile(r"\((" + "|".join(re.escape(x) for x in labels) + r")\)"
                        r"|\*\*(" + "|".join(re.escape(x) for x in labels) + r")\*\*")
    hits = [m.group(1) or m.group(2) for m in marked.finditer(body)]
    if hits:
        return Extraction(hits[-1], "marked label")

    # 6. an explicit refusal
    if _REFUSAL.search(body) and not any(_REFUSAL.search(t) for t in options.values()):
        return Extraction(None, "refusal")

    # 7. exactly one option's text named
    named = {
        label
        for label, t in options.items()
        if t.strip() and re.search(r"(?<![\w])" + re.escape(t.strip()) + r"(?![\w])", body, re.IGNORECASE)
    }
    if len(named) == 1:
        return Extraction(named.pop(), "option text")
    return Extraction(None, "ambiguous" if named else "no answer")


def extract_choice(text: str | None, options: dict[str, str] | None) -> str | None:
    """The chosen option's label, or None when no answer can be found."""
    return extract(text, options).choice
