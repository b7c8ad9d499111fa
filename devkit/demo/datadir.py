"""The demo's data folder (default ./demo-data): keys and secrets, the running demo's addresses, mail, logs.

Why a folder: a second `make demo` must find the same database, keys and mail, and `tokenwarden
sandbox ...` (another process) must find the running demo. Secrets are generated on the first start
and written with mode 0600, never printed; the folder is git-ignored. `run.json` exists only while a
demo runs and holds addresses, never a secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.fernet import Fernet

SECRETS_FILE = "secrets.json"
RUN_FILE = "run.json"
CLIENT_ID = "tokenwarden-demo.apps.googleusercontent.com"


class DemoError(RuntimeError):
    """Something the demo or the sandbox CLI cannot do; the message says what to do about it."""


@dataclass(frozen=True)
class DemoSecrets:
    """Generated once per data folder. The client secret is shared only by the demo and its sandbox Google."""

    encryption_key: str
    secret_key: str
    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"DemoSecrets(client_id={self.client_id!r}, ...)"

    def environment(self) -> dict[str, str]:
        return {
            "TOKENWARDEN_ENCRYPTION_KEYS": self.encryption_key,
            "TOKENWARDEN_SECRET_KEY": self.secret_key,
            "GOOGLE_CLIENT_ID": self.client_id,
            "GOOGLE_CLIENT_SECRET": self.client_secret,
        }


@dataclass(frozen=True)
class RunInfo:
    """Where the running demo is; `database_url` only for the embedded server (no password in it)."""

    pid: int
    web_url: str
    sandbox_url: str
    database_url: str | None


@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def maildir(self) -> Path:
        return self.root / "mail"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def create(self) -> None:
        for folder in (self.root, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # keys and the database live here

    def secrets(self) -> DemoSecrets:
        """The folder's secrets, generated and saved (0600) on the first call."""
        path = self.root / SECRETS_FILE
        if path.exists():
            return self._read_secrets(path)
        fresh = DemoSecrets(
            encryption_key=Fernet.generate_key().decode(),
            secret_key=secrets.token_urlsafe(48),
            client_id=CLIENT_ID,
            client_secret="GOCSPX-demo-" + secrets.token_urlsafe(24),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(fresh), out, indent=2)
        return fresh

    def existing_secrets(self) -> DemoSecrets:
        """For the sandbox CLI: the secrets of a demo that already ran here."""
        path = self.root / SECRETS_FILE
        if not path.exists():
            raise DemoError(f"no demo in {self.root}: start one with `make demo` (or pass --data-dir)")
        return self._read_secrets(path)

    @staticmethod
    def _read_secrets(path: Path) -> DemoSecrets:
        try:
            return DemoSecrets(**json.loads(path.read_text()))
        except (ValueError, TypeError) as err:
            raise DemoError(f"{path} is damaged ({type(err).__name__}); delete the folder to start over") from None

    @contextlib.contextmanager
    def running(self, info: RunInfo) -> Iterator[None]:
        """Publish `run.json` while the demo runs; removed on the way out, whatever the reason."""
        path = self.root / RUN_FILE
        path.write_text(json.dumps(asdict(info), indent=2))
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def run_info(self) -> RunInfo:
        path = self.root / RUN_FILE
        try:
            return RunInfo(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise DemoError(f"no demo is running with the data folder {self.root}: start it with `make demo`") from None
        except (ValueError, TypeError):
            raise DemoError(f"{path} is damaged: restart the demo") from None
