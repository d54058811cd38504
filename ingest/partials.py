"""Partial transcripts that read well: a stable prefix that never changes, and a tail that may.

Whisper re-decodes an open utterance from its start for every partial, so consecutive partials
disagree at their end (the last word is half heard), and a decode may even stop early and come
out shorter. Shown as is, captions flicker and shrink. This engine turns the stream of partial
texts of one session into what the client should see. Pure and synchronous, no I/O::

    stab = PartialStabilizer()
    view = stab.partial("u0", "hello there how", end_s=2.0)  # PartialView, or None: send nothing
    stab.final("u0")                                         # the utterance's final went out

Rules, per utterance (``utterance_id``; a new id starts afresh, the older one is forgotten):

* Words are compared by `word_key` (lower case, letters and digits only), so "Hello," agrees
  with "hello".
* Stable prefix (LocalAgreement-2, as in whisper_streaming): a word becomes stable once two
  consecutive partials agree on it and on every word before it. Stable words never change and
  never disappear until the final, which replaces the whole utterance.
* A partial that contradicts the stable prefix keeps the prefix; its words after the position
  where the prefix ends (found by matching the prefix's last word) form the new tail.
* Never shorter without reason: a partial whose tail is only a (possibly empty) prefix of the tail
  on screen, i.e. that drops words without saying anything different, keeps the longer tail. A
  tail with a different word replaces it: that is a revision, the reason to shorten.
* Late and stale input sends nothing: a partial of an utterance whose final was seen, a partial
  not newer (``end_s``) than the last one, or one that leaves the view unchanged.

The client gets ``text`` (everything to show) and ``stable_text`` (a prefix of ``text`` that
later partials of the utterance keep); the final may still differ, because it is decoded again
with a wider beam and the session's context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NOT_WORD = re.compile(r"[\W_]+")


def word_key(word: str) -> str:
    """How words are compared: ``"Hello,"`` and ``"hello"`` agree."""
    return _NOT_WORD.sub("", word.lower())


@dataclass(frozen=True, slots=True)
class PartialView:
    utterance_id: str
    text: str
    """Everything to show: the stable prefix, then the unstable tail."""
    stable_text: str
    """A prefix of ``text`` (whole words) that later partials of this utterance keep."""

    @property
    def unstable_text(self) -> str:
        return self.text[len(self.stable_text) :].strip()


@dataclass(slots=True)
class _Utterance:
    stable: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    end_s: float = float("-inf")


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if word_key(x) != word_key(y):
            break
        n += 1
    return n


def _after_prefix(stable: list[str], words: list[str]) -> int:
    """Index in ``words`` where the stable prefix ends."""
    if _common_prefix(stable, words) == len(stable):
        return len(stable)
    if stable:  # a contradicted prefix: resume after the stable prefix's last word, nearest its place
        last = word_key(stable[-1])
        candidates = [i + 1 for i, w in enumerate(words) if word_key(w) == last]
        if candidates:
            return min(candidates, key=lambda i: (abs(i - len(stable)), i))
    return min(len(stable), len(words))


class PartialStabilizer:
    """One session's partial views; see the module docstring for the rules."""

    def __init__(self) -> None:
        self._current: str | None = None
        self._utt = _Utterance()
        self._finalised: set[str] = set()

    def __repr__(self) -> str:
        return f"PartialStabilizer(utterance={self._current!r}, stable_words={len(self._utt.stable)})"

    def partial(self, utterance_id: str, text: str, end_s: float) -> PartialView | None:
        """The view to send for this partial, or None when nothing should be sent."""
        if utterance_id in self._finalised:
            return None
        if utterance_id != self._current:
            self._current, self._utt = utterance_id, _Utterance()
        utt = self._utt
        if end_s <= utt.end_s:
            return None
        utt.end_s = end_s
        words = text.split()
        tail = words[_after_prefix(utt.stable, words) :]
        agreed = _common_prefix(utt.tail, tail)
        if agreed == len(tail) and len(tail) < len(utt.tail):
            tail = utt.tail  # only fewer words, nothing different: keep what is on screen
        before = (len(utt.stable), [word_key(w) for w in utt.stable + utt.tail])
        utt.stable += tail[:agreed]
        utt.tail = tail[agreed:]
        if (len(utt.stable), [word_key(w) for w in utt.stable + utt.tail]) == before:
            return None
        stable_text = " ".join(utt.stable)
        return PartialView(utterance_id, " ".join(utt.stable + utt.tail), stable_text)

    def final(self, utterance_id: str) -> None:
        """The utterance's final was delivered: its later partials are dropped."""
        self._finalised.add(utterance_id)
        if utterance_id == self._current:
            self._current, self._utt = None, _Utterance()
        if len(self._finalised) > 64:  # utterance ids only grow; keep the recent ones
            self._finalised = set(sorted(self._finalised, key=_order)[-32:])


def _order(utterance_id: str) -> tuple[int, str]:
    digits = utterance_id.lstrip("u")
    return (int(digits), "") if digits.isdigit() else (-1, utterance_id)
