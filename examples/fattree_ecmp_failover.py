#!/usr/bin/env python3
# ECMP and failover on a k=4 fat-tree. Eight concurrent TCP flows (iperf3) go from pod 1 to pod 3;
# PiCloud's routing app spreads them over the four core switches with OpenFlow select groups, which
# the core switches' port counters show. Mid-stream the busiest aggregation-core uplink is cut;
# the flows on it move to the surviving paths and every flow keeps delivering data.
# Run (as root, from the repository root): .venv/bin/python examples/fattree_ecmp_failover.py
# Exits 1 if fewer than two cores carried traffic or a flow stopped after the cut.
#
# What is measured: bytes each receiver's TCP socket got in order (`ss` bytes_received), read at
# moments of the host's clock. The sender's iperf3 intervals are not used: they count writes into
# the send buffer in 128 KiB blocks, on each client's own clock, so on a loaded host a flow that
# delivers showed 0 bytes for seconds, and a cut delayed by slow counter reads left no interval
# after it at all.
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from picloud import Testbed
from topology.stalls import OVS_STALL_S

CUT_AT, SETTLE, WINDOW = 5, 3, 7  # s: traffic before the cut, grace after it, then the watch
# A flow whose path came back R seconds after it lost packets retransmits within 2R + 0.2 s (Linux
# doubles its 200 ms RTO per loss). Routing repairs in well under a second, but ovs-vswitchd's
# main loop, which also forwards every packet here, can stall for up to OVS_STALL_S on a loaded
# host; so a flow not yet seen after WINDOW is watched on, up to this long after the cut.
RESUME_WITHIN = 2 * (SETTLE + OVS_STALL_S) + 1
FLOW_CAP = 300  # s, iperf3's -t: longer than any watch; the example stops the flows itself
RATE = "20M"  # per flow, paced by iperf3: a modest total, so a busy host forwards every flow fairly
CORES = ["core1", "core2", "core3", "core4"]
SERVER_PORT, CLIENT_PORT = 5301, 42001


def tx_bytes(tb: Testbed, switch: str) -> dict[int, int]:
    """Bytes sent so far by each port of a switch (OVS port counters, via the controller)."""
    return {p["port_no"]: p["tx_bytes"] for p in tb.port_stats(switch) if isinstance(p["port_no"], int)}


