"""Ray's token authentication for a study's Ray (Ray 2.60, RAY_AUTH_MODE=token).

With token auth, every Ray service (GCS, raylets, workers, dashboard and its job API) refuses a process that does
not present the cluster's token; without it, anyone who can reach a node's ports can join the cluster and run code
on it. Ray reads the token from RAY_AUTH_TOKEN, else from the file RAY_AUTH_TOKEN_PATH, else from ~/.ray/auth_token.
A study uses token auth unless RAY_AUTH_MODE=disabled is set (a private network): a local study writes a new token
(file mode 0600) where Ray will look if there is none; a study joining a cluster needs that cluster's token.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

MODE_VAR = "RAY_AUTH_MODE"


def refresh() -> None:
    """Make an imported Ray see RAY_AUTH_MODE as it is now: Ray reads its config when imported (a notebook may set
    the mode later), and its own token setup refreshes it so (ray._private.authentication)."""
    from ray._raylet import Config

    Config.initialize("")


def enabled() -> bool:
    return os.environ.get(MODE_VAR, "").lower() == "token"


def token_path() -> Path:
    """The token file Ray reads when RAY_AUTH_TOKEN is not set."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def has_token() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = token_path()
    return path.is_file() and bool(path.read_text().strip())


def ensure_token() -> None:
    """A token where Ray will read it: a new random one (256 bits, as `ray get-auth-token --generate`) written
    readable by this user only, if there is none. Ray's own generator writes the file with the umask's mode."""
    if has_token():
        return
    path = token_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an empty file that was there keeps its own mode otherwise
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
