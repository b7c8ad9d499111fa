"""Structured logs: one JSON object per line, with the record's `extra` fields and the job's context.

Why JSON: operators search cycles by mailbox id, provider or job id, which plain text makes a regex
hunt. The job id reaches every line logged during a job (the cycle's own "refresh cycle" line
included) through a context variable, so the core never needs to know about jobs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

LOG_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar("tokenwarden_log_context", default=MappingProxyType({}))
LEVEL_VARIABLE = "TOKENWARDEN_LOG_LEVEL"
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_HANDLER_MARK = "_tokenwarden_json"
# Chatty at INFO (one line per callback, per HTTP request, two per arq job beside our one per cycle):
# shown only when DEBUG is asked for. arq's failed jobs are logged at ERROR, so they still show.
_CHATTY_LOGGERS = ("transitions", "httpx", "httpcore", "arq.worker")


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields (e.g. job_id) to every line logged inside the block, in this task only."""
    token = LOG_CONTEXT.set({**LOG_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        LOG_CONTEXT.reset(token)


# Values JSON takes as they are: the usual case, checked by exact type before anything slower.
_AS_IS = frozenset({str, int, float, bool, type(None)})
# One encoder for every line: json.dumps builds a new one per call for any option but the defaults.
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def _plain(value: Any) -> Any:
    if type(value) in _AS_IS:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):  # e.g. a job line's mailbox ids: a JSON array, searchable as one
        return [_plain(item) for item in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", **context, **extra}`; exceptions as one `exc` string."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({key: _plain(value) for key, value in LOG_CONTEXT.get().items()})
        data.update({key: _plain(value) for key, value in record.__dict__.items() if key not in _STANDARD})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return _ENCODE(data)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time (pytest swaps it per test), like logging's lastResort."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def log_level(environ: Mapping[str, str], default: str) -> str:
    """TOKENWARDEN_LOG_LEVEL when it names a level (DEBUG, INFO, WARNING, ERROR), else `default`."""
    wanted = environ.get(LEVEL_VARIABLE, "").strip().upper()
    return wanted if wanted in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"} else default


def configure_logging(level: str | int = logging.INFO) -> None:
    """Send JSON lines to stderr from the root logger; idempotent, leaves other handlers (pytest's) alone."""
    root = logging.getLogger()
    root.setLevel(level)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
    if any(getattr(handler, _HANDLER_MARK, False) for handler in root.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
