"""Open vSwitch: the only caller of `ovs-vsctl`, `ovs-ofctl` and `ovs-appctl`.

Many bridges and ports go into one `ovs-vsctl` transaction (`--` separated commands), as
ovsdbapp does: one round trip and one reconfiguration of ovs-vswitchd instead of thousands.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from topology.effects.proc import autogroup_nice, run
from topology.fabric_plan import FabricPlan

RUN_LABEL = "picloud-run"  # external_ids key on every bridge PiCloud creates
VSWITCHD_LOG = "/var/log/openvswitch/ovs-vswitchd.log"


@dataclass
class Transaction:
    """Accumulates ovs-vsctl commands; `commit()` runs them atomically in one process."""

    db: str | None = None  # e.g. tcp:10.0.0.1:6640 for a remote OVSDB; None = the local socket
    commands: list[list[str]] = field(default_factory=list)

    def add(self, *args: str) -> Transaction:
        self.commands.append([str(a) for a in args])
        return self

    def commit(self, timeout: int = 120) -> str:
        if not self.commands:
            return ""
        argv = ["ovs-vsctl", f"--timeout={timeout}"] + ([f"--db={self.db}"] if self.db else [])
        for cmd in self.commands:
            argv += ["--", *cmd]
        self.commands = []
        return run(argv, timeout=timeout + 10).stdout


def add_fabric(txn: Transaction, plan: FabricPlan, inactivity_probe_ms: int | None = None) -> int:
    """The plan's bridges and their ports, as commands of one transaction; returns the port count.
    Each bridge carries the run label, its node's name and datapath id; each port its model port as
    ofport_request. Controller rows are made here rather than by set-controller, to carry a longer
    inactivity probe (topology/stalls.py): OVS's default 5 s disconnects a healthy controller whenever
    ovs-vswitchd's own main loop stalls longer than that (measured: 3-12 s "Unreasonably long poll
    interval" stalls on a shared host with ~250 bridges), and every reactive app then loses packets."""
    ports = 0
    for bridge in plan.bridges:
        txn.add("add-br", bridge.name)
        txn.add("set", "Bridge", bridge.name, f"datapath_type={plan.datapath}",
                *(["protocols=" + ",".join(plan.protocols)] if plan.protocols else []),
                f"fail_mode={plan.fail_mode}", f"other-config:datapath-id={bridge.dpid}",
                "other-config:disable-in-band=true", f"external_ids:{RUN_LABEL}={plan.prefix}",
                f"external_ids:picloud-node={bridge.node}")
        if plan.controllers:
            ids = []
            for i, target in enumerate(plan.controllers):
                ids.append(f"@{bridge.name}c{i}")
                probe = [f"inactivity_probe={inactivity_probe_ms}"] if inactivity_probe_ms is not None else []
                txn.add(f"--id={ids[-1]}", "create", "Controller", f'target="{target}"', *probe)
            txn.add("set", "Bridge", bridge.name, f"controller=[{','.join(ids)}]")
        for port in bridge.ports:
            txn.add("add-port", bridge.name, port.name).add("set", "Interface", port.name,
                                                             f"ofport_request={port.ofport}")
            if port.type == "patch":
                txn.add("set", "Interface", port.name, "type=patch", f"options:peer={port.peer}")
            ports += 1
    return ports


def vsctl(*args: str, db: str | None = None, check: bool = True) -> str:
    argv = ["ovs-vsctl", "--timeout=30"] + ([f"--db={db}"] if db else []) + list(args)
    return run(argv, check=check).stdout.strip()


def running(db: str | None = None) -> bool:
    argv = ["ovs-vsctl", "--timeout=5"] + ([f"--db={db}"] if db else []) + ["show"]
    return run(argv, check=False, timeout=10).returncode == 0


def bridges_labelled(prefix: str | None = None, db: str | None = None) -> list[str]:
    """Bridges carrying our run label (of one run, or of any run when prefix is None)."""
    if prefix is None:
        out = vsctl("--bare", "--columns=name,external_ids", "find", "Bridge", db=db, check=False)
        names = []
        for block in out.split("\n\n"):
            lines = block.strip().splitlines()
            if len(lines) >= 2 and f"{RUN_LABEL}=" in lines[1]:
                names.append(lines[0].strip())
        return names
    cond = f"external_ids:{RUN_LABEL}={prefix}"
    out = vsctl("--bare", "--columns=name", "find", "Bridge", cond, db=db, check=False)
    return [line.strip() for line in out.splitlines() if line.strip()]


# Ports one deletion transaction may close. ovs-vswitchd applies a transaction in one pass of its main
# loop, and with the userspace datapath that loop also forwards every run's packets and answers every
# controller: closing a port's packet socket costs one kernel RCU grace period (~16 ms here, more on
# a loaded host), so one transaction for a 1,000-container run's 1,358 ports held the loop for 32 s,
# longer than OVS_STALL_S, and every other run on the host lost its data plane and, past the
# inactivity probe, its controller. 256 ports is ~4 s quiet (~8 s at load 10); ovs-vsctl waits for
# each to be applied, so the loop runs between them. The total time is the same.
PORTS_PER_DELETION = 256


