"""Which option a free-text answer chose.

Models answer multiple choice in every style: ``B``, ``**B**``, ``(B)``, ``Answer: (C) maybe``,
``The answer is yes.``, a paragraph that restates the question and its options before a
``Final answer: A``. The rules, first that applies wins:

1. an explicit answer phrase (``answer is``, ``Answer:``, ``correct option is``, ``I choose``,
   ``B is correct``...) followed by an option label or an option's text; when there are
   several, the *last* one wins (models restate, then conclude, or correct themselves);
2. the whole answer is a label or an option's text (``B``, ``**b**``, ``(C).``, ``Maybe``);
3. the answer opens with a label followed by punctuation (``B. Because…``, ``B) …``) or
   with an option's text followed by punctuation (``No, the study…``; not ``Yes and no``);
4. the last line that holds nothing but a label;
5. the last label marked as one, in parentheses or bold, in running text (``(B)``, ``**B**``);
6. a refusal (``none of the above``, ``cannot be determined``) is no answer;
7. exactly one option's text appears as a word in the answer.

Otherwise there is no answer: counted apart from a wrong one. Lines that restate the options
list (two or more ``A. yes``-style lines) are never read as an answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

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
# Where a match of _MARKERS can start (case folded): at one of these words, at one of the
# adjectives before spaces and "answer", "option" or "choice", or at an "i" before a space.
_MARKER_WORDS = ("answer", "choice", "response", "option")
_ADJECTIVES = ("final", "correct", "best", "right", "my")
_I_THEN_SPACE = re.compile(r"i(?=\s)")
# Every match of a label's "B is correct" (``_tail``) holds a match of this.
_TAIL_HINT = re.compile(r"is\s+(?:the\s+)?(?:correct|right|best)\b")
_REFUSAL = re.compile(
    r"\bnone\s+of\s+the\s+(?:above|options|choices|answers)\b|\bcannot\s+be\s+determined\b"
    r"|\bcan(?:no|')t\s+(?:answer|determine|choose)\b|\bnot\s+enough\s+information\b",
    re.IGNORECASE,
)
# Every match of _REFUSAL holds one of these words (case folded).
_REFUSAL_WORDS = ("none", "cannot", "can't", "enough")
_OPTION_WORD = re.compile(r"(?:option|choice|letter)\s+", re.IGNORECASE)
_LISTING_LINE = re.compile(r"^[\s*_\-•]*[(\[]?([A-Za-z0-9]{1,2})[.):\]]+\s*(.+?)[\s.]*$")
_ARTICLE_A = re.compile(r" +[a-z]")
_LOWER_LABEL_END = re.compile(r"\s*(?:[.):\]*,;]|$)")
_LEADING_LABEL_END = re.compile(r"\s*(?:[.):\]\-–,]|\*\*|$)")
_LEADING_TEXT_END = re.compile(r"[*_\s]*(?:[.,;:!)\-–—]|$)")


def fold(text: str) -> str:
    """``text`` lower-cased the way ``re.IGNORECASE`` compares it with ASCII, one character for one.

    For an ASCII character ``x`` of a pattern, ``re.IGNORECASE`` matches a character ``c`` of the
    text exactly when ``fold(c) == x.lower()``, and ``fold`` keeps every character a word
    character or a space as it was (tests/test_extract.py checks this for every code point).
    So ``"answer" in fold(text)`` is a cheap necessary condition for an ignore-case match of
    ``answer``, at the same position. ``str.lower`` alone would miss three characters the regex
    engine folds (dotless ı and long ſ; İ, which ``lower`` makes two characters).
    """
    if text.isascii():
        return text.lower()
    return text.replace("İ", "i").replace("ı", "i").replace("ſ", "s").lower()


def _marker_matches(body: str, folded: str) -> list[re.Match[str]]:
    """``list(_MARKERS.finditer(body))``, trying the pattern only where a match can start.

    A case-insensitive scan tries the whole pattern at every character (most of the time an
    answer of real length took). A match can only start at one of ``_MARKER_WORDS``, at an
    adjective that ends where the spaces before one of them begin (``final  answer``), or at
    an ``i`` before a space: found with ``str.find``, and tried in order, skipping what a match
    consumed, they give the matches ``finditer`` gives. (``str.isspace`` is ``\\s``.)
    """
    starts = {m.start() for m in _I_THEN_SPACE.finditer(folded)}
    for word in _MARKER_WORDS:
        at = folded.find(word)
        while at != -1:
            starts.add(at)
            spaces = at
            while spaces and folded[spaces - 1].isspace():
                spaces -= 1
            if spaces < at:
                starts.update(spaces - len(a) for a in _ADJECTIVES if folded.endswith(a, 0, spaces))
            at = folded.find(word, at + 1)
    found: list[re.Match[str]] = []
    end = 0
    for at in sorted(starts):
        if at < end:
            continue
        m = _MARKERS.match(body, at)
        if m is not None:
            found.append(m)
            end = m.end()
    return found


@lru_cache(maxsize=256)
def _tail(labels: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(re.escape(x) for x in labels) + r")\)?\s+is\s+(?:the\s+)?"
                      r"(?:correct|right|best)\b")


@lru_cache(maxsize=256)
def _marked(labels: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\((" + "|".join(re.escape(x) for x in labels) + r")\)"
                      r"|\*\*(" + "|".join(re.escape(x) for x in labels) + r")\*\*")


@lru_cache(maxsize=1024)
def _named(text: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w])" + re.escape(text) + r"(?![\w])", re.IGNORECASE)


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
                if label.upper() == "A" and _ARTICLE_A.match(rest):
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
            if not rest or _LOWER_LABEL_END.match(rest):
                return label
            if low not in ("a", "i") and not rest[0].isalnum():
                return label
    return None


def _text_at(s: str, options: dict[str, str]) -> str | None:
    """The label of the option whose text ``s`` starts with, as whole words."""
    # An ASCII answer is lower-cased only as far as the longest option reaches (str.lower is
    # per character there; elsewhere a final sigma depends on what follows it).
    low = s[: max(len(t) for t in options.values()) + 1].lower() if s.isascii() else s.lower()
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
    found: set[int] = set()
    if len(lines) < 2:
        return found
    for i, line in enumerate(lines):
        m = _LISTING_LINE.match(line)
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
    if len(lines) == 1:
        body = lines[0]
    elif listing:
        body = "\n".join(line for i, line in enumerate(lines) if i not in listing)
    else:
        body = "\n".join(lines)
    folded = fold(body)

    # 1. the last explicit answer phrase that names an option
    chosen = None
    markers = _marker_matches(body, folded)
    for m in markers:
        c = _candidate(body[m.end() :], options, labels)
        if c is not None:
            chosen = c
    last_marker_end = markers[-1].end() if markers else -1
    if _TAIL_HINT.search(body):
        for m in _tail(tuple(labels)).finditer(body):
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
        # lower() never shortens a text: a longer answer cannot equal an option's text.
        t_low = t.strip().lower()
        if len(bare) <= len(t_low) and bare.lower() == t_low:
            return Extraction(label, "option text")

    # 3. opens with a label and punctuation, or with an option's text
    head = body.lstrip(_DECOR)
    c = _label_at(head, labels, strict_case=True)
    if c is not None and _LEADING_LABEL_END.match(head[len(c) :]):
        return Extraction(c, "leading label")
    c = _text_at(head, options)
    # "Yes, …" opens with an answer; "Yes and no…" does not.
    if c is not None and _LEADING_TEXT_END.match(head[len(options[c].strip()) :]):
        return Extraction(c, "leading option text")

    # 4. the last line that is only a label
    for line in reversed(body.splitlines()):
        bare_line = line.strip().strip(_DECOR + _TRAIL)
        if bare_line in options:
            return Extraction(bare_line, "label line")

    # 5. the last label marked as one, in parentheses or bold
    hits = [m.group(1) or m.group(2) for m in _marked(tuple(labels)).finditer(body)]
    if hits:
        return Extraction(hits[-1], "marked label")

    # 6. an explicit refusal
    if (any(word in folded for word in _REFUSAL_WORDS) and _REFUSAL.search(body)
            and not any(_REFUSAL.search(t) for t in options.values())):
        return Extraction(None, "refusal")

    # 7. exactly one option's text named
    named = {
        label
        for label, t in options.items()
        if t.strip() and _names(body, folded, t.strip())
    }
    if len(named) == 1:
        return Extraction(named.pop(), "option text")
    return Extraction(None, "ambiguous" if named else "no answer")


def _names(body: str, folded: str, text: str) -> bool:
    """``text`` appears in ``body`` as words, ignoring case.

    For an ASCII ``text`` a match can only start where ``fold`` shows it, so the search
    starts at its first sight (or is not made); the lookbehind still sees what comes before.
    """
    at = 0
    if text.isascii():
        at = folded.find(text.lower())
        if at == -1:
            return False
    return _named(text).search(body, at) is not None


def extract_choice(text: str | None, options: dict[str, str] | None) -> str | None:
    """The chosen option's label, or None when no answer can be found."""
    return extract(text, options).choice
