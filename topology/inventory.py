"""Cluster inventory, Raspberry Pi hardware presets, and the pure placement of a topology on Pis.

Pure: parsing and validation of an inventory mapping, the mapping of a topology's Pis and
switches onto the inventory's Pis, the VXLAN/patch wiring plan between them, and the check of
an underlay subnet against the host's routes. No I/O here, so every rule has a fast unit test and
`picloud cluster check` can list every problem of a bad inventory before anything is touched.

Inventory file (YAML)::

    controller: 172.29.0.1          # address the Pis use to reach the controller (optional)
    pis:
      - name: pi1
        management: 172.29.0.11     # what `cluster check` pings / connects to
        ovsdb: tcp:172.29.0.11:6640 # or ssl:HOST:PORT (needs tls)
        docker: ssh://pi@172.29.0.11  # or tcp://HOST:2376 (needs tls), unix:///PATH, or none
        netns: pce1e0               # emulated Pis only: the Pi's namespace on this machine
        underlay: 172.29.0.11       # VXLAN tunnel endpoint
        model: "3"                  # optional, a key of PI_MODELS
        tls: {ca: ca.pem, cert: cert.pem, key: key.pem}
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from picloud.errors import ClusterError
from topology.model import NAME_RE, Topology, control_char, ifname

VXLAN_PORT = 4789  # IANA-assigned VXLAN UDP port (RFC 7348 section 5)


@dataclass(frozen=True)
class PiModel:
    """Published hardware of one Raspberry Pi model (the preset for its container limits)."""

    key: str
    name: str
    soc: str
    cores: int
    mhz: int
    memory_mb: int
    nic_mbit: float  # the Ethernet rate its uplinks are shaped to (see the sources below)

    def cpus(self, host_cpus: int, reference_mhz: int = 3000) -> float:
        """CPU share (in host cores) that stands in for this Pi.

        First-order clock scaling: cores x clock / REFERENCE_MHZ, capped at the host's cores. It
        ignores the per-clock gap between a 2014 ARM11 and a current x86 core, so an emulated old
        Pi is faster than the real one; the memory limit, which decides how many idle servers fit,
        is exact."""
        return round(min(float(host_cpus), self.cores * self.mhz / reference_mhz), 3)


# Source: Raspberry Pi Ltd, "Raspberry Pi hardware" specifications and product briefs,
# https://www.raspberrypi.com/documentation/computers/raspberry-pi.html and
# https://datasheets.raspberrypi.com/ (Pi 4 Model B and Pi 5 product briefs). Where a model ships
# with several memory sizes the preset takes the launch variant named in the comment.
# NIC rates (`nic_mbit`, the Pi's Ethernet as the scale model shapes its uplinks):
# - Models B, B+, 2 B and 3 B: 10/100 Ethernet through the SMSC LAN9512/LAN9514 USB hub + Ethernet
#   chip (same documentation page, "Ethernet: 10/100");
# - 3 B+: "Gigabit Ethernet over USB 2.0 (maximum throughput 300 Mbps)" (Raspberry Pi 3 Model B+
#   product brief, https://datasheets.raspberrypi.com/rpi3/raspberry-pi-3-b-plus-product-brief.pdf;
#   the LAN7515 hangs off the SoC's single USB 2.0 port);
# - 4 B and 5: true Gigabit Ethernet (Pi 4: BCM54213PE PHY on the SoC's GENET MAC; Pi 5: through
#   the RP1 I/O controller), product briefs above.
# Model B is the Glasgow Raspberry Pi Cloud's own board (Tso et al., ICDCS Workshops 2013): the
# 512 MB revision 2 sold from October 2012.
PI_MODELS: dict[str, PiModel] = {
    "b": PiModel("b", "Raspberry Pi 1 Model B rev 2 (2012)", "BCM2835, ARM1176JZF-S", 1, 700, 512, 100),
    "b+": PiModel("b+", "Raspberry Pi 1 Model B+ (2014)", "BCM2835, ARM1176JZF-S", 1, 700, 512, 100),
    "2": PiModel("2", "Raspberry Pi 2 Model B (2015)", "BCM2836, Cortex-A7", 4, 900, 1024, 100),
    "3": PiModel("3", "Raspberry Pi 3 Model B (2016)", "BCM2837, Cortex-A53", 4, 1200, 1024, 100),
    "3b+": PiModel("3b+", "Raspberry Pi 3 Model B+ (2018)", "BCM2837B0, Cortex-A53", 4, 1400, 1024, 300),
    "4": PiModel("4", "Raspberry Pi 4 Model B, 4 GB (2019)", "BCM2711, Cortex-A72", 4, 1500, 4096, 1000),
    "5": PiModel("5", "Raspberry Pi 5, 4 GB (2023)", "BCM2712, Cortex-A76", 4, 2400, 4096, 1000),
}


def pi_model(key: str) -> PiModel:
    try:
        return PI_MODELS[str(key).lower()]
    except KeyError:
        raise ClusterError(
            f"pi model {key!r}: unknown (one of {', '.join(PI_MODELS)})"
        ) from None


@dataclass(frozen=True)
class Endpoint:
    """An OVSDB or Docker endpoint split into its parts."""

    scheme: str  # tcp, ssl, ssh, unix, none
    host: str = ""
    port: int = 0
    user: str = ""
    raw: str = ""


@dataclass(frozen=True)
class InventoryPi:
    name: str
    management: str
    ovsdb: Endpoint
    docker: Endpoint
    underlay: str
    model: str | None = None
    tls: dict[str, str] = field(default_factory=dict)
    netns: str | None = None


@dataclass(frozen=True)
class Inventory:
    pis: tuple[InventoryPi, ...]
    controller: str | None = None
    source: str = "inventory"

    def pi(self, name: str) -> InventoryPi:
        for p in self.pis:
            if p.name == name:
                return p
        raise ClusterError(f"{self.source}: unknown pi {name!r} (pis: {', '.join(p.name for p in self.pis)})")


_OVSDB_RE = re.compile(r"\A(tcp|ssl):([^:]+|\[[0-9a-fA-F:]+\]):(\d{1,5})\Z")
_DOCKER_RE = re.compile(r"\A(ssh|tcp)://(?:([^@/]+)@)?([^:/@]+)(?::(\d{1,5}))?/?\Z")


def parse_ovsdb(text: object) -> Endpoint:
    """`tcp:HOST:PORT` or `ssl:HOST:PORT`, the syntax ovs-vsctl --db and ovsdb-server use."""
    if isinstance(text, str) and text.startswith("unix:") and len(text) > 5:
        return Endpoint("unix", host=text[5:], raw=text)
    m = _OVSDB_RE.match(str(text))
    if not m or not 0 < int(m.group(3)) < 65536:
        raise ValueError(f"{text!r} is not tcp:HOST:PORT or ssl:HOST:PORT")
    return Endpoint(m.group(1), host=m.group(2).strip("[]"), port=int(m.group(3)), raw=str(text))


def parse_docker(text: str) -> Endpoint:
    """`ssh://[USER@]HOST[:PORT]`, `tcp://HOST:PORT` (TLS), `unix:///PATH` (an engine on this
    machine, for emulated Pis), or `none` for an emulated Pi whose containers are namespaces."""
    if text in ("none", None):
        return Endpoint("none", raw="none")
    if isinstance(text, str) and text.startswith("unix:///"):
        return Endpoint("unix", host=text[len("unix://"):], raw=text)
    m = _DOCKER_RE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not ssh://[USER@]HOST[:PORT], tcp://HOST:PORT, unix:///PATH or none")
    scheme, user, host, port = m.group(1), m.group(2) or "", m.group(3), m.group(4)
    if scheme == "tcp" and not port:
        raise ValueError(f"{text!r} needs a port (Docker's TLS port is 2376)")
    number = int(port) if port else 22
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return Endpoint(scheme, host=host, port=number, user=user, raw=text)


def _address(value: Any) -> str:
    return str(ipaddress.ip_address(str(value)))


def inventory_problems(data: Any, source: str = "inventory") -> list[str]:
    """Every problem of an inventory mapping, one line each, `WHERE: WHAT (RULE)`; empty when
    the inventory is usable. Collects instead of stopping at the first so a user fixes a file in
    one round."""
    problems: list[str] = []
    if not isinstance(data, dict):
        return [f"{source}: expected a mapping with a 'pis' list (see provisioning/README.md)"]
    found = control_char(data)
    if found:
        return [f"{source}: {found[0]} {found[1]!r} holds a control character (newline, tab, NUL...): "
                "names and addresses are printable text"]
    unknown = set(data) - {"pis", "controller"}
    for key in sorted(unknown):
        problems.append(f"{source}: unknown key {key!r} (allowed: pis, controller)")
    if data.get("controller") is not None:
        try:
            _address(data["controller"])
        except ValueError:
            problems.append(f"{source}: controller {data['controller']!r} is not an IP address")
    pis = data.get("pis")
    if not isinstance(pis, list) or not pis:
        problems.append(f"{source}: 'pis' must be a non-empty list of mappings")
        return problems
    names: Counter[str] = Counter()
    addresses: dict[str, list[str]] = {}
    allowed = {"name", "management", "ovsdb", "docker", "underlay", "model", "tls", "netns"}
    for index, entry in enumerate(pis):
        where = f"{source}: pis[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping (name, management, ovsdb, docker, underlay)")
            continue
        name = entry.get("name")
        if isinstance(name, str) and NAME_RE.match(name):
            where = f"{source}: pi {name!r}"
            names[name] += 1
        else:
            problems.append(f"{where}: invalid name {name!r} (1-32 characters of [a-z0-9-])")
        for key in sorted(set(entry) - allowed):
            problems.append(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
        for key in ("management", "underlay"):
            if key not in entry:
                problems.append(f"{where}: missing {key!r} (an IP address)")
                continue
            try:
                addr = _address(entry[key])
            except ValueError:
                problems.append(f"{where}: {key} {entry[key]!r} is not an IP address")
                continue
            addresses.setdefault(f"{key} {addr}", []).append(str(name))
        tls = entry.get("tls") or {}
        if not isinstance(tls, dict) or set(tls) - {"ca", "cert", "key"}:
            problems.append(f"{where}: tls must be a mapping with ca, cert, key (file paths)")
            tls = {}
        needs_tls = []
        try:
            ovsdb = parse_ovsdb(entry.get("ovsdb"))
            if ovsdb.scheme == "ssl":
                needs_tls.append("ovsdb ssl:")
        except ValueError as exc:
            problems.append(f"{where}: ovsdb {exc}")
        try:
            docker = parse_docker(entry.get("docker", "none"))
            if docker.scheme == "tcp":
                needs_tls.append("docker tcp://")
            if docker.scheme in ("none", "unix") and not entry.get("netns"):
                problems.append(f"{where}: docker {docker.scheme} needs netns (the emulated Pi's namespace here)")
        except ValueError as exc:
            problems.append(f"{where}: docker {exc}")
        if needs_tls and not all(tls.get(k) for k in ("ca", "cert", "key")):
            what = " and ".join(needs_tls)
            problems.append(f"{where}: {what} need tls: ca, cert and key (plain TCP is not allowed)")
        if entry.get("model") is not None and str(entry["model"]).lower() not in PI_MODELS:
            problems.append(f"{where}: unknown model {entry['model']!r} (one of {', '.join(PI_MODELS)})")
    for name, count in sorted(names.items()):
        if count > 1:
            problems.append(f"{source}: pi {name!r}: duplicate name ({count} entries; names must be unique)")
    for key, owners in sorted(addresses.items()):
        if len(owners) > 1:
            problems.append(
                f"{source}: {key} is used by {', '.join(owners)} (each pi needs its own address)"
            )
    return problems


def parse_inventory(data: Any, source: str = "inventory") -> Inventory:
    """A validated Inventory, or ClusterError naming the first problem and how many more."""
    problems = inventory_problems(data, source)
    if problems:
        more = f" (+{len(problems) - 1} more: run 'picloud cluster check')" if len(problems) > 1 else ""
        raise ClusterError(problems[0] + more)
    pis = tuple(
        InventoryPi(
            name=e["name"],
            management=_address(e["management"]),
            ovsdb=parse_ovsdb(e["ovsdb"]),
            docker=parse_docker(e.get("docker", "none")),
            underlay=_address(e["underlay"]),
            model=str(e["model"]).lower() if e.get("model") is not None else None,
            tls=dict(e.get("tls") or {}),
            netns=e.get("netns"),
        )
        for e in data["pis"]
    )
    controller = _address(data["controller"]) if data.get("controller") is not None else None
    return Inventory(pis=pis, controller=controller, source=source)


# --- placement ---------------------------------------------------------------------------------
def place(topology: Topology, inventory: Inventory) -> dict[str, str]:
    """Which inventory Pi hosts each bridge of the topology.

    Topology Pis go round-robin onto the inventory's Pis in order (a rack of 12 model Pis on 3
    real ones puts 4 on each). A switch goes where most of its already-placed neighbours are, so
    a ToR sits with its rack and the traffic inside a rack never crosses the underlay; ties and
    neighbourless switches go to the least loaded host, then the first in inventory order."""
    hosts = [p.name for p in inventory.pis]
    placement: dict[str, str] = {}
    for index, pi in enumerate(topology.pis):
        placement[pi] = hosts[index % len(hosts)]
    pending = list(topology.switches)
    while pending:
        best: tuple[int, str] | None = None
        for switch in pending:
            placed = sum(1 for n in topology.graph.neighbors(switch) if n in placement)
            if best is None or placed > best[0]:
                best = (placed, switch)
        assert best is not None
        switch = best[1]
        votes: Counter[str] = Counter(
            placement[n] for n in topology.graph.neighbors(switch) if n in placement
        )
        load: Counter[str] = Counter(placement.values())
        placement[switch] = min(hosts, key=lambda h: (-votes[h], load[h], hosts.index(h)))
        pending.remove(switch)
    return placement


@dataclass(frozen=True)
class Wire:
    """One end of a fabric link as an OVS port on the bridge `node` hosted on `host`.

    kind `patch` (both ends on one host: an OVS patch port, no kernel device) or `vxlan` (ends on
    two hosts: a VXLAN port to the peer's underlay address, VNI = `key`). ofport_request is the
    model port, so the controller sees the same port numbers in every backend."""

    node: str
    port: int
    host: str
    ifname: str
    kind: str
    peer_ifname: str = ""
    remote_ip: str = ""
    key: int = 0


def wiring(topology: Topology, placement: dict[str, str], inventory: Inventory, prefix: str) -> list[Wire]:
    """The OVS ports every fabric link needs, both ends, in link order.

    VXLAN key: one VNI per topology link (its 1-based index among the fabric links). Each tunnel
    then is one point-to-point link of the model, so the controller's discovery, routing and
    tenancy (which carries tenants as VLAN tags on every fabric link) work unchanged; the tenant's
    VLAN rides inside the tunnel."""
    underlay = {p.name: p.underlay for p in inventory.pis}
    wires: list[Wire] = []
    for index, link in enumerate(topology.fabric_links(), start=1):
        ends = ((link.a, link.port_a, link.b, link.port_b), (link.b, link.port_b, link.a, link.port_a))
        same_host = placement[link.a] == placement[link.b]
        for node, port, peer, peer_port in ends:
            name = ifname(prefix, topology.short_id(node), port)
            peer_name = ifname(prefix, topology.short_id(peer), peer_port)
            if same_host:
                wires.append(Wire(node, port, placement[node], name, "patch", peer_ifname=peer_name))
            else:
                wires.append(
                    Wire(node, port, placement[node], name, "vxlan",
                         remote_ip=underlay[placement[peer]], key=index)
                )
    return wires


# --- underlay ----------------------------------------------------------------------------------
def check_underlay(subnet: str, routes: Iterable[str], where: str = "underlay") -> ipaddress.IPv4Network:
    """The emulated cluster's underlay subnet, refused when it overlaps a route the host has.

    `routes` are destinations from `ip route` (`default` is ignored: it overlaps everything by
    design). Never picks another subnet on its own: a silent guess could collide with a network
    the next machine has."""
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as exc:
        raise ClusterError(f"{where}: {subnet!r} is not an IPv4 subnet ({exc})") from None
    if net.num_addresses < 8:
        raise ClusterError(f"{where}: {subnet} is too small (need a /29 or larger)")
    for route in routes:
        if route in ("default", "0.0.0.0/0") or ":" in route:
            continue
        try:
            other = ipaddress.IPv4Network(route, strict=False)
        except ValueError:
            continue
        if net.overlaps(other):
            raise ClusterError(
                f"{where}: {subnet} overlaps the host route {other} (pick a subnet no route covers)"
            )
    return net
