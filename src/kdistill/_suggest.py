""""Did you mean ...?" for a mistyped name: a method, a kernel family or parameter, a command-line flag.

A candidate matches a word when, compared without leading dashes, case and the ``-``/``_`` difference,

* it is the same name (``label_solve`` -> ``label-solve``),
* one abbreviates the other: the letters of the shorter are, in order, a non-empty prefix of each word of
  the longer (``learning-rate`` -> ``lr``, ``ll`` -> ``learn-labels``), or the shorter, at least 3 letters,
  begins the longer (``init`` -> ``initialization``, ``ste`` -> ``steps``),
* or it is close as a string: :class:`difflib.SequenceMatcher` ratio at least ``cutoff`` (``kipp`` -> ``kip``).

Only the best matches are offered: a same name alone, else those that score within 0.1 of the best, an
abbreviation scoring as a string ratio of 0.9 (so ``learning-rate`` gets ``lr``, not ``learn-labels``).

>>> suggest("kipp", ["analytic", "kip", "rfad"])
['kip']
>>> suggest("--learning-rate", ["--learn-labels", "--lr", "--lr-net", "--steps"])
['--lr']
>>> suggest("--zebra", ["--lr", "--steps"])
[]
>>> did_you_mean("kipp", ["kip", "rfad"])
"did you mean 'kip'?"
"""

from __future__ import annotations

import difflib
import re
from typing import Iterable

__all__ = ["suggest", "did_you_mean"]

_SAME = 2.0  # above any string ratio (at most 1)
_ABBREVIATION = 0.9  # the score of an abbreviation: as good as a string ratio of 0.9
_MIN_PREFIX = 3  # letters a plain prefix needs ("in" is not "--init", "ini" is)


def _norm(name: str) -> str:
    return name.lstrip("-").lower().replace("_", "-")


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[-_.\s]+", _norm(name)) if w]


def _initials_fit(letters: str, words: list[str]) -> bool:
    """``letters`` is, in order, one non-empty prefix of each of ``words`` (``lr``, ``lrate``: learning-rate)."""
    if not words:
        return not letters
    first, rest = words[0], words[1:]
    for k in range(min(len(first), len(letters) - len(rest)), 0, -1):
        if letters[:k] == first[:k] and _initials_fit(letters[k:], rest):
            return True
    return False


def _abbreviates(short: str, long: str) -> bool:
    s, ln = _norm(short), _norm(long)
    if len(s) >= len(ln):
        return False
    if len(s) >= _MIN_PREFIX and ln.startswith(s):
        return True
    words = _words(long)
    return len(words) >= 2 and _initials_fit("".join(_words(short)), words)


def _score(word: str, candidate: str) -> float:
    if _norm(word) == _norm(candidate):
        return _SAME
    ratio = difflib.SequenceMatcher(None, _norm(word), _norm(candidate)).ratio()
    if _abbreviates(word, candidate) or _abbreviates(candidate, word):
        return max(ratio, _ABBREVIATION)
    return ratio


def suggest(word: str, candidates: Iterable[str], *, n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The candidates ``word`` most likely meant, best first (at most ``n``; empty when none is close).

    A same name (case, ``-``/``_``) comes alone; otherwise the candidates scoring at least ``cutoff`` and
    within 0.1 of the best (an abbreviation scores 0.9, others their string ratio), so a clear winner comes
    alone.
    """
    scored: dict[str, float] = {}
    for c in candidates:
        if c != word:
            scored[c] = max(scored.get(c, 0.0), _score(word, c))
    if not scored:
        return []
    best = max(scored.values())
    if best < cutoff:
        return []
    floor = best if best > 1 else max(cutoff, best - 0.1)
    kept = sorted((c for c, s in scored.items() if s >= floor), key=lambda c: (-scored[c], len(c), c))
    return kept[:n]


def did_you_mean(word: str, candidates: Iterable[str], **kwargs) -> str | None:
    """``"did you mean 'a'?"`` (or ``'a' or 'b'``, ``'a', 'b' or 'c'``) for :func:`suggest`'s matches, else None."""
    found = [repr(c) for c in suggest(word, candidates, **kwargs)]
    if not found:
        return None
    listed = found[0] if len(found) == 1 else f"{', '.join(found[:-1])} or {found[-1]}"
    return f"did you mean {listed}?"
