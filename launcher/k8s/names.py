"""Deterministic Kubernetes names and label values for a run's Jobs.

A model id may be long (``cambridgeltl/SapBERT-from-PubMedBERT-fulltext``) or hold characters
Kubernetes refuses, and two ids may differ only at their end. Names are therefore a readable,
truncated slug plus a short hash of the *full* run id and model folder: the same inputs always
give the same name (which makes a resubmit idempotent), and different inputs never collide.
"""

from __future__ import annotations

import hashlib
import re

#: Longest Job name we produce. A Job name may be 63 characters, but an Indexed Job's pods get the
#: hostname ``<job-name>-<index>`` (a DNS label, also at most 63): 58 leaves room for index 999.
MAX_JOB_NAME = 58
MAX_LABEL_VALUE = 63
HASH_LEN = 8

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def short_hash(*parts: str, n: int = HASH_LEN) -> str:
    h = hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()
    return h[:n]


def slug(text: str) -> str:
    """Lower-case letters, digits and single dashes; no dash at either end."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower())
    return s.strip("-")


def _trim(s: str, n: int) -> str:
    return s[:n].rstrip("-")


def job_name(run_id: str, model_dir: str) -> str:
    """``<run>-<model>-<hash>``: a DNS-1123 label of at most ``MAX_JOB_NAME`` characters."""
    h = short_hash(run_id, model_dir)
    room = MAX_JOB_NAME - len(h) - 2
    run_s, model_s = slug(run_id), slug(model_dir)
    # Half each when both are long; a short part leaves its room to the other.
    run_room = min(len(run_s), max(room // 2, room - len(model_s)))
    run_s = _trim(run_s, run_room)
    model_s = _trim(model_s, room - len(run_s))
    name = "-".join(p for p in (run_s, model_s, h) if p)
    assert is_dns_label(name) and len(name) <= MAX_JOB_NAME, name
    return name


def label_value(value: str) -> str:
    """A valid label value for ``value``: itself when it already is one, else a slug plus hash.

    Label values are lossy by design (63 characters, a small alphabet); the full value travels
    in an annotation beside it.
    """
    if len(value) <= MAX_LABEL_VALUE and _LABEL_VALUE.match(value):
        return value
    h = short_hash(value)
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)
    s = _trim(s.strip("-_."), MAX_LABEL_VALUE - len(h) - 1).rstrip("_.")
    return f"{s}-{h}" if s else h


def is_dns_label(name: str) -> bool:
    return len(name) <= 63 and bool(_DNS_LABEL.match(name))


def is_label_value(value: str) -> bool:
    return len(value) <= MAX_LABEL_VALUE and bool(_LABEL_VALUE.match(value))
