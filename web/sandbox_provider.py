"""The old home of the sandbox provider, now the package `web.sandbox`; kept so existing imports still work.

New code imports `web.sandbox`. This module only re-exports its public names.
"""

from web.sandbox import *  # noqa: F403
from web.sandbox import __all__ as __all__
