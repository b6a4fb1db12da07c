"""The run state: one JSON file per run naming every object the run made.

Written *before* each object is created (intent first) and replaced atomically, so a `kill -9`
at any instant leaves a file that lists at least everything that exists, and `picloud clean` can
remove exactly those objects and nothing anyone else made.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from picloud.errors import FabricError

PREFIX_RE = re.compile(r"\Apc[1-9][0-9]{0,2}\Z")
OBJECT_KINDS = ("netns", "veth", "bridges", "pids", "containers", "ovs_instances")


def state_dir() -> Path:
    return Path(os.environ.get("PICLOUD_STATE_DIR", "/run/picloud"))


def ensure_state_dir() -> Path:
    """The state directory, created 0700: it holds API tokens and logs only its owner may read."""
    from picloud.secrets_files import private_dir

    return private_dir(state_dir())


def api_token_path(prefix: str) -> Path:
    """Where a run's controller API token lives (0600; docs/API.md "Authentication")."""
    return state_dir() / f"{prefix}.api-token"


@contextmanager
def _locked():
    directory = ensure_state_dir()
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def of_port(prefix: str) -> int:
    return 6700 + int(prefix[2:])


def api_port(prefix: str) -> int:
    return 8200 + int(prefix[2:])


@dataclass
class RunState:
    prefix: str
    backend: str = "local"
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    topology: dict[str, Any] = field(default_factory=dict)
    controller: dict[str, Any] = field(default_factory=dict)
    objects: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in OBJECT_KINDS})
    tenants_file: str | None = None
    ui: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return state_dir() / f"{self.prefix}.json"

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix, "created": self.created, "backend": self.backend,
            "topology": self.topology, "controller": self.controller, "objects": self.objects,
            "tenants_file": self.tenants_file, "ui": self.ui, "extra": self.extra,
        }

    def save(self) -> None:
        path = self.path
        ensure_state_dir()
        # One temporary file per writer: two threads saving at once (a scenario's shape step and its
        # controller restart, both due at the same time) each rename their own, never the other's.
        tmp = path.with_name(f"{self.prefix}.{os.getpid()}-{threading.get_ident()}.tmp")
        from picloud.secrets_files import open_private

        with open_private(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @contextmanager
    def transaction(self):
        """Read-modify-write under the run's lock. A run's state can be changed by several processes
        (a script's Testbed and `picloud tenant add` from a shell): each change starts from what is
        on disk, or one process's stale copy would erase the other's records and leak objects."""
        directory = ensure_state_dir()
        with open(directory / f"{self.prefix}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.reload()
                yield self
                self.save()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def reload(self) -> None:
        """Take what is on disk (if the file still exists) as the current state."""
        if not self.path.exists():
            return
        fresh = RunState.load(self.prefix)
        for name in ("backend", "created", "topology", "controller", "objects", "tenants_file", "ui", "extra"):
            setattr(self, name, getattr(fresh, name))

    def intend(self, kind: str, names: list[Any]) -> None:
        """Record objects about to be created, then save: the write happens before the creation."""
        existing = self.objects.setdefault(kind, [])
        for name in names:
            if name not in existing:
                existing.append(name)
        self.save()

    def forget(self, kind: str, names: list[Any]) -> None:
        gone = set(map(json.dumps, names))
        self.objects[kind] = [n for n in self.objects.get(kind, []) if json.dumps(n) not in gone]
        self.save()

    def delete(self) -> None:
        """The state file last, after every other file of the run (`PREFIX.*`: tenants plan,
        controller log, locks), so a crash here still leaves the record."""
        for path in state_dir().glob(f"{self.prefix}.*"):
            if path != self.path:
                path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)

    @classmethod
    def load(cls, prefix: str) -> RunState:
        path = state_dir() / f"{prefix}.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FabricError(f"run {prefix!r}: no state file {path} (see 'picloud status')") from None
        except json.JSONDecodeError as exc:
            raise FabricError(f"{path}: unreadable run state ({exc.msg})") from None
        objects: dict[str, list[Any]] = {k: [] for k in OBJECT_KINDS}
        objects.update(data.get("objects") or {})
        return cls(prefix=data["prefix"], backend=data.get("backend", "local"), created=data.get("created", ""),
                   topology=data.get("topology") or {}, controller=data.get("controller") or {},
                   objects=objects, tenants_file=data.get("tenants_file"), ui=data.get("ui") or {},
                   extra=data.get("extra") or {})


def list_runs() -> list[str]:
    directory = state_dir()
    if not directory.is_dir():
        return []
    runs = [p.stem for p in directory.glob("pc*.json") if PREFIX_RE.match(p.stem)]
    return sorted(runs, key=lambda p: int(p[2:]))


def _ports_free(n: int) -> bool:
    for port in (6700 + n, 8200 + n):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


PREFIX_CURSOR = ".last-prefix"  # in the state directory: the number handed out last


def _next_free(directory: Path) -> int:
    """The first free prefix number after the one handed out last, wrapping after 999 (call under
    the lock). A prefix is free when no state file claims it and nothing (a stray controller of a
    crashed run, another program) holds its OpenFlow or API port.

    Round robin, not the lowest free number: a run that has just ended is checked for leftovers by
    its owner (the tests' `leaves_nothing`, `picloud clean`'s report) under its prefix, and with
    lowest-free numbering the next run on the host (another checkout's CI, another user) took
    that very prefix at once, so the check saw the newcomer's namespaces, bridges and state
    file as the ended run's. Now a prefix comes back only after the other 998 were handed out."""
    cursor = directory / PREFIX_CURSOR
    try:
        last = int(cursor.read_text().strip())
    except (OSError, ValueError):
        last = 0
    for step in range(1, 1000):
        n = (last + step - 1) % 999 + 1
        if not (directory / f"pc{n}.json").exists() and _ports_free(n):
            tmp = cursor.with_suffix(".tmp")
            tmp.write_text(f"{n}\n")
            tmp.replace(cursor)
            return n
    raise FabricError("run prefixes: all 999 in use (run 'picloud clean')")


def allocate_prefix(backend: str = "local", wanted: str | None = None, owner: dict | None = None) -> RunState:
    """Claim a prefix and write its state file at once, under a lock, so two runs never share one."""
    with _locked() as directory:
        if wanted is not None:
            if not PREFIX_RE.match(wanted):
                raise FabricError(f"prefix {wanted!r}: invalid (a run prefix is 'pc' and a number 1-999)")
            if (directory / f"{wanted}.json").exists():
                raise FabricError(f"prefix {wanted!r}: already in use (see 'picloud status'; 'picloud clean' "
                                  "removes crashed runs)")
            prefix = wanted
        else:
            prefix = f"pc{_next_free(directory)}"
        state = RunState(prefix=prefix, backend=backend)
        if owner:
            state.extra["owner"] = owner  # who uses the run: clean leaves live owners alone
        state.save()
        return state
