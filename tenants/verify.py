"""Isolation proven by probing: `verify(testbed) -> IsolationReport` (`picloud tenant verify`).

Isolation rules are only as good as the packets they were tested with, so this module attacks the
running fabric from inside the members' own network namespaces and watches at the would-be
victims:

1. Every member of every tenant runs a sniffer (`python -m tenants.verify sniff`: a raw
   AF_PACKET socket on eth0, no scapy, cheap to start) that reports probe markers, ARP and IPv6
   frames it receives.
2. One member of each tenant (the attacker) runs `python -m tenants.verify probe` with scapy and
   sends, at every member of every other tenant: unicast IP/UDP straight to the victim's MAC and
   address (for overlapping subnets that address is also one of the attacker's own tenant);
   ARP who-has for the victim's address; frames with the source MAC and IP of a victim-tenant
   member (spoofing); broadcast and multicast IP; an IPv6 neighbour solicitation; and 802.1Q
   frames tagged with the victim tenant's VLAN id. The attacker also records every ARP reply it
   gets: a reply carrying another tenant's MAC is a leak.
3. Intra-tenant TCP reachability: every ordered pair of members of each tenant connects.

A leak is any marker, ARP or IPv6 frame from tenant A seen by a member of tenant B (B != A), or
another tenant's MAC in an ARP reply. The report is a tenant-by-tenant matrix of leaks plus the
reachability per tenant; `ok` is true when there is no leak and no missing intra-tenant pair.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from picloud.errors import TenantError
from tenants.model import Member, TenantPlan
from topology.backends.base import fabric_of

if TYPE_CHECKING:
    from topology.backends.base import Run

log = logging.getLogger(__name__)
MARKER = b"PCPROBE"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SNIFF_MAX_S = 120.0
SETTLE_S = 1.0  # after the last probe, how long frames may still be in flight
ROUND_S = 1.0  # pause between probe rounds when probing for a duration (gentle on the datapath)
PROBE_KINDS = ("unicast", "overlap", "arp", "spoof", "broadcast", "multicast", "ipv6-ns", "vlan")


# --- the report -------------------------------------------------------------------------------------
@dataclass
class IsolationReport:
    """Result of `verify`. `matrix[a][b]` counts leaks from tenant a into tenant b."""

    tenants: list[str]
    matrix: dict[str, dict[str, int]]
    leaks: list[dict[str, Any]] = field(default_factory=list)
    reachability: dict[str, dict[str, Any]] = field(default_factory=dict)
    probes: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.leaks and all(not r["failed"] for r in self.reachability.values())

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "tenants": self.tenants, "matrix": self.matrix, "leaks": self.leaks,
                "reachability": self.reachability, "probes": self.probes, "seconds": round(self.seconds, 2)}

    def summary(self) -> str:
        """A tenant-by-tenant matrix: leaks from row into column; the diagonal shows intra-tenant
        TCP reachability as reached/pairs."""
        width = max([len(t) for t in self.tenants] + [8])
        lines = ["leaks from row tenant into column tenant; diagonal: intra-tenant TCP pairs reached",
                 " " * width + " " + " ".join(f"{t:>{width}}" for t in self.tenants)]
        for a in self.tenants:
            cells = []
            for b in self.tenants:
                if a == b:
                    r = self.reachability.get(a, {"pairs": 0, "failed": []})
                    cells.append(f"{r['pairs'] - len(r['failed'])}/{r['pairs']}".rjust(width))
                else:
                    cells.append(str(self.matrix[a][b]).rjust(width))
            lines.append(f"{a:>{width}} " + " ".join(cells))
        kinds: dict[str, int] = {}
        for leak in self.leaks:
            kinds[leak["kind"]] = kinds.get(leak["kind"], 0) + 1
        verdict = "OK: no leak, every intra-tenant pair reached" if self.ok else "FAIL: " + ", ".join(
            [f"{n} {k} leaks" for k, n in sorted(kinds.items())]
            + [f"{len(r['failed'])} unreachable pairs in {t}" for t, r in self.reachability.items() if r["failed"]])
        lines.append(f"{self.probes} probes in {self.seconds:.1f}s. {verdict}")
        return "\n".join(lines)


# --- planning the probes (pure) ---------------------------------------------------------------------
def probe_specs(plan: TenantPlan, attackers_per_tenant: int = 1) -> dict[str, dict[str, Any]]:
    """attacker member name -> what it sends. Victims are every attached member of every other
    tenant; spoofing uses a victim-tenant member's MAC and IP as the source."""
    members = [(t, m) for t, m in plan.members if m.port is not None]
    specs: dict[str, dict[str, Any]] = {}
    for tenant in plan.tenants:
        mine = [m for t, m in members if t.name == tenant.name]
        for attacker in mine[:attackers_per_tenant]:
            victims = [{"tenant": t.name, "tenant_id": t.id, "name": m.name, "mac": m.mac, "ip": m.ip}
                       for t, m in members if t.name != tenant.name]
            own_ips = {m.ip for m in mine}
            specs[attacker.name] = {
                "tenant": tenant.name, "name": attacker.name, "mac": attacker.mac, "ip": attacker.ip,
                "victims": victims, "peers": [m.mac for m in mine if m.name != attacker.name],
                # Victim addresses that also exist in the attacker's tenant: the overlapping case.
                "overlap": sorted({v["ip"] for v in victims} & own_ips),
            }
    return specs


