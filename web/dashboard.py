"""The user's dashboard: each of their mailboxes with its state-driven banner, and one notice per incident."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from statemachine.mail.emails import provider_display_name
from web import reports, store
from web.auth import authenticate
from web.banners import Banner
from web.pages import context_of, render


@dataclass(frozen=True)
class MailboxCard:
    id: int
    address: str
    provider: str
    state: str
    banner: Banner
    last_refreshed_at: datetime | None


def card_for(row: Any, incidents: reports.OpenIncidents, now: datetime) -> MailboxCard:
    banner = incidents.banner(row, now)
    return MailboxCard(row.id, row.address, row.provider, row.state, banner, row.last_refreshed_at)


async def dashboard(request: Request) -> Response:
    """GET /: the signed-in user's mailboxes; a short explanation for everyone else."""
    auth = await authenticate(request)
    if auth is None:
        return render(request, "signed_out.html")
    now = datetime.now(UTC)
    async with context_of(request).runtime.sessionmaker() as session, session.begin():
        rows = await reports.owned_mailboxes(session, auth.user.user_id)
        incidents = await reports.open_incidents_by_provider(session)
        flash = await store.take_flash(session, auth.user.session_id)
    cards = [card_for(row, incidents, now) for row in rows]
    notices = [provider_display_name(p) for p in sorted({card.provider for card in cards} & incidents.providers)]
    connectable = sorted(context_of(request).runtime.providers)  # registered, with client credentials
    context = {"cards": cards, "notices": notices, "flash": flash, "connectable": connectable}
    return render(request, "dashboard.html", context)


routes = [Route("/", dashboard, methods=["GET"], name="dashboard")]
