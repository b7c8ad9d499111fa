"""Every query parameter and form field with empty, huge, NUL, non-UTF-8, negative and out-of-range values.

An operator (who may use every page) sends them; each answer is a page or JSON below 500, nothing changed,
and no unhandled error in the log. Values go in percent-encoded, as a browser or a script would send them.
"""

from __future__ import annotations

import logging

import pytest

from tests.web.support import ADMIN, SignIn, csrf_of, mailbox, row
from web.pages import WebContext

BAD = ["", "%00", "a%00b", "%FF%FE", "x" * 20_000, "-1", "0", "9" * 40, "%0D%0ALocation:%20/evil", "%C0%80"]
GET_PATHS = [
    "/ops?q={v}", "/ops?state={v}", "/ops?provider={v}", "/ops?failing={v}", "/ops?page={v}",
    "/api/mailboxes?all=1&state={v}", "/api/mailboxes?all={v}", "/login?token={v}", "/auth/google/callback?state={v}",
    "/auth/google/callback?code={v}&state=x", "/auth/google/callback?error={v}", "/ops/mailboxes/{v}",
    "/api/mailboxes/{v}", "/api/mailboxes/{v}/history", "/mailboxes/{v}/reconnect",
]  # fmt: skip


@pytest.mark.parametrize("path", GET_PATHS)
async def test_bad_query_values_end_below_500(
    web: WebContext, sign_in: SignIn, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    await mailbox(web)
    admin = await sign_in(ADMIN, admin=True)
    for value in BAD:
        answer = await admin.get(path.format(v=value))
        assert answer.status_code < 500, (value[:40], answer.status_code)
        assert "location" not in answer.headers or "evil" not in answer.headers["location"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_bad_form_values_end_below_500_and_change_nothing(
    web: WebContext, sign_in: SignIn, caplog: pytest.LogCaptureFixture
) -> None:
    mailbox_id = await mailbox(web)
    admin = await sign_in(ADMIN, admin=True)
    token = await csrf_of(admin, f"/ops/mailboxes/{mailbox_id}")
    headers = {"content-type": "application/x-www-form-urlencoded"}
    for value in BAD:
        forms = [
            (f"/ops/mailboxes/{mailbox_id}/retry-now", f"csrf_token={token}&reason={value}"),
            (f"/ops/mailboxes/{mailbox_id}/disconnect", f"csrf_token={value}&reason=x"),
            (f"/ops/mailboxes/{mailbox_id}/{value}", f"csrf_token={token}"),
            (f"/mailboxes/{mailbox_id}/reconnect", f"csrf_token={value}"),
            ("/login", f"token={value}"),
            ("/logout", f"csrf_token={value}"),
        ]
        for path, body in forms:
            answer = await admin.post(path, content=body, headers=headers)
            assert answer.status_code < 500, (path, value[:40], answer.status_code)
    assert (await row(web, mailbox_id)).state == "healthy"
    assert (await admin.get("/ops")).status_code == 200  # still signed in: no bad value ended the session
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
