"""The web app's fixtures (tests/web/fixtures.py) for the web tests."""

from tests.web.fixtures import app, browser, sign_in, web, web_env, web_overrides  # noqa: F401
