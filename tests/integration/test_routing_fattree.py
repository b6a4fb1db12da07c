"""Discovery + routing on a real fat-tree (k=4: 20 switches, 16 Pi bridges, 16 containers) of OVS
bridges and network namespaces: discovery, all-pairs TCP with no reactive set-up, ECMP over every
core switch, and repair without further loss when a link carrying a stream is cut.

These tests assert correctness, with bounds argued from the physics of the fabric; the speed
targets (fewer than 50 packets lost per cut, discovery within 2 s, first round within 1.2x of the
second) are held by bench/failover_bench.py, whose helpers these tests share.

Traffic runs from sockets this test opens inside the containers' namespaces (no subprocesses), so
the timings measure the network, not process start-up."""

from __future__ import annotations

import math
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from picloud.testbed import Testbed
from topology.effects import netns as netns_effects
from topology.stalls import OVS_STALL_S

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is scripts, not an installed package
from bench.failover_bench import (  # noqa: E402
    APPS,
    CORES,
    POD1,
    POD3,
    busiest,
    cut_candidates,
    endpoints,
    routing_settled,
    stream_and_cut,
    wait_for,
    why,
)

pytestmark = pytest.mark.root

# Packets/s of the stream. Low on purpose: OVS's userspace datapath reads each port through a socket
# buffer of about 160 small packets, so at 100 packets/s only a main-thread stall of over 1.5 s
# (seen on this shared host only at a load average over 10) loses a packet anywhere. The 1,000
# packets/s stream and its < 50 target are bench/failover_bench.py's.
RATE = 100
# Repair bound. Detection: OVS sees the veth's carrier drop through a netlink notification in its
# next main-loop pass (milliseconds on an idle host); an uplink's select-group bucket then dies in
# the data plane, a downlink needs one port-status to the controller, a recompute and a group-mod
# back (one local round trip plus tens of milliseconds). 0.5 s covers all of that on an idle host;
# four times that for a loaded two-core host gives 2 s, i.e. at most 200 packets at 100 packets/s
# may be lost, all of them sent within 2 s of the cut, and none before it or after.
REPAIR_BOUND_S = 2.0
# A packet sent just before the cut may still be on the cut link: one one-way latency through five
# userspace bridges (well under 10 ms idle; ten times that loaded) before the cut counts as the cut's.
IN_FLIGHT_S = 0.1
# The control stream's pair: pod 2 to pod 4, a path as long as pod 1 to pod 3 (Pi, edge, aggregation,
# core, aggregation, edge, Pi: PATH_BRIDGES bridges) that no cut here touches (they are pod 1's
# uplinks and the core links into pod 3).
CONTROL = ("pi2-1-1-c1", "pi4-1-1-c1")
PATH_BRIDGES = 7


def _up(spec: str) -> Testbed:
    return Testbed(spec, controller=APPS).up()


@pytest.fixture(scope="module")
def fattree():
    tb = _up("fattree:4")
    try:
        yield tb
    finally:
        tb.down()


def test_discovery_then_all_pairs_tcp_in_the_first_round():
    """A fresh fabric is discovered as intended, and all 240 ordered pairs connect over TCP in the
    very first round (no retries): routing installed every path before the first packet. How fast
    is bench/failover_bench.py's concern."""
    tb = _up("fattree:4")
    try:
        wait_for(lambda: not tb._controller_get("/state")["diff"]["missing"], 60, "discovery")
        wait_for(lambda: routing_settled(tb), 60, "routing to install paths", context=lambda: why(tb))
        matrix = netns_effects.tcp_matrix(endpoints(tb), retries=0, timeout=30.0)  # SYN retransmits wait 1, 3 s
        failed = [(s, d) for s, row in matrix.items() for d, loss in row.items() if loss]
        assert sum(len(row) for row in matrix.values()) == 240
        assert not failed, f"{len(failed)} of 240 pairs failed in the first round, e.g. {failed[:4]}"
    finally:
        tb.down()


def _core_tx_bytes(tb: Testbed) -> dict[str, int]:
    return {core: sum(p["tx_bytes"] for p in tb.port_stats(core) if isinstance(p["port_no"], int))
            for core in CORES}


