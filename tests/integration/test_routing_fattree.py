"""Discovery + routing on a real fat-tree (k=4: 20 switches, 16 Pi bridges, 16 containers) of OVS
bridges and network namespaces: discovery speed, all-pairs TCP with no reactive set-up, ECMP over
every core switch, and sub-50-packet loss when a link carrying a stream is cut.

Traffic runs from sockets this test opens inside the containers' namespaces (no subprocesses), so
the timings measure the network, not process start-up."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from picloud.testbed import Testbed
from topology.effects import netns as netns_effects

pytestmark = pytest.mark.root

APPS = ["discovery", "routing"]
POD1 = ["pi1-1-1-c1", "pi1-1-2-c1", "pi1-2-1-c1", "pi1-2-2-c1"]
POD3 = ["pi3-1-1-c1", "pi3-1-2-c1", "pi3-2-1-c1", "pi3-2-2-c1"]
CORES = ["core1", "core2", "core3", "core4"]
RATE = 1000  # packets/s of the failover stream
FAILOVER_WINDOW = 0.5  # seconds after a cut in which losses are the cut's
ATTEMPTS = 10
SO_RCVBUFFORCE = 33  # Linux; not exported by Python's socket module


def _wait(predicate, timeout: float, what: str, interval: float = 0.05, context=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{context()}")


def _routing_settled(tb: Testbed) -> bool:
    """Discovery sees the intended fabric and routing has sent paths for all containers since."""
    state = tb._controller_get("/state")
    tb.last_seen_state = state
    if state["diff"]["missing"] or state["diff"]["unexpected"]:
        return False
    events = tb._controller_get("/state/events")
    last_link = max((e["t"] for e in events if e["kind"] == "link"), default=0)
    want = f"paths for {len(tb.containers)} hosts"
    return any(e["kind"] == "routing" and e["t"] > last_link and e["text"].startswith(want) for e in events)


def _up(spec: str) -> Testbed:
    tb = Testbed(spec, controller=APPS)
    for attempt in range(2):  # a busy machine may miss the controller's start-up window once
        try:
            return tb.up()
        except Exception:
            tb.down()
            if attempt:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def fattree():
    tb = _up("fattree:4")
    try:
        yield tb
    finally:
        tb.down()


def _why(tb: Testbed) -> str:
    state = getattr(tb, "last_seen_state", None) or {}
    recent = [f"{e['kind']}: {e['text']}" for e in state.get("events", [])[-6:]]
    return f" (diff {state.get('diff')}, recent events {recent})"


def _endpoints(tb: Testbed, names=None) -> dict[str, tuple[str, str]]:
    return {c: (tb.fabric.netns(c), tb.container_ip(c)) for c in (names or tb.containers)}


def test_discovery_then_all_pairs_tcp_with_first_round_as_fast_as_the_second():
    """Every fresh fabric: discovered within 2 s of its last switch connecting, all 240 ordered
    pairs connect over TCP in the first round (no retries), and that first round is no slower than
    1.2x the second. Round times are tens of milliseconds, which one OVS stall on a busy machine
    can swamp, so a failed timing comparison is repeated on a new fabric and controller (a truly
    first round again); reachability and discovery time are asserted on every fabric."""
    timings = []
    for _ in range(3):
        tb = _up("fattree:4")
        try:
            rounds = _first_and_second_round(tb)
        finally:
            tb.down()
        timings.append(f"{rounds[0]:.3f}s/{rounds[1]:.3f}s")
        if rounds[0] <= 1.2 * rounds[1]:
            return
    pytest.fail(f"first round slower than 1.2x the second on every fabric: {timings}")


def _first_and_second_round(tb: Testbed) -> list[float]:
    _wait(lambda: not tb._controller_get("/state")["diff"]["missing"], 30, "discovery")
    events = tb._controller_get("/state/events")
    last_connect = max(e["t"] for e in events if e["kind"] == "switch" and "connected" in e["text"])
    matched = min(e["t"] for e in events if e["kind"] == "discovery" and "matches the intended" in e["text"])
    discovered_s = matched - last_connect
    assert discovered_s <= 2.0, f"fat-tree:4 discovered {discovered_s:.2f}s after the last switch connected"
    _wait(lambda: _routing_settled(tb), 30, "routing to install paths", context=lambda: _why(tb))

    endpoints = _endpoints(tb)
    rounds = []
    for _ in range(2):
        t0 = time.perf_counter()
        matrix = netns_effects.tcp_matrix(endpoints, retries=0, timeout=30.0)  # SYN retransmits wait 1, 3 s
        rounds.append(time.perf_counter() - t0)
        failed = [(s, d) for s, row in matrix.items() for d, loss in row.items() if loss]
        assert sum(len(row) for row in matrix.values()) == 240
        assert not failed, f"{len(failed)} of 240 pairs failed, e.g. {failed[:4]}"
    print(f"discovered in {discovered_s:.2f}s; all-pairs TCP rounds {rounds[0]:.3f}s, {rounds[1]:.3f}s")
    return rounds


def _core_tx_bytes(tb: Testbed) -> dict[str, int]:
    return {core: sum(p["tx_bytes"] for p in tb.port_stats(core) if isinstance(p["port_no"], int))
            for core in CORES}


def test_sixteen_flows_between_two_pods_cross_all_four_cores(fattree):
    tb = fattree
    _wait(lambda: _routing_settled(tb), 30, "routing to install paths", context=lambda: _why(tb))
    endpoints = _endpoints(tb, POD1 + POD3)
    chunk = b"x" * 65536
    per_flow = 1024 * 1024
    listeners = []
    for dst in POD3:
        sock = netns_effects.socket_in(endpoints[dst][0])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((endpoints[dst][1], 5401))
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
        sock = netns_effects.socket_in(endpoints[src][0])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((endpoints[src][1], sport))  # fixed 5-tuples: the hash, and so the test, is repeatable
        sock.settimeout(90)  # a busy machine's OVS can stall for seconds; the bytes still arrive
        with sock:
            sock.connect((endpoints[dst][1], 5401))
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


def _stream_and_cut(tb: Testbed, src: str, dst: str, cut: tuple[str, str], rate: int = RATE,
                    seconds: float = 2.0, cut_at: float = 0.5) -> tuple[int, list[int], int]:
    """Send `rate` UDP packets/s from src to dst for `seconds`, cutting link `cut` after `cut_at`
    seconds; returns (sent, missing sequence numbers, sequence number sent when the cut began)."""
    endpoints = _endpoints(tb, [src, dst])
    rx = netns_effects.socket_in(endpoints[dst][0], type=socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)  # this process may be starved, not the fabric
    rx.bind((endpoints[dst][1], 5402))
    rx.settimeout(0.5)
    tx = netns_effects.socket_in(endpoints[src][0], type=socket.SOCK_DGRAM)
    seen: set[int] = set()
    stop = threading.Event()
    counter = [0]
    cut_seq: list[int] = []

    def receive() -> None:
        while not stop.is_set():
            try:
                data = rx.recv(64)
            except TimeoutError:
                continue
            seen.add(struct.unpack("!I", data[:4])[0])

    def cut_link() -> None:
        cut_seq.append(counter[0])
        tb.link(*cut).down()

    receiver = threading.Thread(target=receive)
    receiver.start()
    cutter = threading.Timer(cut_at, cut_link)  # off the sender's thread, so the pace stays steady
    try:
        start = time.monotonic()
        cutter.start()
        while time.monotonic() - start < seconds:
            tx.sendto(struct.pack("!I", counter[0]) + b"p" * 60, (endpoints[dst][1], 5402))
            counter[0] += 1
            time.sleep(max(0.0, start + counter[0] / rate - time.monotonic()))
        time.sleep(0.5)
    finally:
        stop.set()
        cutter.join(10)
        receiver.join(5)
        rx.close()
        tx.close()
        tb.link(*cut).up()
    return counter[0], sorted(set(range(counter[0])) - seen), cut_seq[0]


def _busiest(tb: Testbed, candidates: list[tuple[str, str]], src: str, dst: str) -> tuple[str, str]:
    """Of `candidates` (links), the one a short UDP burst from src to dst actually crosses."""
    def tx(link):
        a, b = link
        port = tb.topology.port(a, b)
        return next(p["tx_packets"] for p in tb.port_stats(a) if p["port_no"] == port)

    before = {link: tx(link) for link in candidates}
    endpoints = _endpoints(tb, [src, dst])
    sock = netns_effects.socket_in(endpoints[src][0], type=socket.SOCK_DGRAM)
    with sock:
        for i in range(3000):
            sock.sendto(struct.pack("!I", i), (endpoints[dst][1], 5402))
    time.sleep(1.5)
    grown = {link: tx(link) - before[link] for link in candidates}
    return max(grown, key=grown.get)


@pytest.mark.parametrize("where", ["uplink", "downlink"])
def test_cutting_a_link_under_a_1000pps_stream_loses_fewer_than_50_packets(fattree, where):
    """uplink: the aggregation->core hop the stream climbs (a select-group bucket dies in the data
    plane); downlink: the core->aggregation hop it descends (no loop-free alternate on a fat-tree:
    the controller moves the upstream groups off it after the port-status message).

    This machine's OVS forwards in its main thread, which other work on the box can stall for a
    second or more, losing packets on any bridge with or without a controller. An attempt that
    loses a packet more than FAILOVER_WINDOW after the cut, or before it, is therefore not evidence
    about failover and is repeated; the assertion on the attempt that counts is unchanged: fewer
    than 50 packets lost in the whole stream. A failover that never converges loses packets after
    the window in every attempt and fails. An attempt whose sender fell behind the rate is repeated
    too (the busy machine again)."""
    tb = fattree
    _wait(lambda: _routing_settled(tb), 30, "routing to install paths", context=lambda: _why(tb))
    src, dst = POD1[0], POD3[0]
    if where == "uplink":
        candidates = [(agg, core) for agg in ("agg1-1", "agg1-2") for core in CORES
                      if tb.topology.graph.has_edge(agg, core)]
    else:
        candidates = [(core, agg) for agg in ("agg3-1", "agg3-2") for core in CORES
                      if tb.topology.graph.has_edge(agg, core)]
    attempts = []
    for _ in range(ATTEMPTS):
        link = _busiest(tb, candidates, src, dst)
        _wait(lambda: _routing_settled(tb), 30, "routing to settle", context=lambda: _why(tb))
        sent, missing, cut_seq = _stream_and_cut(tb, src, dst, link)
        window = range(cut_seq, cut_seq + int(FAILOVER_WINDOW * RATE))
        disturbed = [m for m in missing if m not in window]
        if sent < 1900:  # this process could not keep 1,000 packets/s: not a measurement at that rate
            disturbed.append(-1)
        attempts.append(f"{link[0]}-{link[1]}: {len(missing)} of {sent} lost, "
                        f"{len(disturbed)} outside the window")
        print(f"attempt: {attempts[-1]}")
        if not disturbed:
            assert len(missing) < 50, f"cut {link[0]}-{link[1]}: {len(missing)} of {sent} packets lost"
            break
        _wait(lambda: _routing_settled(tb), 30, "the link to come back", context=lambda: _why(tb))
    else:
        pytest.fail(f"every attempt lost packets away from the cut: {attempts}")
    _wait(lambda: _routing_settled(tb), 30, "the link to come back", context=lambda: _why(tb))
