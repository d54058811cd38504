"""A session's finals as revised: what the RESULTS stream says the transcript is.

RESULTS keeps each final once (``results.<session>.final``) and, since revisions are stored too
(``results.<session>.revision``), each final's `Revision`: its text decoded again with the audio
that followed it. Whoever reads finals back from the stream (an edge resuming a session,
``asr transcript``, ``asr replay``) applies the revisions, so the text a client gets again, or
reads later, is the one the live client was shown last, not the first decode. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from common.messages import Final, Revision, StoredFinal, Transcript


def revised(stored: Iterable[StoredFinal]) -> list[Final]:
    """The finals among ``stored`` (stream order), each ``Transcript`` with the text and words of
    the last revision of it that changed its words (same ``final_index`` and ``utterance_id``;
    a revision's ``text`` "" means "no change"). Revisions of finals not among ``stored`` are
    left out; the finals keep their order."""
    changes: dict[tuple[int, str], Revision] = {}
    finals: list[Final] = []
    for item in stored:
        if isinstance(item, Revision):
            if item.text:
                changes[(item.final_index, item.utterance_id)] = item
        else:
            finals.append(item)
    if not changes:
        return finals
    out: list[Final] = []
    for final in finals:
        change = changes.get((final.final_index, final.utterance_id)) if isinstance(final, Transcript) else None
        out.append(final if change is None else msgspec.structs.replace(final, text=change.text, words=change.words))
    return out
