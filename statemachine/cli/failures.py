"""The one-line message of an expected failure of a command; loaded only when a command fails."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, ProgrammingError

from statemachine.core.machine import InvalidEventError
from statemachine.core.secrets import TokenDecryptionError
from statemachine.services.accounts import InvalidInputError, UnknownUserError
from statemachine.services.settings import SettingsError
from statemachine.store.repository import UnknownMailboxError

EXPECTED_ERRORS = (
    SettingsError,
    InvalidInputError,
    UnknownUserError,
    UnknownMailboxError,
    InvalidEventError,
    TokenDecryptionError,
    FileNotFoundError,
    IsADirectoryError,
)


# SQLSTATE classes whose server message names only the database or role, never data: safe to print
_LOGIN_FAILURES = ("28", "3D")


def _database_error(err: DBAPIError) -> str:
    sqlstate = str(getattr(err.orig, "sqlstate", None) or "")
    if err.orig is not None and sqlstate.startswith(_LOGIN_FAILURES):
        cause = err.orig.__cause__ or err.orig
        return f"cannot open the database in DATABASE_URL: {str(cause).splitlines()[0]}"
    if isinstance(err, ProgrammingError) and "does not exist" in str(err.orig):
        return "the database schema is missing or old: run `tokenwarden migrate`"
    return f"database error: {type(err.orig).__name__} {sqlstate}".rstrip()


def failure_message(err: Exception) -> str | None:
    """What to print for an expected failure (no traceback, no secret); None for a bug, which is re-raised."""
    if isinstance(err, EXPECTED_ERRORS):
        return str(err).replace("\n", "\n  ")
    if isinstance(err, DBAPIError):
        return _database_error(err)
    if isinstance(err, OSError):
        return f"cannot connect: {err.strerror or err}"
    return None