def classify_sniff(plan: TenantPlan, sniffer: Member, seen: dict[str, Any]) -> list[dict[str, Any]]:
    """Leaks in one sniffer's report: frames from another tenant's member, and spoofed or
    802.1Q-tagged probes wherever they arrive (even inside the attacker's own tenant)."""
    owner = {m.mac: t.name for t, m in plan.members}
    here = next(t.name for t, m in plan.members if m.name == sniffer.name)
    leaks = []
    for marker in seen.get("markers", []):
        src_tenant, kind, src_name = marker.split(":")[:3]
        if src_tenant != here or kind in ("spoof", "vlan"):
            leaks.append({"kind": kind, "from_tenant": src_tenant, "from": src_name, "to_tenant": here,
                          "to": sniffer.name})
    for key, kind in (("arp_from", "arp"), ("ipv6_from", "ipv6-ns")):
        for mac in seen.get(key, []):
            src_tenant = owner.get(mac)
            if src_tenant is not None and src_tenant != here:
                leaks.append({"kind": kind, "from_tenant": src_tenant, "from": mac, "to_tenant": here,
                              "to": sniffer.name})
    return leaks


def classify_arp_replies(plan: TenantPlan, attacker: str, replies: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Leaks in an attacker's ARP replies: an answer carrying another tenant's MAC."""
    owner = {m.mac: (t.name, m.name) for t, m in plan.members}
    here = next(t.name for t, m in plan.members if m.name == attacker)
    leaks = []
    for reply in replies:
        tenant_member = owner.get(reply["mac"].lower())
        if tenant_member is not None and tenant_member[0] != here:
            leaks.append({"kind": "arp-reply", "from_tenant": tenant_member[0], "from": tenant_member[1],
                          "to_tenant": here, "to": attacker, "ip": reply["ip"]})
    return leaks


# --- running it on a testbed ------------------------------------------------------------------------
def _module_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tenants.verify", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def verify(testbed: Run, attackers_per_tenant: int = 1, tcp: bool = True, duration: float = 0.0) -> IsolationReport:
    """Probe every tenant against every other on the running fabric (see the module docstring).
    With `duration`, attackers keep probing for that many seconds (to watch isolation hold while
    something changes, a controller restart say)."""
    from tenants.handle import current_plan

    t0 = time.monotonic()
    plan = current_plan(testbed)
    attached = [(t, m) for t, m in plan.members if m.port is not None]
    names = [t.name for t in plan.tenants]
    matrix = {a: {b: 0 for b in names if b != a} for a in names}
    report = IsolationReport(tenants=names, matrix=matrix)
    if not attached:
        report.seconds = time.monotonic() - t0
        return report
    sniffers: dict[str, subprocess.Popen] = {}
    probers: dict[str, subprocess.Popen] = {}
    try:
        for _, m in attached:
            sniffers[m.name] = fabric_of(testbed).popen(
                m.name, _module_argv("sniff", "--max-seconds", str(SNIFF_MAX_S)), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        for name, proc in sniffers.items():
            assert proc.stdout is not None and proc.stderr is not None  # piped above
            line = proc.stdout.readline()
            if line.strip() != "ready":
                detail = line.strip() or proc.stderr.read()[:200]
                raise TenantError(f"verify: sniffer in {name} did not start: {detail}")
        specs = probe_specs(plan, attackers_per_tenant)
        probers.update({
            name: fabric_of(testbed).popen(name, _module_argv("probe", "--spec", json.dumps(spec), "--duration",
                                                           str(duration)),
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
            for name, spec in specs.items()
        })
        for name, proc in probers.items():
            out, err = proc.communicate(timeout=120 + duration)
            if proc.returncode != 0:
                raise TenantError(f"verify: probe from {name} failed: {err.strip().splitlines()[-1:]}")
            result = json.loads(out.strip().splitlines()[-1])
            report.probes += result["sent"]
            report.leaks.extend(classify_arp_replies(plan, name, result["arp_replies"]))
        time.sleep(SETTLE_S)
        by_name = {m.name: m for _, m in attached}
        for name, proc in sniffers.items():
            out, _ = proc.communicate(input="", timeout=30)
            seen = json.loads(out.strip().splitlines()[-1])
            report.leaks.extend(classify_sniff(plan, by_name[name], seen))
    finally:
        for proc in [*probers.values(), *sniffers.values()]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for leak in report.leaks:
        if leak["from_tenant"] in matrix and leak["to_tenant"] in matrix[leak["from_tenant"]]:
            matrix[leak["from_tenant"]][leak["to_tenant"]] += 1
    if tcp:
        for tenant in plan.tenants:
            members = [m.name for t, m in attached if t.name == tenant.name]
            result = testbed.ping_all(tcp=True, containers=members) if len(members) > 1 else {}
            failed = sorted([s, d] for s, row in result.items() for d, loss in row.items() if loss > 0)
            report.reachability[tenant.name] = {"pairs": len(members) * (len(members) - 1), "failed": failed}
    report.seconds = time.monotonic() - t0
    return report


# --- inside a container -----------------------------------------------------------------------------
def sniff(max_seconds: float, iface: str = "eth0") -> dict[str, Any]:
    """Record probe markers and ARP/IPv6 senders received on `iface` until stdin closes."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    print("ready", flush=True)
    seen: dict[str, set[str]] = {"markers": set(), "arp_from": set(), "ipv6_from": set()}
    count = 0
    deadline = time.monotonic() + max_seconds
    watch = [sock, sys.stdin]
    while time.monotonic() < deadline:
        ready, _, _ = select.select(watch, [], [], 0.2)
        if sys.stdin in ready and not sys.stdin.readline():
            break
        if sock not in ready:
            continue
        frame, addr = sock.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING:
            continue
        count += 1
        src = ":".join(f"{b:02x}" for b in frame[6:12])
        ethertype = struct.unpack("!H", frame[12:14])[0]
        if ethertype == 0x0806:
            seen["arp_from"].add(src)
        elif ethertype == 0x86DD:
            seen["ipv6_from"].add(src)
        at = frame.find(MARKER)
        if at >= 0:
            end = frame.find(b";", at)
            seen["markers"].add(frame[at + len(MARKER) + 1:end].decode(errors="replace"))
    sock.close()
    return {"frames": count, **{k: sorted(v) for k, v in seen.items()}}


def probe_frames(spec: dict[str, Any]) -> list[Any]:
    """Every probe frame of one round from the attacker `spec` describes (scapy packets)."""
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.all import ARP, IP, UDP, Dot1Q, Ether, ICMPv6ND_NS, IPv6, Raw

    me_mac, me_ip, tenant, name = spec["mac"], spec["ip"], spec["tenant"], spec["name"]

    def mark(kind: str) -> Raw:
        return Raw(MARKER + f":{tenant}:{kind}:{name};".encode())

    frames = []
    overlap = set(spec["overlap"])
    for v in spec["victims"]:
        kind = "overlap" if v["ip"] in overlap else "unicast"
        frames.append(Ether(src=me_mac, dst=v["mac"]) / IP(src=me_ip, dst=v["ip"]) / UDP(dport=9) / mark(kind))
        frames.append(Ether(src=me_mac, dst="ff:ff:ff:ff:ff:ff")
                      / ARP(op=1, hwsrc=me_mac, psrc=me_ip, pdst=v["ip"]) / mark("arp"))
        frames.append(Ether(src=v["mac"], dst=v["mac"]) / IP(src=v["ip"], dst=v["ip"]) / UDP(dport=9)
                      / mark("spoof"))
        frames.append(Ether(src=v["mac"], dst="ff:ff:ff:ff:ff:ff")
                      / ARP(op=1, hwsrc=v["mac"], psrc=v["ip"], pdst=v["ip"]) / mark("spoof"))
        frames.append(Ether(src=me_mac, dst=v["mac"]) / Dot1Q(vlan=v["tenant_id"]) / IP(src=me_ip, dst=v["ip"])
                      / UDP(dport=9) / mark("vlan"))
        frames.append(Ether(src=v["mac"], dst=v["mac"]) / Dot1Q(vlan=v["tenant_id"])
                      / IP(src=v["ip"], dst=v["ip"]) / UDP(dport=9) / mark("vlan"))
    for peer in spec["peers"][:4]:  # spoofed into the attacker's own tenant: only the source check helps
        for v in spec["victims"][:4]:
            frames.append(Ether(src=v["mac"], dst=peer) / IP(src=v["ip"], dst=me_ip) / UDP(dport=9)
                          / mark("spoof"))
    frames.append(Ether(src=me_mac, dst="ff:ff:ff:ff:ff:ff") / IP(src=me_ip, dst="255.255.255.255")
                  / UDP(dport=9) / mark("broadcast"))
    frames.append(Ether(src=me_mac, dst="01:00:5e:00:00:01") / IP(src=me_ip, dst="224.0.0.1", ttl=1)
                  / UDP(dport=9) / mark("multicast"))
    frames.append(Ether(src=me_mac, dst="33:33:ff:00:00:01") / IPv6(src="fe80::1", dst="ff02::1:ff00:1")
                  / ICMPv6ND_NS(tgt="fe80::1") / mark("ipv6-ns"))
    frames.append(Ether(src=me_mac, dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1")
                  / UDP(dport=9) / mark("ipv6-ns"))
    return frames


def probe(spec: dict[str, Any], iface: str = "eth0", duration: float = 0.0) -> dict[str, Any]:
    """Send every probe kind from this container (scapy), in rounds for `duration` seconds (at
    least two rounds), and collect the ARP replies it gets."""
    frames = probe_frames(spec)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    sock.bind((iface, 0))
    out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    out.bind((iface, 0))
    payloads = [bytes(f) for f in frames]
    replies: list[dict[str, str]] = []
    rounds = 0
    end_sending = time.monotonic() + duration
    # At least two rounds: a first frame may meet a switch still installing a path.
    while rounds < 2 or time.monotonic() < end_sending:
        for payload in payloads:
            out.send(payload)
        rounds += 1
        _drain_arp(sock, replies, time.monotonic() + ROUND_S)
    _drain_arp(sock, replies, time.monotonic() + 1.0)
    unique = {(r["ip"], r["mac"]) for r in replies}
    return {"sent": rounds * len(payloads), "rounds": rounds,
            "arp_replies": [{"ip": ip, "mac": mac} for ip, mac in sorted(unique)]}


def _drain_arp(sock: socket.socket, replies: list[dict[str, str]], deadline: float) -> None:
    """Collect ARP replies (opcode 2) arriving on `sock` until `deadline`."""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return
        raw, addr = sock.recvfrom(2048)
        if addr[2] == PACKET_OUTGOING or len(raw) < 42 or raw[20:22] != b"\x00\x02":
            continue
        ip = socket.inet_ntoa(raw[28:32])
        replies.append({"ip": ip, "mac": ":".join(f"{b:02x}" for b in raw[22:28])})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tenants.verify", description="isolation probes")
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("sniff")
    s.add_argument("--max-seconds", type=float, default=SNIFF_MAX_S)
    s.add_argument("--iface", default="eth0")
    p = sub.add_parser("probe")
    p.add_argument("--spec", required=True)
    p.add_argument("--iface", default="eth0")
    p.add_argument("--duration", type=float, default=0.0, help="keep sending rounds for this long")
    args = parser.parse_args(argv)
    if args.mode == "sniff":
        print(json.dumps(sniff(args.max_seconds, args.iface)), flush=True)
        return 0
    result = probe(json.loads(args.spec), args.iface, args.duration)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
