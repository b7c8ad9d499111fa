"""/dev/sandbox (demo only, operators only): break mailboxes at the sandbox providers and watch what follows.

Why in the web app: the visitor is already there, signed in; every control is a CSRF-checked POST
form that calls the sandbox's fault API (web/demo/actions.py, shared with `tokenwarden sandbox`) and
comes back here with a sentence saying what was done and what to watch. Faults and request counts
are shown by mailbox, never by refresh token.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from devkit.demo import actions
from devkit.demo.config import demo_of
from devkit.demo.control import SandboxControl, mailbox_ids_by_token
from devkit.demo.datadir import DemoError
from devkit.demo.faults import MAILBOX_FAULTS
from devkit.demo.stories import FLEET_OWNER
from statemachine.store import queries
from statemachine.store.repository import UnknownMailboxError
from web import store
from web.auth import Auth, checked_form, require_admin
from web.pages import PageError, context_of, render

OUTAGE_MINUTES = (1, 2, 5)
MODE_LABELS = {"revoke": "revoke (invalid_grant)", "timeout": "time out", "5xx": "503 error",
               "429": "429 + Retry-After", "malformed": "malformed 200"}  # fmt: skip


def _control(request: Request) -> SandboxControl:
    return SandboxControl(context_of(request).runtime.http, demo_of(request).sandbox_url)


async def panel(request: Request) -> Response:
    """GET /dev/sandbox: the provider-wide controls, then every mailbox with its state, fault and requests."""
    auth = await require_admin(request)
    runtime = context_of(request).runtime
    async with runtime.sessionmaker() as session, session.begin():
        mailboxes = await queries.list_mailboxes(session)
        flash = await store.take_flash(session, auth.user.session_id)
    ids = await mailbox_ids_by_token(runtime.sessionmaker, runtime.cipher)
    try:
        provider, faults = await _control(request).faults(ids)
        by_grant, by_mailbox = await _control(request).requests(ids)
    except DemoError as err:
        raise PageError(502, "The sandbox providers are not answering", str(err)) from None
    context: dict[str, Any] = {
        "mailboxes": [m for m in mailboxes if m["user"] != FLEET_OWNER], "flash": flash, "provider": provider,
        "fleet": [m for m in mailboxes if m["user"] == FLEET_OWNER], "faults": faults, "by_grant": by_grant,
        "by_mailbox": by_mailbox, "modes": {mode: MODE_LABELS.get(mode, mode) for mode in MAILBOX_FAULTS},
        "mode_help": {mode: words for mode, (words, _) in MAILBOX_FAULTS.items()}, "outage_minutes": OUTAGE_MINUTES,
    }  # fmt: skip
    return render(request, "dev/sandbox.html", context)


def _count(form: FormData) -> int | None:
    raw = str(form.get("count") or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise DemoError("count must be a whole number (leave it empty for 'until cleared')")
    return int(raw)


async def _done(request: Request, auth: Auth, kind: str, text: str) -> Response:
    async with context_of(request).runtime.sessionmaker() as session, session.begin():
        await store.set_flash(session, auth.user.session_id, kind, text)
    return RedirectResponse("/dev/sandbox", status_code=303)


async def mailbox_action(request: Request) -> Response:
    """POST /dev/sandbox/mailboxes/{id}/{break|clear}."""
    auth = await require_admin(request)
    form = await checked_form(request, auth)
    runtime, mailbox_id = context_of(request).runtime, request.path_params["mailbox_id"]
    try:
        if request.path_params["action"] == "break":
            actor = f"operator:{auth.user.email}"
            text = await actions.break_mailbox(
                runtime, _control(request), mailbox_id, str(form.get("mode") or ""), _count(form), actor
            )
        elif request.path_params["action"] == "clear":
            text = await actions.clear(runtime, _control(request), mailbox_id)
        else:
            raise PageError(404, "No such control", "A mailbox can be broken or cleared.")
    except (DemoError, UnknownMailboxError) as err:
        return await _done(request, auth, "error", f"Nothing was done: {err}.")
    return await _done(request, auth, "success", text)


async def provider_action(request: Request) -> Response:
    """POST /dev/sandbox/provider/{outage|misconfigure|clear}."""
    auth = await require_admin(request)
    form = await checked_form(request, auth)
    control, action = _control(request), request.path_params["action"]
    try:
        if action == "outage":
            minutes = str(form.get("minutes") or "")
            text = await actions.outage(control, float(minutes) if minutes.isdigit() else 0.0)
        elif action == "misconfigure":
            text = await actions.misconfigure(control)
        elif action == "clear":
            text = await actions.clear(context_of(request).runtime, control, None)
        else:
            raise PageError(404, "No such control", "The provider-wide controls are outage, misconfigure and clear.")
    except DemoError as err:
        return await _done(request, auth, "error", f"Nothing was done: {err}.")
    return await _done(request, auth, "success", text)


routes = [
    Route("/dev/sandbox", panel, methods=["GET"], name="dev_sandbox"),
    Route("/dev/sandbox/mailboxes/{mailbox_id:int}/{action:str}", mailbox_action, methods=["POST"]),
    Route("/dev/sandbox/provider/{action:str}", provider_action, methods=["POST"]),
]
