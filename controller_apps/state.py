"""The controller's shared state: what apps learned, in one thread-safe store the API reads.

Why one store: discovery, routing, tenancy and monitor run as separate os-ken apps in one process;
the REST API runs in a Flask thread. Rather than each app exposing its own view (Ryu's way, one
REST app per concern), apps write plain facts here and `snapshot()` turns them into the `/state`
JSON of docs/CONTRACTS.md. All writers take one re-entrant lock; listeners registered with
`subscribe()` are called after the lock is released, so a listener may read or write the store.

Names: a datapath is shown by its topology node name when the intended topology (`set_intended`)
knows its DPID, else as its 16-hex-digit DPID. In the snapshot, `dpid` fields are 16-hex strings
(JSON has no 64-bit integers that every client reads safely); writers pass ints.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from topology.model import Topology, dpid_str

LOG = logging.getLogger(__name__)

EVENTS_KEPT = 1000  # the ring of recent events; /state/events?since=T pages through it
EVENTS_IN_SNAPSHOT = 100
HOST_LOG_KEPT = 100_000  # host changes kept for `host_changes`; older readers get None and start over

Endpoint = tuple[str, int]  # (node name or 16-hex dpid, port)
LinkKey = tuple[Endpoint, Endpoint]
DEFAULT_NETWORK = 0  # the network tag of untenanted hosts (untagged on the fabric)
HostKey = tuple[int, str]  # (network tag: a tenant's VLAN id or DEFAULT_NETWORK, lower-case MAC)


def link_key(a: str, a_port: int, b: str, b_port: int) -> LinkKey:
    """An undirected link's key: the two ends in sorted order, so (a, b) and (b, a) agree."""
    ends = sorted([(a, int(a_port)), (b, int(b_port))])
    return (ends[0], ends[1])


