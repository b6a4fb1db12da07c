"""A private Open vSwitch on the dummy datapath, for tests of real OVS tables.

As ovsdbapp's functional tests and OVS's own testsuite do: an `ovsdb-server` and an `ovs-vswitchd
--enable-dummy=override --disable-system` with their own database, sockets, pidfiles and logs in a
temporary directory. `override` makes every system-type interface a dummy device, so a fabric
plan's port names go in as they are and get real OpenFlow port numbers; bridges are
`datapath_type=dummy`. Every command here names the sandbox's database (`--db=unix:DIR/db.sock`),
a bridge's management socket (`unix:DIR/BRIDGE.mgmt`) or the daemon's control socket
(`-t DIR/ovs-vswitchd.ctl`) explicitly, so nothing ever reaches the system's OVS; the daemons are
stopped through their own control sockets, and by the PID in their own pidfile as a fallback.

Needs no root: no kernel module, no network namespace, no privileged socket. Checked by starting
the daemons as user `nobody` (`as_user`; tests/sandbox/test_sandbox_unprivileged.py does it
whenever the suite runs as root) and building a fabric plan's bridges in them. It needs the OVS
binaries (Debian's openvswitch-switch, which `make setup` installs); without them
`OvsSandbox.start` raises `SandboxUnavailable`, which the fixture turns into a skip, and a skip
fails the run under CI (tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


class SandboxUnavailable(RuntimeError):
    """The OVS binaries or schema are not installed."""


class OvsSandbox:
    """`as_user`: start the daemons as that user (root only; what proves they need no root)."""

    def __init__(self, directory: str | Path, as_user: str | None = None) -> None:
        self.dir = Path(directory)
        self.as_user = as_user

    @property
    def db(self) -> str:
        return f"unix:{self.dir / 'db.sock'}"

    @property
    def env(self) -> dict[str, str]:
        d = str(self.dir)
        return {**os.environ, "OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d, "OVS_SYSCONFDIR": d}

    def _run(self, argv: list[str], timeout: float = 30, daemon: bool = False) -> str:
        if daemon and self.as_user:
            argv = ["runuser", "-u", self.as_user, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv[:4])} ...: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> OvsSandbox:
        missing = [b for b in BINARIES if shutil.which(b) is None]
        if missing or not Path(SCHEMA).exists():
            raise SandboxUnavailable(f"needs {', '.join(missing) or SCHEMA} (Debian's openvswitch-switch): "
                                     "run 'make setup'")
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(d, self.as_user)
        self._run(["ovsdb-tool", "create", str(d / "conf.db"), SCHEMA], daemon=True)
        self._run(["ovsdb-server", str(d / "conf.db"), f"--remote=punix:{d / 'db.sock'}",
                   f"--pidfile={d / 'ovsdb-server.pid'}", f"--unixctl={d / 'ovsdb-server.ctl'}",
                   f"--log-file={d / 'ovsdb-server.log'}", "--detach", "--no-chdir", "-vconsole:off"], daemon=True)
        try:
            self.vsctl("--no-wait", "init")
            self._run(["ovs-vswitchd", self.db, "--enable-dummy=override", "--disable-system",
                       "--disable-system-route", f"--pidfile={d / 'ovs-vswitchd.pid'}",
                       f"--unixctl={d / 'ovs-vswitchd.ctl'}", f"--log-file={d / 'ovs-vswitchd.log'}",
                       "--detach", "--no-chdir", "-vconsole:off"], daemon=True)
            self.vsctl("--timeout=20", "add-br", "probe", "--", "set", "Bridge", "probe", "datapath_type=dummy")
            self.vsctl("del-br", "probe")  # returns once ovs-vswitchd has applied it: the daemon is up
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Idempotent. Each daemon exits through its own control socket; one that does not within
        5 s gets SIGTERM by the PID in its own pidfile, if that PID still runs it from this directory."""
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            ctl, pidfile = self.dir / f"{daemon}.ctl", self.dir / f"{daemon}.pid"
            if ctl.exists():
                subprocess.run(["ovs-appctl", "-t", str(ctl), "exit"], capture_output=True, timeout=10)
            pid = _own_pid(pidfile, daemon, self.dir)
            deadline = time.monotonic() + 5
            while pid is not None and _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid is not None and _alive(pid):
                os.kill(pid, signal.SIGTERM)

    def daemon_uids(self) -> dict[str, int]:
        """The real uid each running daemon has (from /proc)."""
        out = {}
        for daemon in ("ovsdb-server", "ovs-vswitchd"):
            pid = _own_pid(self.dir / f"{daemon}.pid", daemon, self.dir)
            if pid is not None:
                uid_line = next(ln for ln in _status(pid).splitlines() if ln.startswith("uid:"))
                out[daemon] = int(uid_line.split()[1])
        return out

    # --- tools ----------------------------------------------------------------------------------
    def vsctl(self, *args: str) -> str:
        return self._run(["ovs-vsctl", f"--db={self.db}", *args]).strip()

    def mgmt(self, bridge: str) -> str:
        return f"unix:{self.dir / bridge}.mgmt"

    def ofctl(self, command: str, bridge: str, *args: str) -> str:
        return self._run(["ovs-ofctl", "-O", "OpenFlow13", command, self.mgmt(bridge), *args])

    def appctl(self, *args: str) -> str:
        return self._run(["ovs-appctl", "-t", str(self.dir / "ovs-vswitchd.ctl"), *args])

    def bridges(self) -> list[str]:
        return sorted(self.vsctl("list-br").split())

    def ofports(self, bridge: str) -> dict[str, int]:
        """Port name -> the OpenFlow number ovs-vswitchd gave it (-1: it failed to open)."""
        out = {}
        for name in self.vsctl("list-ports", bridge).split():
            out[name] = int(self.vsctl("get", "Interface", name, "ofport"))
        return out

    def flow_lines(self, bridge: str) -> list[str]:
        return [ln.strip() for ln in self.ofctl("dump-flows", bridge, "--no-stats").splitlines()
                if ln.strip() and not ln.startswith("OFPST_FLOW")]

    def trace(self, bridge: str, packet: str) -> str:
        """The datapath actions ofproto/trace finds for `packet` (its last 'Datapath actions' line)."""
        out = self.appctl("ofproto/trace", bridge, packet)
        return [ln for ln in out.splitlines() if ln.startswith("Datapath actions:")][-1].split(":", 1)[1].strip()

    @contextmanager
    def channel(self, bridge: str) -> Iterator[OpenFlowChannel]:
        ch = OpenFlowChannel(str(self.dir / f"{bridge}.mgmt"))
        try:
            yield ch
        finally:
            ch.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return Path(f"/proc/{pid}").exists() and "zombie" not in _status(pid)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return ""


