"""Logging: compact text lines or one JSON object per line, with the session id when given."""

from __future__ import annotations

import io
import json
import logging

import pytest

from common import logs
from common.settings import Settings, replace


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def capture(settings: Settings, role: str) -> io.StringIO:
    logs.setup(settings, role)
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    return stream


def test_json_lines_carry_role_level_message_and_session_id() -> None:
    out = capture(replace(Settings(), log_format="json"), "ingest")
    logging.getLogger("ingest.connection").info("session %s ended", "abc123", extra={"session_id": "abc123"})
    logging.getLogger("ingest.app").warning("no session here")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["role"] == "ingest" and first["level"] == "INFO" and first["msg"] == "session abc123 ended"
    assert first["session_id"] == "abc123" and first["logger"] == "ingest.connection"
    assert "session_id" not in second and second["level"] == "WARNING"


def test_text_lines_name_the_role_and_respect_the_level() -> None:
    out = capture(replace(Settings(), log_level="WARNING"), "vad")
    logging.getLogger("vad_worker.worker").info("hidden")
    logging.getLogger("vad_worker.worker").warning("shown %d", 7)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and " vad WARNING vad_worker.worker: shown 7" in lines[0]


def test_startup_configuration_is_logged_with_secrets_masked() -> None:
    settings = replace(Settings(), redis_url="redis://:hunter2@cache:6379/0", log_format="json")
    out = capture(settings, "ingest")
    logs.log_config(settings, "ingest")
    line = json.loads(out.getvalue())
    assert "effective configuration" in line["msg"] and "redis://:****@cache:6379/0" in line["msg"]
    assert "hunter2" not in out.getvalue()


def test_a_session_logger_names_the_session_in_text_and_json() -> None:
    out = capture(Settings(), "asr")
    logs.for_session(logging.getLogger("asr_worker.worker"), "s42").info("final %d revision: %s", 3, "ok")
    assert out.getvalue().rstrip().endswith(" asr INFO asr_worker.worker: session s42: final 3 revision: ok")
    out = capture(replace(Settings(), log_format="json"), "vad")
    session_log = logs.for_session(logging.getLogger("vad_worker.worker"), "s43")
    session_log.warning("message %d never reached the stream", 7, extra={"shard": 2})
    line = json.loads(out.getvalue())
    assert line["session_id"] == "s43" and line["msg"] == "session s43: message 7 never reached the stream"


def test_a_session_logger_keeps_the_traceback() -> None:
    out = capture(replace(Settings(), log_format="json"), "asr")
    try:
        raise ValueError("bad audio")
    except ValueError:
        logs.for_session(logging.getLogger("asr_worker.worker"), "s44").exception("final %d failed", 1)
    line = json.loads(out.getvalue())
    assert line["level"] == "ERROR" and line["session_id"] == "s44" and "ValueError: bad audio" in line["exc"]
