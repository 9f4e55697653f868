"""The language table and the assignment of training examples to languages.

The table is `mblip/data/languages.tsv`: the 96 languages mBLIP trains on (English + 95), each with its
NLLB-200 code, the language name the authors' prompts use (their quirks kept, e.g. ``iw`` -> "former Hebrew",
``bn`` -> "Bangla"), and its share of mC4 in percent (the authors' ``mc4_lang_dist``; protocol §6.4, §7).

Assignment (protocol §7): the authors shuffle the English examples once with a seeded NumPy RNG, walk the
languages in table order and give each a *contiguous slice* of ``floor(N * p / 100)`` examples; the few
examples left over by flooring get no language and are dropped. ``assignment="temperature"`` is the
smoothed alternative (``q ∝ p^(1/T)``, renormalised), which gives low-resource languages more data.
Restricting the table to a user's own languages renormalises the shares to 100 %.
"""
from __future__ import annotations

import csv
import difflib
import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Sequence

import numpy as np

ASSIGNMENTS = ("mc4", "temperature")


@dataclass(frozen=True)
class Language:
    code: str
    """mT5/mC4 language code used everywhere in this project (e.g. ``de``, ``iw``, ``fil``)."""
    nllb: str
    """NLLB-200 code: the translator's forced target-language token (e.g. ``deu_Latn``)."""
    name: str
    """English name the authors' prompts use, verbatim (e.g. ``Caption the image in German.``)."""
    mc4_share: float
    """Share of mC4 in percent; the authors' allocation weights."""


@functools.cache
def table() -> dict[str, Language]:
    """All 96 languages, in the authors' order (the order the assignment walks)."""
    text = resources.files("mblip").joinpath("data/languages.tsv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    out = {}
    for i, row in enumerate(rows, start=2):
        try:
            out[row["code"]] = Language(row["code"], row["nllb"], row["name_in_prompts"],
                                        float(row["mc4_share_percent"]))
        except (KeyError, ValueError) as e:
            raise ValueError(f"mblip/data/languages.tsv line {i}: malformed row {row!r} ({e})") from None
    return out


def unknown_code_message(code: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(code, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"unknown language code {code!r}.{hint} Known codes: {' '.join(known)}"


def get(code: str) -> Language:
    """The table row of ``code``; a clear error (with near matches) for an unknown code."""
    langs = table()
    if code not in langs:
        raise KeyError(unknown_code_message(code, langs))
    return langs[code]


def validate(codes: Sequence[str]) -> list[str]:
    """Check a user's language list: known codes, no duplicates. Returns it as a list."""
    seen = set()
    for c in codes:
        get(c)
        if c in seen:
            raise ValueError(f"language code {c!r} is listed twice")
        seen.add(c)
    return list(codes)


def shares(codes: Sequence[str] | None = None, assignment: str = "mc4", temperature: float = 1.0) -> dict[str, float]:
    """Percent of examples per language, in table order, summing to 100.

    ``codes=None`` means all 96 languages (the paper). With ``assignment="mc4"`` and all languages these are
    exactly the authors' mC4 shares (which already sum to ~100); a subset is renormalised.
    """
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    langs = table()
    wanted = set(validate(codes)) if codes is not None else set(langs)
    raw = {c: l.mc4_share for c, l in langs.items() if c in wanted}
    if assignment == "temperature":
        raw = {c: p ** (1.0 / temperature) for c, p in raw.items()}
    total = sum(raw.values())
    if codes is None and assignment == "mc4":
        return raw  # the authors' numbers, untouched
    return {c: 100.0 * p / total for c, p in raw.items()}


def counts(n: int, share: dict[str, float]) -> dict[str, int]:
    """floor(n * p / 100) per language: the authors' slice sizes."""
    return {c: int(math.floor(n * p / 100.0)) for c, p in share.items()}


def assign(n: int, codes: Sequence[str] | None = None, *, assignment: str = "mc4", temperature: float = 1.0,
           seed: int = 42) -> list[str | None]:
    """Language of each of ``n`` examples (by original index); ``None`` = dropped by flooring.

    Seeded shuffle (``np.random.RandomState(seed)``, as the authors' ``np.random.seed(42)`` + shuffle), then
    contiguous slices in table order.
    """
    order = np.random.RandomState(seed).permutation(n)
    out: list[str | None] = [None] * n
    start = 0
    for code, k in counts(n, shares(codes, assignment, temperature)).items():
        for idx in order[start:start + k]:
            out[int(idx)] = code
        start += k
    return out
