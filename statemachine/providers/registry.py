"""The registered providers: every other module asks here instead of naming a provider.

A provider is registered when its module declares a complete `ProviderSpec` and it is listed in
`PROVIDERS`; only registered providers are accepted anywhere (the CLI, the import, the database's CHECK
constraint, the settings, the callback routes). docs/providers.md says what adding one takes.
"""

from __future__ import annotations

from statemachine.providers import google, microsoft
from statemachine.providers.spec import ProviderSpec

PROVIDERS: tuple[ProviderSpec, ...] = (google.SPEC, microsoft.SPEC)
NAMES: tuple[str, ...] = tuple(spec.name for spec in PROVIDERS)
_BY_NAME = {spec.name: spec for spec in PROVIDERS}
if len(_BY_NAME) != len(PROVIDERS):
    raise ValueError(f"two registered providers share a name: {NAMES}")


class UnknownProviderError(ValueError):
    """A provider name that is not registered; the message lists the accepted ones."""

    def __init__(self, name: object) -> None:
        super().__init__(f"unknown provider {name!r}: must be one of: {', '.join(NAMES)}")


def get(name: str) -> ProviderSpec:
    """The registered provider called `name`.

    Raises:
        UnknownProviderError: no registered provider has that name.
    """
    spec = _BY_NAME.get(name)
    if spec is None:
        raise UnknownProviderError(name)
    return spec


def find(name: str) -> ProviderSpec | None:
    """The registered provider called `name`, or None."""
    return _BY_NAME.get(name)


def label(name: str) -> str:
    """The name users know a provider by: "google" -> "Gmail"; an unregistered name is title-cased."""
    key = name.strip().lower()
    spec = _BY_NAME.get(key)
    return spec.label if spec is not None else key.replace("_", " ").title()
