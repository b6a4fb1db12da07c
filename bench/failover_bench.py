"""Failover and discovery on a real fat-tree (k=4), held against their targets; writes "## Failover".

    .venv/bin/python -m bench.failover_bench [--quick] [--cuts 5] [--record]

Targets (the tests in tests/integration/test_routing_fattree.py assert correctness only, with
physically argued bounds; the speed targets live here):
- a link cut under a 1,000 packets/s UDP stream loses fewer than 50 packets (uplink: a select-group
  bucket dies in the data plane; downlink: the controller moves the upstream groups);
- discovery matches the intended fabric within 2 s of the last switch connecting;
- the first all-pairs TCP round (no reactive set-up) is no slower than 1.2x the second.
The peer is the target itself: each figure is printed next to it, with the load average, since a
shared two-core host's OVS main thread can stall for a second and lose packets on any bridge.

The stream helpers here are shared with the correctness test (it imports them).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from picloud.controller_client import routed
from picloud.testbed import Testbed
from topology.effects import netns as netns_effects
from topology.stalls import OVS_STALL_S

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Failover"
APPS = ["discovery", "routing"]
POD1 = ["pi1-1-1-c1", "pi1-1-2-c1", "pi1-2-1-c1", "pi1-2-2-c1"]
POD3 = ["pi3-1-1-c1", "pi3-1-2-c1", "pi3-2-1-c1", "pi3-2-2-c1"]
CORES = ["core1", "core2", "core3", "core4"]
RATE = 1000  # packets/s of the failover stream
LOSS_TARGET = 50
SO_RCVBUFFORCE = 33  # Linux; not exported by Python's socket module
UDP_PORT = 5402


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05, context=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{context()}")


def routing_settled(tb: Testbed) -> bool:
    """Discovery sees the intended fabric and routing has sent paths for all containers since."""
    state = tb._controller_get("/state")
    tb.last_seen_state = state
    if state["diff"]["missing"] or state["diff"]["unexpected"]:
        return False
    return routed(state, len(tb.containers), since_match=True)


def why(tb: Testbed) -> str:
    state = getattr(tb, "last_seen_state", None) or {}
    recent = [f"{e['kind']}: {e['text']}" for e in state.get("events", [])[-6:]]
    return f" (diff {state.get('diff')}, recent events {recent})"


def endpoints(tb: Testbed, names=None) -> dict[str, tuple[str, str]]:
    return {c: (tb.fabric.netns(c), tb.container_ip(c)) for c in (names or tb.containers)}


@dataclass
class Stream:
    """One UDP stream with a link cut in it: what was sent when, and what never arrived."""
    sent_at: list[float] = field(default_factory=list)  # monotonic send time of sequence number i
    missing: list[int] = field(default_factory=list)
    cut_at: float = 0.0  # monotonic time the cut began
    control: Stream | None = None  # the same stream, at the same moments, on a path the cut misses

    @property
    def sent(self) -> int:
        return len(self.sent_at)

    def lost_between(self, start: float, end: float) -> list[int]:
        return [m for m in self.missing if start <= self.sent_at[m] < end]


def stream_and_cut(tb: Testbed, src: str, dst: str, cut: tuple[str, str], rate: int = RATE,
                   seconds: float = 2.0, cut_after: float = 0.5, control: tuple[str, str] | None = None,
                   control_delivers: tuple[float, int, float] | None = None) -> Stream:
    """Send `rate` UDP packets/s from src to dst for `seconds`, cutting link `cut` after `cut_after`
    seconds (the link is restored before returning). With `control` (a pair whose path the cut
    does not touch), the same stream goes from its first to its second container too, each packet
    right after the measured one: what the host's stalls cost any path at those moments. With
    `control_delivers` (after, count, longest), the streams go on past `seconds` until the control
    has delivered `count` packets sent from `after` seconds after the cut, or for `longest` seconds
    in all: a host whose data plane stalls for seconds gets a window in which the measured stream
    can show whether it delivers."""
    pairs = [(src, dst, UDP_PORT)] + ([(control[0], control[1], UDP_PORT + 1)] if control else [])
    ends = endpoints(tb, [c for a, b, _ in pairs for c in (a, b)])
    stop = threading.Event()
    streams = [Stream() for _ in pairs]
    result = streams[0]
    result.control = streams[1] if control else None
    seen: list[set[int]] = [set() for _ in pairs]
    sockets = []
    for a, b, port in pairs:
        rx = netns_effects.socket_in(ends[b][0], type=socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)  # this process may be starved, not the fabric
        rx.bind((ends[b][1], port))
        rx.settimeout(0.5)
        sockets.append((netns_effects.socket_in(ends[a][0], type=socket.SOCK_DGRAM), rx, (ends[b][1], port)))

    def receive(rx: socket.socket, got: set[int]) -> None:
        while not stop.is_set():
            try:
                data = rx.recv(64)
            except TimeoutError:
                continue
            got.add(struct.unpack("!I", data[:4])[0])

    def cut_link() -> None:
        result.cut_at = time.monotonic()
        tb.link(*cut).down()

    receivers = [threading.Thread(target=receive, args=(rx, got))
                 for (_, rx, _), got in zip(sockets, seen, strict=True)]
    for receiver in receivers:
        receiver.start()
    cutter = threading.Timer(cut_after, cut_link)  # off the sender's thread, so the pace stays steady
    try:
        start = time.monotonic()
        cutter.start()
        def more(now: float) -> bool:
            if now - start < seconds:
                return True
            if control_delivers is None or not control or not result.cut_at:
                return False
            after, count, longest = control_delivers
            first = next((i for i, t in enumerate(streams[1].sent_at) if t >= result.cut_at + after), None)
            delivered = 0 if first is None else sum(1 for i in list(seen[1]) if i >= first)
            return delivered < count and now - start < longest

        while more(now := time.monotonic()):
            for (tx, _, to), stream in zip(sockets, streams, strict=True):
                tx.sendto(struct.pack("!I", stream.sent) + b"p" * 60, to)
                stream.sent_at.append(now)
            time.sleep(max(0.0, start + result.sent / rate - time.monotonic()))
        # Drain: until everything arrived, or nothing more has for a second (a busy host's OVS may
        # hold the last packets for a while; a fixed short wait would count them as lost). While
        # the control stream is incomplete, ovs-vswitchd has not yet forwarded what it holds (its
        # main loop passes took 3-5 s each at load 10, and a 1 s quiet counted the whole control as
        # lost), so then the quiet must last as long as a stall may (OVS_STALL_S).
        last_count, quiet_since = -1, time.monotonic()
        while (got := sum(map(len, seen))) < sum(s.sent for s in streams):
            if got != last_count:
                last_count, quiet_since = got, time.monotonic()
            control_done = control is None or len(seen[1]) == streams[1].sent
            if time.monotonic() - quiet_since >= (1.0 if control_done else OVS_STALL_S):
                break
            time.sleep(0.05)
    finally:
        stop.set()
        cutter.join(10)
        for receiver in receivers:
            receiver.join(5)
        for tx, rx, _ in sockets:
            rx.close()
            tx.close()
        tb.link(*cut).up()
    for stream, got in zip(streams, seen, strict=True):
        stream.missing = sorted(set(range(stream.sent)) - got)
    if result.control is not None:
        result.control.cut_at = result.cut_at
    return result


def busiest(tb: Testbed, candidates: list[tuple[str, str]], src: str, dst: str) -> tuple[str, str]:
    """Of `candidates` (links), the one a short UDP burst from src to dst actually crosses (which
    one ECMP's hash picks is not ours to predict)."""
    def tx(link):
        a, b = link
        port = tb.topology.port(a, b)
        return next(p["tx_packets"] for p in tb.port_stats(a) if p["port_no"] == port)

    before = {link: tx(link) for link in candidates}
    ends = endpoints(tb, [src, dst])
    sock = netns_effects.socket_in(ends[src][0], type=socket.SOCK_DGRAM)
    with sock:
        for i in range(3000):
            sock.sendto(struct.pack("!I", i), (ends[dst][1], UDP_PORT))
    time.sleep(1.5)
    grown = {link: tx(link) - before[link] for link in candidates}
    return max(grown, key=grown.get)


def cut_candidates(tb: Testbed, where: str) -> list[tuple[str, str]]:
    """uplink: the aggregation->core hops out of pod 1; downlink: the core->aggregation hops into pod 3."""
    if where == "uplink":
        return [(agg, core) for agg in ("agg1-1", "agg1-2") for core in CORES if tb.topology.graph.has_edge(agg, core)]
    return [(core, agg) for agg in ("agg3-1", "agg3-2") for core in CORES if tb.topology.graph.has_edge(agg, core)]


def first_two_rounds(tb: Testbed) -> tuple[float, list[float]]:
    """Seconds from the last switch connecting to discovery matching, and two all-pairs TCP rounds."""
    wait_for(lambda: not tb._controller_get("/state")["diff"]["missing"], 60, "discovery")
    events = tb._controller_get("/state/events")
    last_connect = max(e["t"] for e in events if e["kind"] == "switch" and "connected" in e["text"])
    matched = min(e["t"] for e in events if e["kind"] == "discovery" and "matches the intended" in e["text"])
    wait_for(lambda: routing_settled(tb), 60, "routing to install paths", context=lambda: why(tb))
    ends = endpoints(tb)
    rounds = []
    for _ in range(2):
        t0 = time.perf_counter()
        matrix = netns_effects.tcp_matrix(ends, retries=0, timeout=30.0)
        rounds.append(time.perf_counter() - t0)
        failed = [(s, d) for s, row in matrix.items() for d, loss in row.items() if loss]
        if failed:
            raise RuntimeError(f"{len(failed)} pairs failed, e.g. {failed[:4]}")
    return matched - last_connect, rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 cuts per direction, 1 fabric for discovery")
    parser.add_argument("--cuts", type=int, default=5, help="link cuts per direction (default 5)")
    parser.add_argument("--record", action="store_true", help=f"write the results into {RESULTS}")
    args = parser.parse_args(argv)
    cuts, fabrics = (2, 1) if args.quick else (args.cuts, 3)
    load_before = os.getloadavg()[0]
    rows = ["| measurement | result | target | met |", "| --- | --- | --- | --- |"]
    discovered, ratios = [], []
    for _ in range(fabrics):
        with Testbed("fattree:4", controller=APPS) as tb:
            seconds, rounds = first_two_rounds(tb)
            discovered.append(seconds)
            ratios.append(rounds[0] / rounds[1])
    rows.append(f"| discovery after the last switch connected (median of {fabrics} fabrics) | "
                f"{statistics.median(discovered):.2f} s (max {max(discovered):.2f} s) | < 2 s | "
                f"{'yes' if max(discovered) < 2 else 'no'} |")
    rows.append(f"| first all-pairs TCP round / second (median of {fabrics}) | {statistics.median(ratios):.2f}x "
                f"(max {max(ratios):.2f}x) | <= 1.2x | {'yes' if max(ratios) <= 1.2 else 'no'} |")
    with Testbed("fattree:4", controller=APPS) as tb:
        src, dst = POD1[0], POD3[0]
        for where in ("uplink", "downlink"):
            lost = []
            for _ in range(cuts):
                link = busiest(tb, cut_candidates(tb, where), src, dst)
                wait_for(lambda tb=tb: routing_settled(tb), 60, "routing to settle", context=lambda tb=tb: why(tb))
                lost.append(len(stream_and_cut(tb, src, dst, link).missing))
                wait_for(lambda tb=tb: routing_settled(tb), 60, "the link to come back", context=lambda tb=tb: why(tb))
            rows.append(f"| {where} cut under {RATE} packets/s: packets lost per cut ({cuts} cuts) | "
                        f"median {statistics.median(lost):.0f}, max {max(lost)} ({', '.join(map(str, lost))}) | "
                        f"< {LOSS_TARGET} | {'yes' if max(lost) < LOSS_TARGET else 'no'} |")
    load_after = os.getloadavg()[0]
    text = "\n".join(rows) + (
        f"\n\nfattree:4 (20 switches, 16 Pis, 16 containers), discovery + routing, OVS userspace datapath; "
        f"load average {load_before:.1f} before and {load_after:.1f} after." + (" Quick run." if args.quick else ""))
    print(f"{SECTION}\n\n{text}")
    if args.record:
        from bench.run_all import record_section

        record_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
