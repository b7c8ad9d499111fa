"""The demo's pages run inside the web app: the web tests' fixtures serve here too."""

from tests.web.fixtures import app, browser, sign_in, web, web_env, web_overrides  # noqa: F401
