"""Names of the connection states, the events that move them, and the emails they cause.

Plain string enums: they go straight into TEXT columns and JSON without conversion.
"""

from enum import StrEnum


class State(StrEnum):
    HEALTHY = "healthy"
    RETRYING = "retrying"
    DEGRADED = "degraded"
    DISCONNECTED = "disconnected"


class Event(StrEnum):
    REFRESH_SUCCEEDED = "refresh_succeeded"
    REFRESH_FAILED_TRANSIENT = "refresh_failed_transient"
    REFRESH_FAILED_PERMANENT = "refresh_failed_permanent"
    REFRESH_FAILED_CONFIG = "refresh_failed_config"
    RECONNECTED = "reconnected"
    RECONNECT_REJECTED = "reconnect_rejected"
    OPS_RETRY_NOW = "ops_retry_now"
    OPS_DISCONNECT = "ops_disconnect"
    REMOVED = "removed"  # the host app removed the mailbox: disconnected for good, until connected again


class FailureKind(StrEnum):
    """The class a failed refresh falls into (docs/errors.md): what to do about it."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    CONFIG = "config"


class EmailKind(StrEnum):
    """Each member names a template pair in templates/emails/."""

    TOKEN_REFRESH_RETRY = "token_refresh_retry"
    TOKEN_REFRESH_FINAL_FAILURE = "token_refresh_final_failure"
    TOKEN_REFRESH_PERMANENT_FAILURE = "token_refresh_permanent_failure"
    RECONNECTED = "reconnected"
    TOKEN_REFRESH_REMINDER = "token_refresh_reminder"