def deletion_batches(names: Iterable[str], ports: dict[str, int],
                     limit: int = PORTS_PER_DELETION) -> list[list[str]]:
    """Bridges in order, grouped so no group closes more than `limit` ports (a bridge with more
    goes alone; a bridge not in `ports`, already gone, counts as one; a bridge's ports include its
    own internal port)."""
    batches: list[list[str]] = []
    current: list[str] = []
    weight = 0
    for name in names:
        w = max(ports.get(name, 1), 1)
        if current and weight + w > limit:
            batches.append(current)
            current, weight = [], 0
        current.append(name)
        weight += w
    if current:
        batches.append(current)
    return batches


def port_counts(db: str | None = None) -> dict[str, int]:
    """Ports of every bridge, from one OVSDB read."""
    out = vsctl("--format=json", "--columns=name,ports", "list", "Bridge", db=db, check=False)
    return {row["name"]: len(_set(row["ports"])) for row in _json_rows(out)}


def delete_bridges(names: Iterable[str], db: str | None = None, limit: int = PORTS_PER_DELETION) -> None:
    """Delete bridges with their ports, in transactions of at most `limit` ports."""
    names = list(names)
    if not names:
        return
    for batch in deletion_batches(names, port_counts(db), limit):
        txn = Transaction(db=db)
        for name in batch:
            txn.add("--if-exists", "del-br", name)
        txn.commit()


def kernel_datapath_available() -> bool:
    """The kernel module is loaded (or loadable): real Pis have it, this emulation host does not."""
    if os.path.isdir("/sys/module/openvswitch"):
        return True
    return run(["modprobe", "-q", "openvswitch"], check=False).returncode == 0


def userspace_tso_active(log_path: str = VSWITCHD_LOG) -> bool:
    """Userspace TSO is latched when ovs-vswitchd starts, so the setting alone does not prove it:
    look for the startup message in the log written since the daemon last opened it."""
    setting = vsctl("get", "Open_vSwitch", ".", "other_config:userspace-tso-enable", check=False)
    if setting.strip('"') != "true":
        return False
    try:
        with open(log_path, errors="replace") as f:
            text = f.read()
    except OSError:
        return True  # the setting is on and we cannot read the log: trust the setting
    starts = [m.start() for m in re.finditer(r"vlog\|INFO\|opened log file", text)]
    tail = text[starts[-1]:] if starts else text
    return "Userspace TCP Segmentation Offloading support enabled" in tail


def ofctl(*args: str, bridge: str, protocol: str = "OpenFlow13") -> str:
    return run(["ovs-ofctl", "-O", protocol, *args[:1], bridge, *args[1:]]).stdout


ANY_OPENFLOW = "OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13,OpenFlow14,OpenFlow15"
# 01:80:c2:00:00:0e (no bridge forwards it), from a locally administered address, ethertype 0x88b5
# (IEEE 802 local experimental: no protocol stack handles it), padded to the 60-byte minimum.
INERT_FRAME = "0180c200000e" + "020000000001" + "88b5" + "00" * 46


def open_send_socket(bridge: str, port: int) -> None:
    """Make ovs-vswitchd open its one AF_PACKET send socket now. netdev-linux opens it on the first
    packet it sends (af_packet_sock()), so on a freshly started daemon it does not exist while a
    fabric is built, and could not be given a buffer for the model's queues: the first run after
    every start then queued its shaped links in the kernel's 208 KiB default (topology.effects.
    ovs_sockets). One inert frame out of `port` (an OpenFlow port of `bridge`), which the next hop
    drops, is the send that opens it."""
    run(["ovs-ofctl", "-O", ANY_OPENFLOW, "packet-out", bridge,
         f"in_port=controller packet={INERT_FRAME} actions=output:{port}"])


def port_up(bridge: str, port: str, up: bool) -> None:
    run(["ovs-ofctl", "-O", "OpenFlow13", "mod-port", bridge, port, "up" if up else "down"])


PIDFILE = "/var/run/openvswitch/ovs-vswitchd.pid"


def vswitchd_pid() -> int | None:
    try:
        with open(PIDFILE) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def match_vswitchd_autogroup() -> bool:
    """Give ovs-vswitchd's autogroup the nice its launcher gave the daemon (ovs-ctl: -10), so the
    priority holds against other sessions too. Measured with two busy loops in another session:
    the daemon's autogroup at 0 got about 12 % of a core and fattree failover flows carried
    0.4-1 Mbit/s, and 2 of 4 runs failed; with the autogroup at -10, 4 of 4 passed. Idempotent,
    and done on each `up` because a restarted daemon starts in a fresh autogroup."""
    pid = vswitchd_pid()
    if pid is None:
        return False
    try:
        nice = os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:
        return False
    return nice < 0 and autogroup_nice(pid, nice)