def uplink_bytes(tb: Testbed, uplinks: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    stats = {agg: tx_bytes(tb, agg) for agg in {a for a, _ in uplinks}}
    return {(agg, core): stats[agg][tb.topology.port(agg, core)] for agg, core in uplinks}


def received(tb: Testbed, pairs: list[tuple[str, str]]) -> tuple[float, list[int]]:
    """(time of the read, bytes delivered in order to each flow's receiver so far). A flow is its
    receiver's socket with local port SERVER_PORT + i and remote port CLIENT_PORT + i."""
    def read(dst: str) -> dict[tuple[int, int], int]:
        _, out = tb.exec(dst, ["ss", "-tinHO", "state", "established"], timeout=OVS_STALL_S)
        seen = {}
        for line in out.splitlines():
            fields = line.split()
            counter = next((f for f in fields if f.startswith("bytes_received:")), None)
            if len(fields) >= 4 and counter:
                local, remote = fields[2].rsplit(":", 1)[1], fields[3].rsplit(":", 1)[1]
                seen[(int(local), int(remote))] = int(counter.split(":")[1])
        return seen

    receivers = sorted({dst for _, dst in pairs})
    with ThreadPoolExecutor(len(receivers)) as pool:
        sockets = dict(zip(receivers, pool.map(read, receivers), strict=True))
    at = time.monotonic()
    return at, [sockets[dst].get((SERVER_PORT + i, CLIENT_PORT + i), 0) for i, (_, dst) in enumerate(pairs)]


with Testbed("fattree:4") as tb:
    pod1 = [c for c in tb.containers if c.startswith("pi1-")]
    pod3 = [c for c in tb.containers if c.startswith("pi3-")]
    pairs = [(src, pod3[(i + k) % len(pod3)]) for i, src in enumerate(pod1) for k in range(2)]
    uplinks = [(agg, core) for agg in ("agg1-1", "agg1-2") for core in CORES
               if tb.topology.graph.has_edge(agg, core)]
    print(f"{tb.prefix}: {len(pairs)} TCP flows pod 1 -> pod 3, the busiest uplink cut after {CUT_AT} s")

    deadline = time.monotonic() + 60  # routing has installed every path once all pairs carry TCP
    while any(v for row in tb.ping_all(tcp=True, containers=pod1 + pod3).values() for v in row.values()):
        if time.monotonic() > deadline:
            sys.exit("pod 1 and pod 3 do not reach each other over TCP")
        time.sleep(1)

    servers, clients = [], []
    try:
        for i, (_src, dst) in enumerate(pairs):
            servers.append(tb.popen(dst, ["iperf3", "-s", "-1", "-p", str(SERVER_PORT + i)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)  # servers listening
        core0 = {c: sum(tx_bytes(tb, c).values()) for c in CORES}
        for i, (src, dst) in enumerate(pairs):  # fixed source ports: the ECMP hash is repeatable
            clients.append(tb.popen(src, ["iperf3", "-c", tb.container_ip(dst), "-p", str(SERVER_PORT + i),
                                          "--cport", str(CLIENT_PORT + i), "-t", str(FLOW_CAP), "-b", RATE],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        time.sleep(CUT_AT - 2)
        up0, (t0, rx0) = uplink_bytes(tb, uplinks), received(tb, pairs)
        time.sleep(2)
        up1, (t1, rx1) = uplink_bytes(tb, uplinks), received(tb, pairs)
        busiest = max(uplinks, key=lambda ln: up1[ln] - up0[ln])
        tb.link(*busiest).down()
        cut = time.monotonic()
        print(f"cut {busiest[0]}-{busiest[1]}")
        time.sleep(SETTLE)
        t2, rx2 = received(tb, pairs)
        while True:
            time.sleep(1)
            t3, rx3 = received(tb, pairs)
            resumed = [b > a for a, b in zip(rx2, rx3, strict=True)]
            if (t3 - t2 >= WINDOW and all(resumed)) or t3 - cut >= RESUME_WITHIN:
                break
        ended = [(pair, c.poll()) for pair, c in zip(pairs, clients, strict=True) if c.poll() is not None]
        for p in clients:  # stopped here, not by -t: the watch above decides how long they run
            p.kill()
        time.sleep(1.5)  # OVS refreshes port counters about once a second
        carried = {c: sum(tx_bytes(tb, c).values()) - core0[c] for c in CORES}
    finally:
        for p in clients + servers:
            if p.poll() is None:
                p.kill()
            p.wait()

total = sum(carried.values())
print("bytes through each core switch: " + ", ".join(f"{c} {v / 1e6:.1f} MB ({v / total:.0%})"
                                                     for c, v in carried.items()))
watched = t3 - t2
if watched > WINDOW + 1.5:
    print(f"the host was slow: flows watched {watched:.1f} s after the grace, not {WINDOW} s")
for (src, dst), before, after in zip(pairs, (b - a for a, b in zip(rx0, rx1, strict=True)),
                                     (b - a for a, b in zip(rx2, rx3, strict=True)), strict=True):
    print(f"  {src} -> {dst}: {before * 8 / (t1 - t0) / 1e6:6.1f} Mbit/s before the cut, "
          f"{after * 8 / watched / 1e6:6.1f} Mbit/s from {SETTLE} s after it")
for (src, dst), code in ended:
    print(f"  {src} -> {dst}: iperf3 ended early (exit {code})")
stalled = [f"{src}->{dst}" for (src, dst), ok in zip(pairs, resumed, strict=True) if not ok]
used = [c for c, v in carried.items() if v > 0.1 * total / len(CORES)]
print(f"{len(used)} of {len(CORES)} cores carried traffic; flows stalled after the cut: {stalled or 'none'}")
sys.exit(0 if len(used) >= 2 and not stalled and not ended else 1)
