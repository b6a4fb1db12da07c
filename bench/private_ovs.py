"""A private Open vSwitch for the benchmarks that must not disturb the shared one, and what their
`main()`s share (the teardown floor and the TCP paths benches).

Why private: other runs use the machine's ovs-vswitchd, and these benches delete bridges of many
ports or push a TCP stream through it. `PrivateOvs` starts an ovsdb-server and an ovs-vswitchd of
its own (database, sockets and logs in a temporary directory). The daemon runs in its own network
namespace `NS`, because the userspace datapath creates a device named `ovs-netdev` that would
collide with the shared daemon's. Every object of these benches is named tdb...
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NS = "tdbovs"
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def sh(*argv: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}: {result.stderr.strip()[:200]}")
    return result.stdout


class PrivateOvs:
    """ovsdb-server + ovs-vswitchd of our own, in network namespace NS; stopped by PID on exit."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tdb-ovs-"))
        self.db = f"unix:{self.dir}/db.sock"
        self.pids: list[int] = []

    def __enter__(self) -> PrivateOvs:
        sh("ip", "netns", "add", NS)
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        sh("ovsdb-tool", "create", f"{self.dir}/conf.db", SCHEMA)
        sh("ovsdb-server", f"{self.dir}/conf.db", f"--remote=punix:{self.dir}/db.sock",
           f"--pidfile={self.dir}/ovsdb.pid", f"--unixctl={self.dir}/ovsdb.ctl",
           f"--log-file={self.dir}/ovsdb.log", "--detach")
        self.pids.append(int(Path(f"{self.dir}/ovsdb.pid").read_text()))
        self.vsctl("--no-wait", "init")
        self.vsctl("--no-wait", "set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=true")
        sh("ip", "netns", "exec", NS, "ovs-vswitchd", self.db, f"--pidfile={self.dir}/vswitchd.pid",
           f"--unixctl={self.dir}/vswitchd.ctl", f"--log-file={self.dir}/vswitchd.log", "--detach")
        self.pids.append(int(Path(f"{self.dir}/vswitchd.pid").read_text()))
        return self

    def __exit__(self, *exc: object) -> None:
        for pid in reversed(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        time.sleep(0.5)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)

    def vsctl(self, *args: str) -> str:
        return sh("ovs-vsctl", f"--db={self.db}", "--timeout=120", *args)


def arguments(doc: str, section: str, quick: str) -> argparse.ArgumentParser:
    """The options both benches take: --quick (what `quick` says) and --record (`section`)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--record", action="store_true", help=f"write the {section!r} section of RESULTS.md")
    return ap


def refuse_without_root(name: str) -> bool:
    """True (after one line on stderr) when not root: namespaces and a private OVS need it."""
    if os.geteuid() == 0:
        return False
    print(f"{name}: needs root (network namespaces, Open vSwitch)", file=sys.stderr)
    return True


def utc_stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")

