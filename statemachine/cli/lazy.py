"""Command handlers named by "module:function" and imported only when their command runs.

Why: building the parser for `tokenwarden --help` (or any one command) used to import every
command's code, SQLAlchemy, the web app and the devkit included (1.8 s). Parsers are cheap; what a
command runs is loaded when it runs.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping
from typing import Any

Handler = Callable[[argparse.Namespace, Mapping[str, str]], Any]


def lazy(target: str) -> Handler:
    """A handler that imports `module:function` on its first call and hands the call on to it."""
    module, _, name = target.partition(":")

    def run(args: argparse.Namespace, env: Mapping[str, str]) -> Any:
        handler: Handler = getattr(importlib.import_module(module), name)
        return handler(args, env)

    run.__qualname__ = run.__name__ = name
    return run
