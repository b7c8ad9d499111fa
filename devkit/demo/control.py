"""Breaking mailboxes on purpose: the sandbox's fault API, addressed by mailbox id instead of refresh token.

Why one module for the panel (/dev/sandbox) and the CLI (`tokenwarden sandbox`): both must send the
same faults, and both must find a mailbox's refresh token the same way, by decrypting it with the
demo's key. The token goes from the database to the sandbox on 127.0.0.1 and nowhere else: it is
never printed, logged or put on a page (faults are listed by mailbox id).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from devkit.demo.datadir import DemoError
from devkit.demo.faults import MAILBOX_FAULTS
from devkit.sandbox import DIALECT_MOUNTS
from statemachine.core.secrets import TokenCipher, TokenDecryptionError
from statemachine.providers import registry
from statemachine.store.db import Sessionmaker
from statemachine.store.models import Mailbox

SANDBOX_MODES = {body["mode"]: words for words, body in MAILBOX_FAULTS.values()} | {
    "invalid_client": "wrong client secret (invalid_client)",
    "outage": "outage (503 for every request)",
}


@dataclass(frozen=True)
class FaultView:
    """A fault as the panel and the CLI show it: by mailbox id (None: provider-wide), never by token."""

    mailbox_id: int | None
    mode: str
    count: int | None
    remaining_seconds: float | None

    @property
    def words(self) -> str:
        return SANDBOX_MODES.get(self.mode, self.mode)


async def grant_of(sessionmaker: Sessionmaker, cipher: TokenCipher, mailbox_id: int) -> tuple[str, str]:
    """The mailbox's provider and current refresh token; DemoError for an unknown id or a token from another key."""
    async with sessionmaker() as session:
        row = (
            await session.execute(
                select(Mailbox.provider, Mailbox.refresh_token_ciphertext).where(Mailbox.id == mailbox_id)
            )
        ).first()
    if row is None:
        raise DemoError(f"no mailbox {mailbox_id}")
    try:
        return row.provider, cipher.decrypt(row.refresh_token_ciphertext, mailbox_id=mailbox_id, role="refresh")
    except TokenDecryptionError:
        raise DemoError(f"mailbox {mailbox_id}'s token was not encrypted with this demo's key") from None


async def mailbox_ids_by_token(sessionmaker: Sessionmaker, cipher: TokenCipher) -> dict[str, int]:
    """Every decryptable refresh token -> its mailbox id (to show the sandbox's view by mailbox)."""
    async with sessionmaker() as session:
        rows = (await session.execute(select(Mailbox.id, Mailbox.refresh_token_ciphertext))).all()
    found = {}
    for mailbox_id, ciphertext in rows:
        try:
            found[cipher.decrypt(ciphertext, mailbox_id=mailbox_id, role="refresh")] = mailbox_id
        except TokenDecryptionError:
            continue
    return found


class SandboxControl:
    """The fault API of one of the demo's sandbox providers (all served at `url`); every failure to reach it is one
    DemoError line. `of` gives another provider's."""

    def __init__(self, http: httpx.AsyncClient, url: str, provider: str = "google") -> None:
        self.http, self.url, self.provider = http, url.rstrip("/"), provider

    def of(self, provider: str) -> SandboxControl:
        return SandboxControl(self.http, self.url, provider)

    @property
    def name(self) -> str:
        """How the sentences call it: "the sandbox Google", "the sandbox Microsoft"."""
        return f"the sandbox {registry.get(self.provider).speaker}"

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self.url}{DIALECT_MOUNTS[self.provider]}/_sandbox/{path}"
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.HTTPError:
            raise DemoError(f"the demo's {self.name} at {self.url} is not answering: is the demo running?") from None
        if response.status_code >= 400:
            raise DemoError(f"the sandbox refused ({response.status_code}): {response.text[:200]}")
        body: dict[str, Any] = response.json()
        return body

    async def add_account(self, email: str, sub: str, tid: str | None = None) -> None:
        await self._call("POST", "accounts", json={"email": email, "sub": sub, "tid": tid})

    async def add_grant(self, sub: str, refresh_token: str) -> None:
        await self._call("POST", "tokens", json={"sub": sub, "refresh_token": refresh_token})

    async def break_mailbox(self, refresh_token: str, mode: str, count: int | None = None) -> None:
        if mode not in MAILBOX_FAULTS:
            raise DemoError(f"mode must be one of: {', '.join(MAILBOX_FAULTS)}")
        body = {**MAILBOX_FAULTS[mode][1], "refresh_token": refresh_token}
        await self._call("POST", "faults", json=body if count is None else {**body, "count": count})

    async def outage(self, minutes: float) -> None:
        await self._call("POST", "faults", json={"mode": "outage", "seconds": minutes * 60})

    async def misconfigure(self) -> None:
        """Every token request answers 401 invalid_client, as after a rotated client secret."""
        await self._call("POST", "faults", json={"mode": "invalid_client"})

    async def clear(self, refresh_token: str | None = None) -> int:
        """Clear one mailbox's fault, or every fault (provider-wide included); returns how many."""
        params = {"refresh_token": refresh_token} if refresh_token else None
        cleared: int = (await self._call("DELETE", "faults", params=params))["cleared"]
        return cleared

    async def faults(self, mailbox_ids: Mapping[str, int]) -> tuple[FaultView | None, dict[int, FaultView]]:
        """Of every provider: a provider-wide fault (Google's first), and each mailbox's (faults of tokens no
        mailbox holds any more are left out)."""
        provider: FaultView | None = None
        by_mailbox: dict[int, FaultView] = {}
        for name in DIALECT_MOUNTS:
            body = await self.of(name)._call("GET", "faults")
            provider = provider or (_view(None, body["provider"]) if body["provider"] else None)
            tokens = body["tokens"].items()
            by_mailbox |= {mailbox_ids[t]: _view(mailbox_ids[t], fault) for t, fault in tokens if t in mailbox_ids}
        return provider, by_mailbox

    async def requests(self, mailbox_ids: Mapping[str, int]) -> tuple[dict[str, int], dict[int | None, int]]:
        """Token requests so far, to every provider: by grant type, and by mailbox id (None: a token no mailbox
        holds now; a Microsoft mailbox's older tokens, rotated away, count there)."""
        by_grant: dict[str, int] = {}
        by_mailbox: dict[int | None, int] = {}
        for name in DIALECT_MOUNTS:
            body = await self.of(name)._call("GET", "requests")
            for grant, count in body["by_grant_type"].items():
                by_grant[grant] = by_grant.get(grant, 0) + count
            for token, count in body["by_refresh_token"].items():
                key = mailbox_ids.get(token)
                by_mailbox[key] = by_mailbox.get(key, 0) + count
        return by_grant, by_mailbox


def _view(mailbox_id: int | None, fault: Mapping[str, Any]) -> FaultView:
    return FaultView(mailbox_id, str(fault["mode"]), fault.get("count"), fault.get("remaining_seconds"))
