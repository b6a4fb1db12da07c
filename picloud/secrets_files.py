"""Secrets and logs in the run's state directory: the API token file, 0600 log files, a 0700 directory.

Why files and not environment or arguments: a token in argv is visible to every user in `ps`, and
one in a log is readable by whoever can read the log. The token file, 0600 in a 0700 directory
owned by the user who started the run, is the one place it lives; `picloud`, `Testbed` and the web
UI read it from there.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from picloud.errors import PiCloudError

TOKEN_BYTES = 24


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it 0700: only its owner may list or open what is in it."""
    path.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def open_private(path: Path, mode: str = "ab"):
    """Open `path` for writing, created 0600 (and an existing file narrowed to 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode)


def write_token(path: Path, token: str | None = None) -> str:
    """Write a (new, random) token to `path`, 0600; returns it."""
    token = token or secrets.token_urlsafe(TOKEN_BYTES)
    if not path.parent.exists():
        private_dir(path.parent)
    with open_private(path, "w") as f:
        f.write(token + "\n")
    return token


def read_token(path: Path | str, what: str = "token file") -> str:
    """The token in `path`; PiCloudError (one line) when missing, empty, or readable by others."""
    path = Path(path)
    try:
        st = path.stat()
        text = path.read_text().strip()
    except FileNotFoundError:
        raise PiCloudError(f"{what} {path}: no such file") from None
    except PermissionError:
        raise PiCloudError(f"{what} {path}: permission denied (run as the user who started the run)") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise PiCloudError(f"{what} {path}: readable by other users (mode {stat.S_IMODE(st.st_mode):o}; "
                           "chmod 600 it)")
    if not text or any(c.isspace() or ord(c) < 33 for c in text):
        raise PiCloudError(f"{what} {path}: empty or not a token")
    return text


def ensure_token(path: Path | str) -> str:
    """The token in `path`, creating the file with a new token when it does not exist."""
    path = Path(path)
    if not path.exists():
        return write_token(path)
    return read_token(path)
