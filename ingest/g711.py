"""G.711 telephone audio (8-bit µ-law and A-law, ITU-T G.711) decoded to PCM s16le.

Telephony gateways stream G.711 as it comes off the line (Twilio media streams send µ-law at
8 kHz; European trunks use A-law), and Deepgram clients name it with ``encoding=mulaw`` or
``encoding=alaw``. Each byte is one sample, so decoding is one lookup in a 256-entry table; the
PCM then goes the way of any ``linear16`` audio (resampled to 16 kHz by the connection).
Pure, no I/O.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Table = npt.NDArray[np.int16]


def _mulaw_table() -> Table:
    u = ~np.arange(256, dtype=np.int32) & 0xFF  # bits are sent inverted
    exponent = (u >> 4) & 0x07
    magnitude = ((((u & 0x0F) << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype("<i2")


def _alaw_table() -> Table:
    a = np.arange(256, dtype=np.int32) ^ 0x55  # even bits are sent inverted
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8,
                         ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype("<i2")


MULAW: Table = _mulaw_table()
ALAW: Table = _alaw_table()
TABLES: dict[str, Table] = {"mulaw": MULAW, "alaw": ALAW}
"""Deepgram's ``encoding`` names of the 8-bit encodings -> their decoding tables."""


def decode(frame: bytes, table: Table) -> bytes:
    """One PCM s16le sample (2 bytes) per byte of ``frame``."""
    return table[np.frombuffer(frame, dtype=np.uint8)].tobytes()
