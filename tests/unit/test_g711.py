"""G.711 decoding (`ingest.g711`): the ITU-T tables, checked at their anchor points and, where
Python still ships it, against the standard library's `audioop` for every byte."""

from __future__ import annotations

import importlib
import warnings

import numpy as np

from ingest import g711


def test_mulaw_anchor_points() -> None:
    # Bits are inverted on the line: 0xFF and 0x7F are the two zeros, 0x00 and 0x80 the extremes.
    assert g711.MULAW[0xFF] == 0 and g711.MULAW[0x7F] == 0
    assert g711.MULAW[0x00] == -32124 and g711.MULAW[0x80] == 32124
    assert g711.MULAW[0xFE] == 8 and g711.MULAW[0x7E] == -8  # the smallest steps


def test_alaw_anchor_points() -> None:
    assert g711.ALAW[0xD5] == 8 and g711.ALAW[0x55] == -8  # A-law has no zero: +-8 is the smallest
    assert g711.ALAW[0xAA] == 32256 and g711.ALAW[0x2A] == -32256


def test_tables_are_odd_symmetric_and_monotonic_per_sign() -> None:
    for table in (g711.MULAW, g711.ALAW):
        values = table.astype(np.int32)
        assert sorted(values[values > 0]) == sorted(-values[values < 0])  # same magnitudes each side
        assert len(set(values.tolist())) >= 255  # one level per code (mu-law's two zeros)


def test_tables_match_audioop_for_every_byte() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            audioop = importlib.import_module("audioop")  # removed in Python 3.13
        except ModuleNotFoundError:
            audioop = None
    every = bytes(range(256))
    if audioop is not None:
        assert np.frombuffer(audioop.ulaw2lin(every, 2), "<i2").tolist() == g711.MULAW.tolist()
        assert np.frombuffer(audioop.alaw2lin(every, 2), "<i2").tolist() == g711.ALAW.tolist()
    assert g711.decode(every, g711.MULAW) == g711.MULAW.tobytes()


def test_decode_gives_two_bytes_of_pcm_per_byte() -> None:
    assert g711.decode(b"", g711.ALAW) == b""
    assert g711.decode(b"\xff\x80", g711.MULAW) == np.array([0, 32124], "<i2").tobytes()
