"""`tokenwarden api-key create|list|revoke` and `tokenwarden audit`, in-process through the CLI's main()."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from starlette.applications import Starlette

from statemachine.cli.main import main
from tests.web.support import mailbox
from web.pages import WebContext


@pytest.fixture
def cli_env(web_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in web_env.items():
        monkeypatch.setenv(key, value)


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in a thread: main() runs its own event loop."""
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("cli_env")
async def test_a_key_is_shown_once_listed_without_its_secret_then_revoked(
    capsys: pytest.CaptureFixture[str], app: Starlette, web: WebContext
) -> None:
    code, out, err = await run(capsys, "api-key", "create", "mailsync")
    key = out.strip()
    assert code == 0
    assert key.startswith("tw_")
    assert "only once" in err
    assert (await run(capsys, "api-key", "create", "mailsync"))[0] == 1  # names are unique
    mailbox_id = await mailbox(web)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=web.base_url) as client:
        headers = {"authorization": f"Bearer {key}"}
        assert (await client.get(f"/v1/mailboxes/{mailbox_id}", headers=headers)).status_code == 200
        code, out, _ = await run(capsys, "api-key", "list", "--json")
        (listed,) = json.loads(out)
        assert listed["name"] == "mailsync"
        assert listed["last_used_at"] is not None
        assert listed["revoked_at"] is None
        assert key not in out
        assert (await run(capsys, "api-key", "revoke", "mailsync"))[0] == 0
        assert (await client.get(f"/v1/mailboxes/{mailbox_id}", headers=headers)).status_code == 401
    code, out, _ = await run(capsys, "api-key", "list")
    assert "mailsync" in out
    assert (await run(capsys, "api-key", "revoke", "mailsync"))[0] == 1
    code, out, _ = await run(capsys, "audit", "--json")
    assert (code, json.loads(out)) == (0, [])