def _own_pid(pidfile: Path, daemon: str, directory: Path) -> int | None:
    """The daemon's PID, only if that process is still this sandbox's daemon (its command line
    names this directory), so a recycled PID is never signalled."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if daemon in cmdline and str(directory) in cmdline else None


@contextmanager
def sandbox(as_user: str | None = None) -> Iterator[OvsSandbox]:
    with tempfile.TemporaryDirectory(prefix="picloud-ovs-") as d:
        box = OvsSandbox(d, as_user).start()
        try:
            yield box
        finally:
            box.stop()


# --- OpenFlow over a bridge's management socket ---------------------------------------------------
OFPT_ERROR, OFPT_ECHO_REQUEST = 1, 2


class OpenFlowChannel:
    """A controller's side of one OpenFlow 1.3 connection: what controller_apps.flows.encode
    builds is sent as a controller sends it (`dp.send_msg`), and `barrier()` returns what the
    switch refused, decoded as (type, code) pairs of OFPT_ERROR."""

    ofproto: Any = ofproto_v1_3
    ofproto_parser: Any = ofproto_v1_3_parser

    def __init__(self, path: str, dpid: int = 0) -> None:
        self.id = dpid
        self._xid = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.send_msg(self.ofproto_parser.OFPHello(self))
        version, kind, _, _ = self._read()
        if kind != self.ofproto.OFPT_HELLO:
            raise RuntimeError(f"{path}: expected HELLO, got message type {kind}")

    def close(self) -> None:
        self.sock.close()

    def send_msg(self, msg: Any) -> None:
        """As os-ken's Datapath.send_msg: the next xid when the message has none, then the wire bytes."""
        if msg.xid is None:
            self._xid += 1
            msg.set_xid(self._xid)
        msg.datapath = self
        msg.serialize()
        self.sock.sendall(bytes(msg.buf))

    def barrier(self) -> list[tuple[int, int]]:
        request = self.ofproto_parser.OFPBarrierRequest(self)
        self.send_msg(request)
        errors = []
        while True:
            version, kind, xid, body = self._read()
            if kind == OFPT_ERROR:
                errors.append(struct.unpack_from("!HH", body))
            elif kind == OFPT_ECHO_REQUEST:
                reply = struct.pack("!BBHI", version, OFPT_ECHO_REQUEST + 1, 8 + len(body), xid) + body
                self.sock.sendall(reply)
            elif kind == self.ofproto.OFPT_BARRIER_REPLY and xid == request.xid:
                return errors

    def _read(self) -> tuple[int, int, int, bytes]:
        header = self._exactly(8)
        version, kind, length, xid = struct.unpack("!BBHI", header)
        return version, kind, xid, self._exactly(length - 8)

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the switch closed the OpenFlow connection")
            data += chunk
        return data
