"""What `tokenwarden serve` and `tokenwarden login-link` run (their parsers: web/cli.py)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping

import uvicorn

from statemachine.services.config_check import warn_about
from statemachine.services.logs import configure_logging, log_level
from statemachine.services.settings import load_settings, read_settings
from statemachine.store.db import open_sessionmaker
from web.app import create_app
from web.auth import create_login_link
from web.signing import Signing


def serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the web app until interrupted; the configuration is checked before the port is opened, and what is
    unsafe for production is logged as warnings (`tokenwarden check-config`) without refusing to start."""
    settings, readings = read_settings(env)
    app = create_app(settings)
    configure_logging(log_level(env, "INFO"))
    asyncio.run(warn_about(settings, readings, "serve"))
    # access_log=False: uvicorn's line includes the query string, where login links and OAuth callbacks
    # carry one-time secrets; web.app logs method, path and status instead.
    # X-Forwarded-* only from TOKENWARDEN_TRUSTED_PROXIES: anyone else could claim any client address.
    proxies = list(settings.trusted_proxies)
    uvicorn.run(
        app, host=args.host, port=args.port, access_log=False, log_config=None, proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )  # fmt: skip
    return 0


async def login_link(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print a single-use sign-in link for an existing user."""
    settings = load_settings(env)
    settings.require("database_url", "secret_key")
    assert settings.database_url is not None
    assert settings.secret_key is not None
    async with open_sessionmaker(settings.database_url) as sessionmaker:
        link = await create_login_link(
            sessionmaker, Signing(settings.secret_key.reveal()), settings.base_url, args.email, args.minutes
        )
    print(link)
    return 0
