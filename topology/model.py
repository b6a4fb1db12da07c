"""The topology model: switches, Raspberry Pis and containers joined by links, on networkx.

Pure data. Every number a later layer needs (port numbers, DPIDs, interface names, default
addresses) is derived here deterministically, so flows, logs and the UI agree across runs and a
crashed run's objects can be recognised by name alone.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from picloud.errors import TopologyError

KINDS = ("switch", "pi", "container")
SWITCH_ROLES = ("core", "aggregation", "spine", "leaf", "tor", "edge")
NAME_RE = re.compile(r"\A[a-z0-9][a-z0-9-]{0,31}\Z")
IFNAMSIZ = 15  # Linux interface names: 15 bytes plus the terminating NUL
DEFAULT_NETWORK = ipaddress.ip_network("10.0.0.0/8")
_KIND_LETTER = {"switch": "s", "pi": "p", "container": "c"}
LINK_ATTRS = ("bw", "delay", "jitter", "loss", "queue")


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    role: str | None = None  # switches only
    rack: int | None = None  # pis only
    pi: str | None = None  # containers only
    ip: str | None = None  # containers only, "10.0.0.1/8"
    mac: str | None = None  # containers only


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    port_a: int
    port_b: int
    bw: float | None = None  # Mbit/s
    delay: str | None = None  # "2ms"
    loss: float | None = None  # percent
    jitter: str | None = None  # "1ms": netem's delay variation (needs delay)
    queue: int | None = None  # packets

    @property
    def key(self) -> tuple[str, str]:
        return (self.a, self.b)

    def attrs(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in LINK_ATTRS if getattr(self, k) is not None}


def dpid(name: str) -> int:
    """48 bits of sha256(name): stable across runs and machines, independent of build order."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:12], 16)


def dpid_str(value: int) -> str:
    return f"{value:016x}"


def ifname(prefix: str, short: str, port: int | None = None) -> str:
    """Host-side interface or bridge name; Linux truncates nothing, it refuses, so we check."""
    name = prefix + short + (f"p{port}" if port is not None else "")
    if len(name.encode()) > IFNAMSIZ:
        raise TopologyError(f"interface name {name!r}: {len(name)} bytes (Linux allows {IFNAMSIZ})")
    return name


