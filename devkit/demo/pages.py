"""The demo-only pages: /dev/mail (every email the worker sent) and, from panel.py, /dev/sandbox.

Why in the web app: a visitor breaks a mailbox, watches its banner change, and reads the email it
caused, all in one browser. These routes exist only when `create_app` is given the demo's `extension`
(`tokenwarden demo`); a real deployment has no /dev/ at all. The mail list is open to anyone who can
reach the demo (like any local mail catcher: the demo listens on 127.0.0.1), and shows no secret:
emails carry addresses and links, never a token.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devkit.demo.config import DemoConfig, demo_of
from devkit.demo.host import HostApp, routes as host_routes
from devkit.demo.mailcatcher import StoredMail, get_mail, list_mail
from devkit.demo.panel import routes as panel_routes
from web.app import AppExtension, security_headers
from web.auth import authenticate
from web.pages import PageError, context_of, render

# An email's own HTML: its inline styles may apply, nothing else may load or run; only our page may frame it.
EMAIL_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'self'"


async def mail_list(request: Request) -> Response:
    """GET /dev/mail: the newest messages first."""
    await authenticate(request)  # not required; the page header shows who is signed in
    mails = list_mail(demo_of(request).maildir)
    return render(request, "dev/mail.html", {"mails": mails, "quote": quote})


def _found(request: Request) -> StoredMail:
    mail = get_mail(demo_of(request).maildir, request.path_params["key"])
    if mail is None:
        raise PageError(404, "No such message", "The demo's mail catcher has no message with that name.")
    return mail


async def mail_message(request: Request) -> Response:
    """GET /dev/mail/{key}: headers, the HTML part (framed, its own page) and the text part."""
    await authenticate(request)
    mail = _found(request)
    response = render(request, "dev/mail_message.html", {"mail": mail, "quote": quote})
    headers = dict((k.decode(), v.decode()) for k, v in security_headers(context_of(request).runtime.settings))
    response.headers["content-security-policy"] = headers["content-security-policy"] + "; frame-src 'self'"
    return response


async def mail_html(request: Request) -> Response:
    """GET /dev/mail/{key}/html: the HTML part as the recipient's mail client would show it; links open on top."""
    mail = _found(request)
    html = mail.html or "<p>(this message has no HTML part)</p>"
    html = html.replace("<head>", '<head><base target="_top">', 1)
    headers = {"content-security-policy": EMAIL_CSP, "x-frame-options": "SAMEORIGIN"}
    return Response(html, media_type="text/html; charset=utf-8", headers=headers)


routes = [
    Route("/dev/mail", mail_list, methods=["GET"], name="dev_mail"),
    Route("/dev/mail/{key:str}", mail_message, methods=["GET"], name="dev_mail_message"),
    Route("/dev/mail/{key:str}/html", mail_html, methods=["GET"], name="dev_mail_html"),
    *panel_routes,
]


def extension(config: DemoConfig, host: HostApp) -> AppExtension:
    """The demo's additions to the production web app: these routes, the host app's, and the "demo timings" strip."""
    return AppExtension(routes=(*routes, *host_routes), page_context={"demo": config, "host": host})
