"""The faults the demo's panel and `tokenwarden sandbox` offer, in words and as sandbox fault bodies.

Kept apart from control.py (which talks HTTP and reads the database) so the CLI's parser can list
the modes without importing either.
"""

from __future__ import annotations

from typing import Any

MAX_OUTAGE_MINUTES = 60
TIMEOUT_STALL_SECONDS = 10  # longer than the demo's token request timeout (3 s), so the worker gives up first
RETRY_AFTER_SECONDS = 45  # longer than the longest wait inside a cycle: the next cycle waits for it instead
# The modes a visitor can pick, in words, and the sandbox fault each one is.
MAILBOX_FAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "revoke": ("access revoked (invalid_grant)", {"mode": "revoke"}),
    "timeout": (f"time out (no answer for {TIMEOUT_STALL_SECONDS} s)", {"mode": "timeout",
                                                                        "seconds": TIMEOUT_STALL_SECONDS}),
    "5xx": ("server error (503)", {"mode": "http_5xx", "status": 503}),
    "429": (f"rate limited (429, Retry-After {RETRY_AFTER_SECONDS} s)", {"mode": "rate_limit",
                                                                         "retry_after": RETRY_AFTER_SECONDS}),
    "malformed": ("malformed 200 (not JSON)", {"mode": "malformed", "variant": "not_json"}),
    "mfa": ("a fresh multi-factor sign-in required", {"mode": "mfa_required"}),
    "conditional_access": ("blocked by an organisation policy (Conditional Access)", {"mode": "conditional_access"}),
}  # fmt: skip