def control_char(data: Any, path: str = "") -> tuple[str, str] | None:
    """(where, value) of the first string in `data` (nested dicts/lists, keys too) holding a control
    character (C0, DEL, C1: newline, tab, NUL...); None if there is none. Names and addresses end
    up in `ip -batch` lines, OVS commands and logs, where a newline starts a new command or record."""
    if isinstance(data, str):
        bad = next((c for c in data if ord(c) < 32 or 127 <= ord(c) < 160), None)
        return (path or "value", data) if bad is not None else None
    if isinstance(data, dict):
        for key, value in data.items():
            found = control_char(key, f"{path}.{key!r}" if path else repr(key)) or control_char(
                value, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            found = control_char(value, f"{path}[{i}]")
            if found:
                return found
    return None


def refuse_control_chars(data: Any, where: str, error: type[Exception] = TopologyError) -> None:
    found = control_char(data)
    if found:
        raise error(f"{where}: {found[0]} {found[1]!r} holds a control character (newline, tab, NUL...): "
                    "names and addresses are printable text")


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise TopologyError(
            f"{what} {name!r}: invalid name (names are 1-32 characters of [a-z0-9-], "
            "starting with a letter or digit)"
        )


def _positive_number(value: Any, what: str, allow_zero: bool = False) -> float:
    refuse_control_chars(value, what)  # float() would accept "100\n"
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TopologyError(f"{what}: {value!r} is not a number") from None
    if value != value or value < 0 or (value == 0 and not allow_zero):
        raise TopologyError(f"{what}: {value!r} must be a positive number")
    return float(value)


_DELAY_RE = re.compile(r"\A\d+(\.\d+)?(us|ms|s)\Z")


def _duration(value: Any, what: str) -> str:
    """A delay or jitter as tc writes it: a number means milliseconds, as in Mininet."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = f"{_positive_number(value, what, allow_zero=True):g}ms"
    if not isinstance(value, str) or not _DELAY_RE.match(value):
        raise TopologyError(f"{what} {value!r} must look like '2ms', '500us' or '1s'")
    return value


@dataclass
class Topology:
    """A data-centre topology. Build it with the add_* calls (Mininet-style) or a builder."""

    name: str = "custom"
    graph: nx.Graph = field(default_factory=nx.Graph)
    _order: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    _links: list[tuple[str, str]] = field(default_factory=list)
    _next_port: dict[str, int] = field(default_factory=dict)
    _index: dict[str, int] = field(default_factory=dict)  # position within its kind: short ids in O(1)

    def __post_init__(self) -> None:
        refuse_control_chars(self.name, "topology name")

    # --- building -----------------------------------------------------------------------------
    def _add_node(self, node: Node) -> str:
        _check_name(node.name, node.kind)
        if node.name in self.graph:
            raise TopologyError(f"{node.kind} {node.name!r}: duplicate name (node names must be unique)")
        self.graph.add_node(node.name, node=node)
        self._index[node.name] = len(self._order[node.kind])
        self._order[node.kind].append(node.name)
        self._next_port[node.name] = 1
        return node.name

    def add_switch(self, name: str, role: str = "edge") -> str:
        if role not in SWITCH_ROLES:
            raise TopologyError(f"switch {name!r}: unknown role {role!r} (one of {', '.join(SWITCH_ROLES)})")
        return self._add_node(Node(name, "switch", role=role))

    def add_pi(self, name: str, rack: int | None = None) -> str:
        if rack is not None and (isinstance(rack, bool) or not isinstance(rack, int) or rack < 0):
            raise TopologyError(f"pi {name!r}: rack {rack!r} must be a whole number >= 0")
        return self._add_node(Node(name, "pi", rack=rack))

    def add_container(
        self, name: str, pi: str, ip: str | None = None, mac: str | None = None,
        link: dict[str, Any] | None = None,
    ) -> str:
        """`link` optionally shapes the container's attachment (bw, delay, loss, queue)."""
        if not isinstance(pi, str) or pi not in self.graph or self.kind(pi) != "pi":
            raise TopologyError(f"container {name!r}: unknown pi {pi!r} (containers run on a declared pi)")
        link = link or {}
        if not isinstance(link, dict) or set(link) - set(LINK_ATTRS):
            raise TopologyError(f"container {name!r}: 'link' takes only {', '.join(LINK_ATTRS)}")
        ip, mac = self._container_address(name, ip, mac)
        self._add_node(Node(name, "container", pi=pi, ip=ip, mac=mac))
        self.add_link(name, pi, **link)
        return name

    def _container_address(self, name: str, ip: str | None, mac: str | None) -> tuple[str, str]:
        """The contract's defaults (10.0.0.k+1/8, 02:00:00:..) for the next container, or the
        given ip (prefix /8 when none is written) and mac, checked and normalised."""
        index = len(self._order["container"])
        refuse_control_chars({"ip": ip, "mac": mac}, f"container {name!r}")
        if ip is None:
            ip = f"{DEFAULT_NETWORK.network_address + index + 1}/{DEFAULT_NETWORK.prefixlen}"
        else:
            try:
                text = str(ip)
                iface = ipaddress.ip_interface(text if "/" in text else f"{text}/{DEFAULT_NETWORK.prefixlen}")
            except ValueError:
                raise TopologyError(
                    f"container {name!r}: invalid ip {ip!r} (an IPv4 address like 10.0.0.1/8)"
                ) from None
            if iface.version != 4:
                raise TopologyError(f"container {name!r}: ip {ip!r} is not IPv4 (containers use IPv4 addresses)")
            ip = str(iface)
        if mac is None:
            mac = default_mac(index)
        elif not isinstance(mac, str) or not re.match(r"\A[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z", mac.lower()):
            raise TopologyError(f"container {name!r}: invalid mac {mac!r} (six hex bytes like 02:00:00:00:00:01)")
        return ip, mac.lower()

    def add_link(
        self,
        a: str,
        b: str,
        bw: float | None = None,
        delay: str | None = None,
        loss: float | None = None,
        queue: int | None = None,
        jitter: str | None = None,
    ) -> Link:
        where = f"link {a!r}-{b!r}"
        for end in (a, b):
            if not isinstance(end, str) or end not in self.graph:
                raise TopologyError(f"{where}: unknown node {end!r} (links must join declared nodes)")
        if a == b:
            raise TopologyError(f"{where}: self-loop (a link must join two different nodes)")
        if self.graph.has_edge(a, b):
            raise TopologyError(f"{where}: duplicate link (one link per pair of nodes)")
        for end, other in ((a, b), (b, a)):
            node = self.node(end)
            if node.kind == "container" and (self.graph.degree(end) > 0 or self.kind(other) != "pi"):
                raise TopologyError(f"{where}: container {end!r} has exactly one link, to its pi")
        if bw is not None:
            bw = _positive_number(bw, f"{where}: bw")
        if loss is not None:
            loss = _positive_number(loss, f"{where}: loss", allow_zero=True)
            if loss > 100:
                raise TopologyError(f"{where}: loss {loss} is over 100 percent")
        if queue is not None:
            queue_f = _positive_number(queue, f"{where}: queue")
            if queue_f != int(queue_f):
                raise TopologyError(f"{where}: queue {queue!r} must be a whole number of packets")
            queue = int(queue_f)
        if delay is not None:
            delay = _duration(delay, f"{where}: delay")
        if jitter is not None:
            jitter = _duration(jitter, f"{where}: jitter")
            if delay is None:
                raise TopologyError(f"{where}: jitter {jitter} without a delay (jitter varies the delay; "
                                    "netem needs both)")
        port_a, port_b = self._next_port[a], self._next_port[b]
        self._next_port[a] += 1
        self._next_port[b] += 1
        link = Link(a, b, port_a, port_b, bw=bw, delay=delay, loss=loss, queue=queue, jitter=jitter)
        self.graph.add_edge(a, b, link=link)
        self._links.append((a, b))
        return link

    def set_bw(self, a: str, b: str, bw: float | None) -> Link:
        """Change one link's rate (a Pi model or `--bw` applied after building); ports stay."""
        link = self.link(a, b)
        if bw is not None:
            bw = _positive_number(bw, f"link {a!r}-{b!r}: bw")
        link = replace(link, bw=bw)
        self.graph.edges[a, b]["link"] = link
        return link

    # --- reading ------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        try:
            return self.graph.nodes[name]["node"]
        except KeyError:
            raise TopologyError(f"unknown node {name!r}") from None

    def kind(self, name: str) -> str:
        return self.node(name).kind

    def pi_of(self, container: str) -> str:
        """The Pi a container runs on; TopologyError for a node that is no container."""
        pi = self.node(container).pi
        if pi is None:
            raise TopologyError(f"{container!r}: not a container (only containers run on a Pi)")
        return pi

    def __contains__(self, name: object) -> bool:
        return name in self.graph

    @property
    def switches(self) -> list[str]:
        return list(self._order["switch"])

    @property
    def pis(self) -> list[str]:
        return list(self._order["pi"])

    @property
    def containers(self) -> list[str]:
        return list(self._order["container"])

    @property
    def bridges(self) -> list[str]:
        """Every node realised as an OVS bridge: switches, then Pis."""
        return self.switches + self.pis

    @property
    def links(self) -> list[Link]:
        return [self.graph.edges[a, b]["link"] for a, b in self._links]

    def fabric_links(self) -> list[Link]:
        """Links between bridges (not the container-to-Pi attachments)."""
        return [ln for ln in self.links if self.kind(ln.a) != "container" and self.kind(ln.b) != "container"]

    def link(self, a: str, b: str) -> Link:
        if not self.graph.has_edge(a, b):
            raise TopologyError(f"link {a!r}-{b!r}: no such link")
        return self.graph.edges[a, b]["link"]

    def port(self, a: str, b: str) -> int:
        link = self.link(a, b)
        return link.port_a if link.a == a else link.port_b

    def ports(self, name: str) -> dict[int, str]:
        self.node(name)
        out = {}
        for peer in self.graph.neighbors(name):
            out[self.port(name, peer)] = peer
        return dict(sorted(out.items()))

    def containers_on(self, pi: str) -> list[str]:
        return [c for c in self._order["container"] if self.node(c).pi == pi]

    def short_id(self, name: str) -> str:
        kind = self.kind(name)
        return f"{_KIND_LETTER[kind]}{self._index[name]}"

    def dpid(self, name: str) -> int:
        if self.kind(name) == "container":
            raise TopologyError(f"container {name!r}: containers have no datapath id")
        return dpid(name)

    def by_dpid(self) -> dict[int, str]:
        return {dpid(n): n for n in self.bridges}

    def counts(self) -> dict[str, int]:
        return {
            "switches": len(self._order["switch"]),
            "pis": len(self._order["pi"]),
            "containers": len(self._order["container"]),
            "links": len(self.fabric_links()),
        }

    # --- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        switches = [{"name": n, "role": self.node(n).role} for n in self.switches]
        pis = []
        for n in self.pis:
            entry: dict[str, Any] = {"name": n}
            if self.node(n).rack is not None:
                entry["rack"] = self.node(n).rack
            pis.append(entry)
        containers: list[dict[str, Any]] = [
            {"name": c, "pi": self.node(c).pi, "ip": self.node(c).ip, "mac": self.node(c).mac}
            for c in self.containers
        ]
        links = [{"a": ln.a, "b": ln.b, **ln.attrs()} for ln in self.fabric_links()]
        attach = {c: self.link(c, self.pi_of(c)).attrs() for c in self.containers}
        for entry in containers:
            if attach[entry["name"]]:
                entry["link"] = attach[entry["name"]]
        return {"name": self.name, "switches": switches, "pis": pis, "containers": containers, "links": links}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "topology") -> Topology:
        """Inverse of to_dict. Links are added after all nodes so port numbers do not depend on
        the order of sections; containers' links come last, as the builders make them."""
        if not isinstance(data, dict):
            raise TopologyError(f"{where}: expected a mapping with switches, pis, containers, links")
        refuse_control_chars(data, where)
        unknown = set(data) - {"name", "switches", "pis", "containers", "links"}
        if unknown:
            raise TopologyError(
                f"{where}: unknown key {sorted(map(str, unknown))[0]!r} "
                "(allowed: name, switches, pis, containers, links)"
            )
        topo = cls(name=str(data.get("name", "custom")))

        def items(key: str) -> list[dict[str, Any]]:
            value = data.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise TopologyError(f"{key!r} must be a list of mappings")  # the except below adds where
            return value

        try:
            for s in items("switches"):
                topo.add_switch(s["name"], role=s.get("role", "edge"))
            for p in items("pis"):
                topo.add_pi(p["name"], rack=p.get("rack"))
            pending_containers = items("containers")
            for c in pending_containers:
                pi = c.get("pi")
                if not isinstance(pi, str) or pi not in topo.graph or topo.kind(pi) != "pi":
                    raise TopologyError(
                        f"container {c.get('name')!r}: unknown pi {pi!r} (containers run on a declared pi)"
                    )
            for ln in items("links"):
                extra = set(ln) - {"a", "b", *LINK_ATTRS}
                if extra:
                    raise TopologyError(
                        f"link {ln.get('a')!r}-{ln.get('b')!r}: unknown key {sorted(map(str, extra))[0]!r} "
                        f"(links take a, b, {', '.join(LINK_ATTRS)})"
                    )
                topo.add_link(ln["a"], ln["b"], **{k: ln[k] for k in LINK_ATTRS if k in ln})
            for c in pending_containers:
                extra = set(c) - {"name", "pi", "ip", "mac", "link"}
                if extra:
                    raise TopologyError(f"container {c.get('name')!r}: unknown key {sorted(map(str, extra))[0]!r}")
                topo.add_container(c["name"], c["pi"], ip=c.get("ip"), mac=c.get("mac"), link=c.get("link"))
        except KeyError as exc:
            raise TopologyError(f"{where}: an entry is missing the key {exc.args[0]!r}") from None
        except TopologyError as exc:
            raise TopologyError(f"{where}: {exc}") from None
        return topo


def default_mac(index: int) -> str:
    value = index + 1
    return "02:00:00:" + ":".join(f"{(value >> s) & 0xFF:02x}" for s in (16, 8, 0))