def test_sixteen_flows_between_two_pods_cross_all_four_cores(fattree):
    tb = fattree
    wait_for(lambda: routing_settled(tb), 60, "routing to install paths", context=lambda: why(tb))
    ends = endpoints(tb, POD1 + POD3)
    chunk = b"x" * 65536
    per_flow = 1024 * 1024
    listeners = []
    for dst in POD3:
        sock = netns_effects.socket_in(ends[dst][0])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ends[dst][1], 5401))
        sock.listen(64)
        sock.settimeout(120)  # never hang the suite if a sender never comes
        listeners.append(sock)
    received: list[int] = []
    errors: list[str] = []

    def recording(work):
        def run(*args):
            try:
                work(*args)
            except OSError as exc:
                errors.append(f"{work.__name__}{args[1:] if len(args) > 1 else ''}: {exc}")
        return run

    @recording
    def drain(listener: socket.socket) -> None:
        for _ in range(len(POD1)):
            conn, _ = listener.accept()
            conn.settimeout(120)
            with conn:
                total = 0
                while data := conn.recv(1 << 16):
                    total += len(data)
                received.append(total)

    @recording
    def send(src: str, dst: str, sport: int) -> None:
        sock = netns_effects.socket_in(ends[src][0])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ends[src][1], sport))  # fixed 5-tuples: the hash, and so the test, is repeatable
        sock.settimeout(90)  # a busy machine's OVS can stall for seconds; the bytes still arrive
        with sock:
            sock.connect((ends[dst][1], 5401))
            sent = 0
            while sent < per_flow:
                sock.sendall(chunk)
                sent += len(chunk)

    before = _core_tx_bytes(tb)
    threads = [threading.Thread(target=drain, args=(ls,)) for ls in listeners]
    threads += [threading.Thread(target=send, args=(s, d, 41000 + i * 4 + j))
                for i, s in enumerate(POD1) for j, d in enumerate(POD3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for sock in listeners:
            sock.close()
    assert not errors, errors
    assert sorted(received) == [per_flow] * 16
    time.sleep(1.5)  # OVS refreshes port counters about once a second
    after = _core_tx_bytes(tb)
    carried = {core: after[core] - before[core] for core in CORES}
    print(f"bytes per core switch: {carried}")
    assert all(v >= per_flow * 0.9 for v in carried.values()), f"bytes sent per core switch: {carried}"


@pytest.mark.parametrize("where", ["uplink", "downlink"])
def test_a_cut_link_under_a_stream_is_repaired_and_loses_nothing_after(fattree, where):
    """uplink: the aggregation->core hop the stream climbs (a select-group bucket dies in the data
    plane); downlink: the core->aggregation hop it descends (no loop-free alternate on a fat-tree:
    the controller moves the upstream groups off it after the port-status message).

    Correct failover: after REPAIR_BOUND_S (see there for the argument) the path is repaired: it
    delivers, and loses no more than a control stream lost at the same moments (one from pod 2 to
    pod 4 at the same rate, its packets sent right after the measured one's, over as many bridges
    and the same ovs-vswitchd, on a path the cut does not touch) or than the measured stream lost
    in the two seconds before the cut, with a margin of three, plus one packet per bridge on the
    path (a stall's start and end fall between the two streams' packets at each bridge's socket
    buffer). On an idle host both controls lose nothing, so then nothing may be lost after the
    repair; on a loaded one ovs-vswitchd's main loop, which forwards every packet here, stalls
    for seconds (topology/stalls.py), and every path loses packets in those moments, cut or not:
    a 2 s control before the cut alone missed such a stall (at load 8: 50 packets, half a second
    of the stream, lost within 2 s of a downlink cut, then 13 more 3.4 s after it, allowed 0; at
    load 10 both streams lost the same 349 packets after the repair). "It delivers" is judged
    only once the control has delivered a second's worth (RATE packets) after the repair: the
    streams go on until it has, for up to twice OVS_STALL_S beyond the planned length. The link
    the stream crosses is found by sending, since which one ECMP's hash picks is not ours to set."""
    tb = fattree
    wait_for(lambda: routing_settled(tb), 60, "routing to install paths", context=lambda: why(tb))
    src, dst = POD1[0], POD3[0]
    link = busiest(tb, cut_candidates(tb, where), src, dst)
    seconds = 2.0 + 3 * REPAIR_BOUND_S
    stream = stream_and_cut(tb, src, dst, link, rate=RATE, seconds=seconds, cut_after=2.0, control=CONTROL,
                            control_delivers=(REPAIR_BOUND_S, RATE, seconds + 2 * OVS_STALL_S))
    control = stream.control
    assert control is not None
    start, cut, repaired = stream.sent_at[0], stream.cut_at - IN_FLIGHT_S, stream.cut_at + REPAIR_BOUND_S
    before = stream.lost_between(start, cut)
    during = stream.lost_between(cut, repaired)
    after = stream.lost_between(repaired, float("inf"))
    control_after = control.lost_between(repaired, float("inf"))
    after_sent = sum(1 for t in stream.sent_at if t >= repaired)
    control_delivered = sum(1 for t in control.sent_at if t >= repaired) - len(control_after)
    by_rate_before = 3 * len(before) / (cut - start) * (stream.sent_at[-1] - repaired)
    allowed = math.ceil(max(3 * len(control_after), by_rate_before)) + PATH_BRIDGES
    last = max((stream.sent_at[m] - stream.cut_at for m in stream.missing), default=0.0)
    summary = (f"cut {link[0]}-{link[1]}: {stream.sent} sent; lost {len(before)} before the cut, {len(during)} "
               f"within {REPAIR_BOUND_S:.0f} s of it, {len(after)} of {after_sent} after (allowed {allowed}; "
               f"the control lost {len(control_after)} then and delivered {control_delivered}, "
               f"{len(control.missing)} lost in all); last loss {last:.2f} s after the cut")
    print(summary)
    assert stream.sent_at[-1] - repaired >= 1.5 * REPAIR_BOUND_S, f"the stream stopped too early: {summary}"
    assert control_delivered >= RATE, f"the host's data plane delivered too little to judge: {summary}"
    assert len(after) <= allowed, f"not repaired: {summary}, e.g. {after[:5]}"
    # It delivers: a path left broken delivers nothing sent after the repair bound. Not a share of
    # the control's count: when ovs-vswitchd drops 90% of every stream, which packets survive depends
    # on each bridge's socket buffer at each stall (at load 14 a repaired path delivered 58 packets
    # while the control delivered 406, both losing 94%); on a quiet host the loss bound above is 7.
    assert after_sent > len(after), f"not repaired, nothing delivered after the repair bound: {summary}"
    wait_for(lambda: routing_settled(tb), 60, "the link to come back", context=lambda: why(tb))