class ControllerState:
    """One per controller process (`STATE`); see the module docstring for why."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._listeners: list[Callable[[str], None]] = []
        # Apps that send flows for hosts (routing) -> the host change number they have sent flows
        # for; `wait_hosts_sent` lets a caller (tenancy's reload) answer only once they caught up.
        self._followers: dict[str, int] = {}
        self._followers_cond = threading.Condition()
        self.datapaths: dict[int, Any] = {}  # dpid -> os-ken Datapath, for REST stats calls
        self.reset()

    def reset(self) -> None:
        """Forget everything (tests; a controller restart is a new process anyway)."""
        with self._lock:
            self.version = 0
            self._intended: Topology | None = None
            self._names: dict[int, str] = {}  # dpid -> node name, from the intended topology
            self._switches: dict[int, dict[str, Any]] = {}  # dpid -> {"connected", "ports"}
            self._links: dict[LinkKey, dict[str, Any]] = {}  # discovered fabric links
            self._hosts: dict[HostKey, dict[str, Any]] = {}  # host record, replaced never mutated
            self._hosts_list: list[dict[str, Any]] | None = None  # hosts() cache, None when stale
            self._host_seq = 0  # number of host changes so far
            self._host_log: list[HostKey] = []  # key of change number _host_log_start + 1 + i
            self._host_log_start = 0
            self._member_ports: dict[tuple[int, int], HostKey] = {}  # (dpid, port) -> tenant member there
            self._util: dict[LinkKey, dict[str, float]] = {}
            self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)
            self._ready: dict[str, dict[str, Any]] = {}  # app -> its readiness facts, /state "ready"
            self.datapaths.clear()
            # How the runner was started (listen, api, topology_file, tenants_file), for apps
            # that need a file the user named, such as tenancy's tenants file.
            self.options: dict[str, Any] = {}

    # --- subscriptions --------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call `listener(kind)` after every change; kind is one of intended, switch, links, host."""
        with self._lock:
            self._listeners.append(listener)

    def _changed(self, kind: str) -> None:
        with self._lock:
            self.version += 1
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(kind)
            except Exception:  # a broken listener must not break the writer (an OpenFlow handler)
                LOG.exception("state listener %r failed on %s", listener, kind)

    # --- host followers ---------------------------------------------------------------------------
    def follow_hosts(self, name: str) -> None:
        """Register an app that sends flows for hosts; it reports progress with `hosts_sent`."""
        with self._followers_cond:
            self._followers.setdefault(name, 0)

    def unfollow_hosts(self, name: str) -> None:
        with self._followers_cond:
            self._followers.pop(name, None)
            self._followers_cond.notify_all()

    def hosts_sent(self, name: str, version: int) -> None:
        """`name` has sent (handed to the datapaths' send queues) every flow for host change
        `version` and before; the messages go out on each switch's one connection in order, so a
        barrier sent after this call confirms them."""
        with self._followers_cond:
            if name in self._followers and version > self._followers[name]:
                self._followers[name] = version
                self._followers_cond.notify_all()

    def wait_hosts_sent(self, version: int, timeout: float) -> list[str]:
        """Wait until every follower has sent flows for host change `version`; returns the names
        of those that had not by the timeout (empty: all caught up, or none registered)."""
        with self._followers_cond:
            self._followers_cond.wait_for(lambda: all(v >= version for v in self._followers.values()),
                                          timeout)
            return sorted(n for n, v in self._followers.items() if v < version)

    # --- naming ---------------------------------------------------------------------------------
    def name_of(self, dpid: int) -> str:
        """The node name of a datapath, or its 16-hex DPID when the topology does not know it."""
        with self._lock:
            return self._names.get(dpid, dpid_str(dpid))

    def dpid_of(self, name: str) -> int | None:
        with self._lock:
            for value, node in self._names.items():
                if node == name:
                    return value
        return None

    def _end(self, node: int | str) -> str:
        return self.name_of(node) if isinstance(node, int) else str(node)

    @property
    def intended(self) -> Topology | None:
        with self._lock:
            return self._intended

    # --- writers --------------------------------------------------------------------------------
    def set_intended(self, topology_dict: dict[str, Any] | Topology | None) -> None:
        """The topology the run was built from (RunState's `topology`); None forgets it."""
        topo = topology_dict if isinstance(topology_dict, Topology) or topology_dict is None \
            else Topology.from_dict(topology_dict)
        with self._lock:
            self._intended = topo
            self._names = topo.by_dpid() if topo is not None else {}
            self._note_match(True)
        self._changed("intended")

    def switch_enter(self, dpid: int, ports: Iterable[int | dict[str, Any]] = ()) -> None:
        """A datapath connected, or its ports changed. `ports` are port numbers or dicts with at
        least `port_no` (the API app reports port_no, name, hw_addr, up from a port-desc reply).
        Several apps may report the same switch; only the first connect is an event."""
        records = []
        for port in ports:
            record = {"port_no": int(port)} if isinstance(port, int) else dict(port)
            records.append(record)
        records.sort(key=lambda r: r["port_no"])
        with self._lock:
            previous = self._switches.get(dpid)
            if previous == {"connected": True, "ports": records}:
                return
            self._switches[dpid] = {"connected": True, "ports": records}
            name = self.name_of(dpid)
        if not (previous and previous["connected"]):
            self.event("switch", f"switch {name} connected ({len(records)} ports)")
        self._changed("switch")

    def switch_leave(self, dpid: int) -> None:
        with self._lock:
            if dpid in self._switches:
                self._switches[dpid]["connected"] = False
            self.datapaths.pop(dpid, None)
            name = self.name_of(dpid)
            gone = [k for k in self._links if name in (k[0][0], k[1][0])]
            for key in gone:
                del self._links[key]
        self.event("switch", f"switch {name} disconnected")
        for key in sorted(gone):
            self.event("link", f"link {_fmt(key)} down")
        self._changed("switch")

    def set_links(self, links: Iterable[dict[str, Any]]) -> None:
        """Replace the discovered fabric links. Each dict: a, a_port, b, b_port (ends as dpid ints
        or node names), optional up (default True)."""
        new: dict[LinkKey, dict[str, Any]] = {}
        for link in links:
            key = link_key(self._end(link["a"]), link["a_port"], self._end(link["b"]), link["b_port"])
            new[key] = {"up": bool(link.get("up", True))}
        with self._lock:
            added = set(new) - set(self._links)
            removed = set(self._links) - set(new)
            self._links = new
            self._note_match(bool(added or removed))
        for key in sorted(added):
            self.event("link", f"link {_fmt(key)} up")
        for key in sorted(removed):
            self.event("link", f"link {_fmt(key)} down")
        if added or removed:
            self._changed("links")

    def _note_match(self, changed: bool) -> None:
        """Discovery's readiness: when the discovered fabric links last came to match the intended
        ones exactly (None while they do not). Caller holds the lock."""
        intended = ({link_key(ln.a, ln.port_a, ln.b, ln.port_b) for ln in self._intended.fabric_links()}
                    if self._intended is not None else None)
        matched = intended is not None and intended == set(self._links)
        before = self._ready.get("discovery", {}).get("matched_at")
        at = (time.time() if changed or before is None else before) if matched else None
        self._ready["discovery"] = {"matched_at": at, "links": len(self._links)}

    def discovery_matched(self) -> bool:
        """Whether the discovered fabric links match the intended ones now."""
        with self._lock:
            return self._ready.get("discovery", {}).get("matched_at") is not None

    def set_ready(self, app: str, **facts: Any) -> None:
        """Record what an app wants readers to know about its readiness (`/state` "ready"[app]);
        routing: its generation, the hosts and bridges its last computation served, and when."""
        with self._lock:
            self._ready[app] = dict(facts)

    def add_host(self, mac: str, ip: str | None, dpid: int, port: int, name: str | None = None,
                 tenant: str | int | None = None, tag: int = DEFAULT_NETWORK) -> None:
        """A host (container) seen or declared at (dpid, port), in the network `tag` (a tenant's
        VLAN id; 0: the default network). Hosts are keyed by (tag, MAC): each network is its own
        address space, so what discovery learns about the default network can never replace a
        tenant member that has the same MAC (or IP), nor the other way round."""
        mac = mac.lower()
        key = (tag, mac)
        record = {"mac": mac, "ip": ip, "dpid": dpid, "port": int(port), "name": name, "tenant": tenant,
                  "tag": tag}
        where_key = (dpid, int(port))
        with self._lock:
            if tag == DEFAULT_NETWORK and where_key in self._member_ports:
                return  # the port is a tenant member's: whatever discovery saw there is not a default host
            if record["name"] is None and self._intended is not None and tag == DEFAULT_NETWORK:
                record["name"] = _container_by_mac(self._intended, mac)
            old = self._hosts.get(key)
            if old == record:
                return
            self._hosts[key] = record
            self._hosts_list = None
            self._log_host(key)
            if tag != DEFAULT_NETWORK:
                self._claim_port(key, old, where_key)
        where = f"{self.name_of(dpid)}:{port}"
        verb = "moved to" if old and (old["dpid"], old["port"]) != (dpid, int(port)) else "at"
        self.event("host", f"host {record['name'] or mac} ({ip or '-'}) {verb} {where}")
        self._changed("host")

    def remove_host(self, mac: str, tag: int = DEFAULT_NETWORK) -> None:
        key = (tag, mac.lower())
        with self._lock:
            old = self._hosts.pop(key, None)
            self._hosts_list = None
            if old is not None:
                self._log_host(key)
                if self._member_ports.get((old["dpid"], old["port"])) == key:
                    del self._member_ports[(old["dpid"], old["port"])]
        if old is not None:
            self.event("host", f"host {old['name'] or old['mac']} removed")
            self._changed("host")

    def _claim_port(self, key: HostKey, old: dict[str, Any] | None, where: tuple[int, int]) -> None:
        """A tenant member's port is its tenant's (lock held): default-network hosts learned there
        (its own frames, seen before tenancy's rules were in place) are forgotten, so routing never
        answers ARP with them nor sends untagged frames to that port."""
        if old is not None and self._member_ports.get((old["dpid"], old["port"])) == key:
            del self._member_ports[(old["dpid"], old["port"])]
        self._member_ports[where] = key
        for other, record in list(self._hosts.items()):
            if other[0] == DEFAULT_NETWORK and (record["dpid"], record["port"]) == where:
                del self._hosts[other]
                self._log_host(other)

    def _log_host(self, key: HostKey) -> None:
        """Append one host change (lock held); the oldest half goes when the log is full."""
        self._host_seq += 1
        self._host_log.append(key)
        if len(self._host_log) > HOST_LOG_KEPT:
            drop = len(self._host_log) // 2
            del self._host_log[:drop]
            self._host_log_start += drop

    def set_link_util(self, a: int | str, a_port: int, b: int | str, b_port: int, bps: float,
                      capacity_bps: float) -> None:
        """Monitor's measurement for one link: bits/s on its busier direction and its capacity.
        Not a topology change, so listeners are not called (it happens every second per link)."""
        key = link_key(self._end(a), a_port, self._end(b), b_port)
        with self._lock:
            self._util[key] = {"bps": float(bps), "capacity_bps": float(capacity_bps)}

    def event(self, kind: str, text: str) -> None:
        """Record an event for the UI's log; strictly increasing times so `since` never repeats."""
        with self._lock:
            now = time.time()
            if self._events and now <= self._events[-1]["t"]:
                now = self._events[-1]["t"] + 1e-6
            self._events.append({"t": now, "kind": kind, "text": text})
        # Host events at debug level: a fabric with thousands of learned hosts would otherwise spend
        # a sixth of the controller's time writing one log line per host (measured with cbench).
        LOG.log(logging.DEBUG if kind == "host" else logging.INFO, "%s: %s", kind, text)

    # --- readers --------------------------------------------------------------------------------
    def hosts(self) -> list[dict[str, Any]]:
        """Host records with `dpid` as int (for apps; the snapshot shows 16-hex). The records are
        shared and read-only: routing reads all of them on every recompute, and copying thousands
        of dicts each time was the cost that showed in the benchmark. Use host(mac) for one."""
        with self._lock:
            if self._hosts_list is None:
                self._hosts_list = list(self._hosts.values())
            return list(self._hosts_list)

    def host(self, mac: str, tag: int = DEFAULT_NETWORK) -> dict[str, Any] | None:
        """One host record by network and MAC (O(1): discovery asks on every packet-in)."""
        with self._lock:
            record = self._hosts.get((tag, mac.lower()))
            return dict(record) if record is not None else None

    @property
    def host_version(self) -> int:
        """The number of host changes so far (read it before `hosts()` to resume from there)."""
        with self._lock:
            return self._host_seq

    def host_changes(self, since: int) -> tuple[int, list[HostKey] | None]:
        """(current host change number, (tag, MAC) keys added, changed or removed after change `since`), so a
        reader that remembers the number sees what changed without scanning every host (routing,
        on each new host among thousands). None for the MACs when the log no longer reaches back
        to `since`: the reader must read all hosts."""
        with self._lock:
            if since < self._host_log_start or since > self._host_seq:
                return self._host_seq, None
            return self._host_seq, self._host_log[since - self._host_log_start:]

    def links(self) -> list[dict[str, Any]]:
        """Discovered fabric links as dicts with a, a_port, b, b_port, up (ends as names)."""
        with self._lock:
            return [{"a": k[0][0], "a_port": k[0][1], "b": k[1][0], "b_port": k[1][1], **v}
                    for k, v in sorted(self._links.items())]

    def connected(self) -> list[int]:
        with self._lock:
            return sorted(d for d, s in self._switches.items() if s["connected"])

    def events(self, since: float = 0.0) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._events if e["t"] > since]

    def snapshot(self) -> dict[str, Any]:
        """The `/state` document (docs/CONTRACTS.md, "Controller process")."""
        with self._lock:
            topo = self._intended
            switches = self._snapshot_switches(topo)
            links = self._snapshot_links(topo)
            hosts = [
                {"mac": h["mac"], "ip": h["ip"], "dpid": dpid_str(h["dpid"]), "port": h["port"],
                 "name": h["name"], **({"tenant": h["tenant"]} if h["tenant"] is not None else {})}
                for h in sorted(self._hosts.values(), key=lambda h: (h["name"] or "", h["mac"], h["tag"]))
            ]
            diff = self._diff(topo)
            events = [dict(e) for e in list(self._events)[-EVENTS_IN_SNAPSHOT:]]
            ready = {app: dict(facts) for app, facts in sorted(self._ready.items())}
        return {"switches": switches, "links": links, "hosts": hosts, "diff": diff, "events": events,
                "ready": ready}

    def _snapshot_switches(self, topo: Topology | None) -> list[dict[str, Any]]:
        dpids = set(self._switches) | set(self._names)
        out = []
        for value in sorted(dpids, key=lambda d: self.name_of(d)):
            record = self._switches.get(value, {"connected": False, "ports": []})
            out.append({"dpid": dpid_str(value), "name": self.name_of(value),
                        "connected": record["connected"], "ports": [dict(p) for p in record["ports"]]})
        return out

    def _snapshot_links(self, topo: Topology | None) -> list[dict[str, Any]]:
        """Discovered links plus the intended ones not discovered (up False) plus container links
        (up while the Pi is connected: LLDP never sees a container)."""
        rows: dict[LinkKey, dict[str, Any]] = {k: {"up": v["up"]} for k, v in self._links.items()}
        capacity: dict[LinkKey, float] = {}
        if topo is not None:
            connected = {self.name_of(d) for d, s in self._switches.items() if s["connected"]}
            for ln in topo.links:
                key = link_key(ln.a, ln.port_a, ln.b, ln.port_b)
                if ln.bw:
                    capacity[key] = ln.bw * 1e6
                if key in rows:
                    continue
                if topo.kind(ln.a) == "container" or topo.kind(ln.b) == "container":
                    pi = ln.b if topo.kind(ln.a) == "container" else ln.a
                    rows[key] = {"up": pi in connected}
                else:
                    rows[key] = {"up": False}
        out = []
        for key in sorted(rows):
            util = self._util.get(key)
            cap = util["capacity_bps"] if util else capacity.get(key)
            bps = util["bps"] if util else 0.0
            out.append({
                "a": key[0][0], "a_port": key[0][1], "b": key[1][0], "b_port": key[1][1],
                "up": rows[key]["up"], "bps": bps,
                "util": min(1.0, bps / cap) if cap else 0.0,
                "capacity_bps": cap,
            })
        return out

    def _diff(self, topo: Topology | None) -> dict[str, list[dict[str, Any]]]:
        """Intended versus discovered: switches that never connected and fabric links LLDP has not
        seen are missing; connected unknown DPIDs and links the topology lacks are unexpected."""
        missing: list[dict[str, Any]] = []
        unexpected: list[dict[str, Any]] = []
        if topo is None:
            return {"missing": missing, "unexpected": unexpected}
        connected = {d for d, s in self._switches.items() if s["connected"]}
        for name in topo.bridges:
            if topo.dpid(name) not in connected:
                missing.append({"kind": "switch", "name": name})
        for value in sorted(connected - set(self._names)):
            unexpected.append({"kind": "switch", "name": dpid_str(value)})
        intended = {link_key(ln.a, ln.port_a, ln.b, ln.port_b) for ln in topo.fabric_links()}
        for key in sorted(intended - set(self._links)):
            missing.append({"kind": "link", "a": key[0][0], "a_port": key[0][1],
                            "b": key[1][0], "b_port": key[1][1]})
        for key in sorted(set(self._links) - intended):
            unexpected.append({"kind": "link", "a": key[0][0], "a_port": key[0][1],
                               "b": key[1][0], "b_port": key[1][1]})
        return {"missing": missing, "unexpected": unexpected}


def _fmt(key: LinkKey) -> str:
    return f"{key[0][0]}:{key[0][1]}-{key[1][0]}:{key[1][1]}"


def _container_by_mac(topo: Topology, mac: str) -> str | None:
    for name in topo.containers:
        if topo.node(name).mac == mac:
            return name
    return None


STATE = ControllerState()
