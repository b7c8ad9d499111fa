"""JSON log lines: one object per line, with the record's extra fields and the job's context."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from statemachine.services.logs import JsonFormatter, log_context, log_level


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("statemachine.services.cycle", logging.INFO, __file__, 1, message, None, None)
    rec.__dict__.update(extra)
    return rec


def test_a_line_carries_extra_fields_and_the_context() -> None:
    at = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    with log_context(job_id="refresh:7:1700000000000", job_try=1):
        line = JsonFormatter().format(record("refresh cycle", mailbox_id=7, outcome="refreshed", at=at))
    assert "\n" not in line
    data = json.loads(line)
    assert {k: data[k] for k in ("level", "logger", "message", "mailbox_id", "outcome", "job_id", "job_try")} == {
        "level": "INFO",
        "logger": "statemachine.services.cycle",
        "message": "refresh cycle",
        "mailbox_id": 7,
        "outcome": "refreshed",
        "job_id": "refresh:7:1700000000000",
        "job_try": 1,
    }
    assert data["at"] == "2026-11-28T15:00:00+00:00"


def test_a_list_of_ids_is_a_json_array_and_anything_else_its_text() -> None:
    at = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    data = json.loads(JsonFormatter().format(record("refresh job", refreshed=[7, 8], when=(at,), odd={1: 2})))
    assert (data["refreshed"], data["when"], data["odd"]) == ([7, 8], ["2026-11-28T15:00:00+00:00"], "{1: 2}")


def test_the_context_ends_with_its_block_and_exceptions_stay_on_one_line() -> None:
    with log_context(job_id="x"):
        pass
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("failed")
        rec.exc_info = sys.exc_info()
    data = json.loads(JsonFormatter().format(rec))
    assert "job_id" not in data
    assert data["exc"].splitlines()[-1] == "ValueError: boom"


def test_log_level_from_the_environment() -> None:
    assert log_level({"TOKENWARDEN_LOG_LEVEL": "debug"}, "INFO") == "DEBUG"
    assert log_level({"TOKENWARDEN_LOG_LEVEL": "loud"}, "INFO") == "INFO"
    assert log_level({}, "WARNING") == "WARNING"