def datapath_counters() -> dict[str, int]:
    """`dpctl/show` lookups summed over the datapaths: hit, missed, lost (lost: upcalls dropped)."""
    out = run(["ovs-appctl", "dpctl/show"], check=False, timeout=15).stdout
    totals = {"hit": 0, "missed": 0, "lost": 0}
    for m in re.finditer(r"lookups: hit:(\d+) missed:(\d+) lost:(\d+)", out):
        for key, value in zip(("hit", "missed", "lost"), m.groups(), strict=True):
            totals[key] += int(value)
    return totals


def interface_drops(names: Iterable[str]) -> dict[str, dict[str, int]]:
    """rx_dropped/tx_dropped of the named OVS interfaces (one ovsdb read for all)."""
    import json

    wanted = set(names)
    if not wanted:
        return {}
    text = run(["ovs-vsctl", "--format=json", "--columns=name,statistics", "list", "Interface"],
               check=False, timeout=30).stdout
    try:
        rows = json.loads(text).get("data", [])
    except ValueError:
        return {}
    out = {}
    for name, stats in rows:
        if name in wanted and isinstance(stats, list) and stats[0] == "map":
            values = dict(stats[1])
            out[name] = {k: int(values.get(k, 0)) for k in ("rx_dropped", "tx_dropped")}
    return out


@dataclass
class ControllerLink:
    """What OVS knows of one bridge's connection to its controller (`ovs-vsctl list controller`)."""

    bridge: str
    target: str
    protocols: list[str]  # the bridge's `protocols` column, e.g. ["OpenFlow13"]
    is_connected: bool
    status: dict[str, str]  # state, last_error, sec_since_connect, sec_since_disconnect


def controller_links(bridges: Iterable[str], db: str | None = None) -> dict[str, list[ControllerLink]]:
    """bridge -> its controller connections, in two ovs-vsctl calls for any number of bridges."""
    wanted = set(bridges)
    rows = _json_rows(vsctl("--format=json", "--columns=name,controller,protocols", "list", "Bridge", db=db))
    ctl = {r["_uuid"]: r for r in _json_rows(vsctl(
        "--format=json", "--columns=_uuid,target,is_connected,status", "list", "Controller", db=db))}
    out: dict[str, list[ControllerLink]] = {}
    for row in rows:
        if row["name"] not in wanted:
            continue
        links = []
        for uuid in _set(row["controller"]):
            c = ctl.get(uuid)
            if c is not None:
                links.append(ControllerLink(row["name"], c["target"], _set(row["protocols"]),
                                            bool(c["is_connected"]), dict(_map(c["status"]))))
        out[row["name"]] = links
    return out


def _json_rows(text: str) -> list[dict]:
    """ovs-vsctl --format=json output -> one dict per row, OVSDB atoms left as they come."""
    doc = json.loads(text or '{"headings": [], "data": []}')
    rows = []
    for data in doc["data"]:
        row = {}
        for name, value in zip(doc["headings"], data, strict=True):
            row[name] = value[1] if isinstance(value, list) and value[:1] == ["uuid"] else value
        rows.append(row)
    return rows


def _set(value: object) -> list:
    """An OVSDB set (["set", [...]] or a bare atom) as a list of atoms (uuids unwrapped)."""
    if isinstance(value, list) and value[:1] == ["set"]:
        return [v[1] if isinstance(v, list) and v[:1] == ["uuid"] else v for v in value[1]]
    if isinstance(value, list) and value[:1] == ["uuid"]:
        return [value[1]]
    return [value]


def _map(value: object) -> list[tuple[str, str]]:
    if isinstance(value, list) and value[:1] == ["map"]:
        return [(k, v) for k, v in value[1]]
    return []


_NEGOTIATION = re.compile(r"\|vconn\|\w+\|(?P<target>\S+): version negotiation failed \(we support "
                          r"(?P<ours>[^,]+), peer supports (?P<peer>[^)]+)\)")


def refused_versions(target: str, log_path: str = VSWITCHD_LOG, tail_bytes: int = 1 << 20) -> str | None:
    """What the last failed version negotiation with `target` says the peer supports (OVS logs it,
    e.g. 'version 0x04 and earlier'), from the end of ovs-vswitchd's log; None when not found."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.path.getsize(log_path) - tail_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    found = None
    for m in _NEGOTIATION.finditer(text):
        if m.group("target") == target:
            found = m.group("peer")
    return found


def port_carries(bridge: str, port: str, up: bool) -> None:
    """A port without a kernel device (a patch port) cut or restored: OFPPC_PORT_DOWN alone does not
    stop OVS forwarding through a patch port, so no-receive and no-forward go with it."""
    for action in (("up", "receive", "forward") if up else ("down", "no-receive", "no-forward")):
        run(["ovs-ofctl", "mod-port", bridge, port, action])
