"""What a session's next final is given as prompt: the end of its recent text.

Whisper reads the prompt as the text that came before the audio, so a final's words and spelling
follow the conversation's. Each final's transcript stores the prompt for the next one (its
``context``), so every ASR worker that takes the session's next final reads the same prompt from
the RESULTS stream.
"""

from __future__ import annotations


def next_prompt(prompt: str, text: str, chars: int) -> str:
    """``prompt`` followed by the final's ``text``, cut to its last ``chars`` characters; "" when
    ``chars`` is 0 (no prompt)."""
    if chars <= 0:
        return ""
    return f"{prompt} {text}".strip()[-chars:]
