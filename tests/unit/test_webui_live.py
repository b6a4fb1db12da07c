"""The live view: run-time containers in the picture, the event log, and the sampler."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from picloud.errors import UIError
from topology.builders import build
from webui.live import EventLog, LiveView, display_topology
from webui.server import UIServer, is_loopback
from webui.sources import StaticSource


def test_runtime_containers_join_the_picture_with_their_real_port():
    topo = build("single:2")
    runtime = {"red-1": {"pi": "pi1", "port": 7, "ip": "10.5.0.2", "prefixlen": 24, "mac": "0a:00:00:00:00:01"}}
    shown, ports = display_topology(topo, runtime)
    assert "red-1" in shown and "red-1" not in topo, "the run's topology itself is not changed"
    assert shown.node("red-1").pi == "pi1" and shown.node("red-1").ip == "10.5.0.2/24"
    assert ports == {"red-1": 7}
    assert display_topology(topo, {}) == (topo, {})


def test_runtime_container_traffic_is_read_from_its_real_port():
    topo = build("single:1")
    runtime = {"t-1": {"pi": "pi1", "port": 9, "ip": "10.5.0.2/24", "mac": "0a:00:00:00:00:01"}}
    source = StaticSource(topo, runtime=runtime)
    view = LiveView(source, interval=0.05)
    try:
        shown, ports, drawn = view.display()
        link = next(ln for ln in drawn["links"] if "t-1" in (ln["a"], ln["b"]))
        assert 9 in (link["a_port"], link["b_port"])
        stats = {s["port_no"] for s in source.port_stats("pi1")}
        assert 9 in stats
    finally:
        view.stop()


def test_event_log_dedupes_and_orders():
    log = EventLog()
    log.merge([{"t": 2.0, "kind": "link", "text": "b"}, {"t": 1.0, "kind": "switch", "text": "a"}, {"bad": 1}])
    log.merge([{"t": 2.0, "kind": "link", "text": "b"}])
    log.add("ui", "c", t=3.0)
    assert [e["text"] for e in log.since(0)] == ["a", "b", "c"]
    assert [e["text"] for e in log.since(1.5, kind="link")] == ["b"]
    assert log.since(0)[0]["source"] == "controller"


def test_sampler_notices_a_link_going_down_and_up():
    topo = build("fattree:4")
    source = StaticSource(topo)
    view = LiveView(source, interval=0.05)
    try:
        ln = topo.fabric_links()[2]
        view.sample()
        source.set_link(ln.a, ln.b, False)
        time.sleep(0.03)
        snap = view.sample()
        assert {x["id"]: x["up"] for x in snap["links"]}[f"{ln.a}:{ln.b}"] is False
        assert snap["totals"]["links_down"] == 1 and snap["totals"]["links_up"] == 47
        source.set_link(ln.a, ln.b, True)
        time.sleep(0.03)
        view.sample()
        texts = [e["text"] for e in view.events.since(0) if e["source"] == "ui"]
        assert texts == [f"link {ln.a}-{ln.b} down", f"link {ln.a}-{ln.b} up"]
    finally:
        view.stop()


def test_totals_count_each_flow_once_where_it_enters():
    topo = build("fattree:4")
    source = StaticSource(topo)
    a, b = topo.containers[0], topo.containers[-1]
    for c in (a, b):
        source.set_rate(c, topo.node(c).pi, 2e8)
    for ln in topo.fabric_links()[:5]:
        source.set_rate(ln.a, ln.b, 9e8)
    view = LiveView(source, interval=0.05)
    try:
        view.sample()
        time.sleep(0.2)
        totals = view.sample()["totals"]
        assert 3.6e8 < totals["sent_bps"] < 4.4e8, totals
        assert 8e8 < totals["busiest_bps"] < 1e9, totals
    finally:
        view.stop()


class SlowSwitch(StaticSource):
    """One switch answers its port stats slowly, as a busy controller or switch does."""

    slow = "core1"

    def port_stats(self, node):
        if node == self.slow:
            time.sleep(3.0)
        return super().port_stats(node)


def test_a_slow_switch_delays_only_its_own_links():
    topo = build("fattree:4")
    source = SlowSwitch(topo)
    busy = next(ln for ln in topo.fabric_links() if "core1" not in (ln.a, ln.b))
    source.set_rate(busy.a, busy.b, 4e8)
    view = LiveView(source, interval=0.2)
    try:
        durations = []
        for _ in range(4):
            t0 = time.monotonic()
            snap = view.sample()
            durations.append(time.monotonic() - t0)
            time.sleep(0.1)
        # Waiting for the slow switch costs its 3 s; a sample that did not wait takes milliseconds
        # (seconds on a starved host), so 2 s tells them apart with a margin either way.
        assert max(durations) < 2.0, f"sampling waited for the slow switch: {durations}"
        rates = {x["id"]: x["bps"] for x in snap["links"]}
        assert 3e8 < rates[f"{busy.a}:{busy.b}"] < 5e8
    finally:
        view.stop()


def test_samples_too_close_together_are_not_taken():
    view = LiveView(StaticSource(build("single:1")), interval=10)
    try:
        first = view.sample()
        assert view.sample()["seq"] == first["seq"]
    finally:
        view.stop()


def test_ui_server_serves_http_and_streams_once_a_second():
    topo = build("fattree:4")
    source = StaticSource(topo)
    ln = topo.fabric_links()[0]
    source.set_rate(ln.a, ln.b, 4e8)
    server = UIServer(source, port=0, token="t0k")
    try:
        assert server.url.startswith("http://127.0.0.1:") and server.token == "t0k"
        with urllib.request.urlopen(server.url + "api/topology", timeout=5) as resp:
            assert json.loads(resp.read())["counts"]["switches"] == 20
        frames = []
        t0 = time.monotonic()
        with urllib.request.urlopen(server.url + "api/stream", timeout=10) as resp:
            for raw in resp:
                line = raw.decode()
                if line.startswith("data: "):
                    frames.append((time.monotonic() - t0, json.loads(line[6:])))
                if len(frames) == 4:
                    break
        gaps = [b[0] - a[0] for a, b in zip(frames, frames[1:], strict=False)]
        assert all(g <= 1.3 for g in gaps), gaps
        assert [f["seq"] for _, f in frames] == sorted({f["seq"] for _, f in frames})
        rate = {x["id"]: x["bps"] for x in frames[-1][1]["links"]}[f"{ln.a}:{ln.b}"]
        assert 3e8 < rate < 5e8
        req = urllib.request.Request(server.url + f"api/links/{ln.a}/{ln.b}", data=b'{"up": false}',
                                     headers={"Content-Type": "application/json"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 401
    finally:
        server.stop()
    server.stop()  # idempotent
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url + "api/topology", timeout=2)


def test_ui_server_refuses_bad_ports_and_busy_ones():
    source = StaticSource(build("single:1"))
    with pytest.raises(UIError, match="port"):
        UIServer(source, port=70000)
    first = UIServer(source, port=0)
    try:
        with pytest.raises(UIError, match="cannot listen"):
            UIServer(source, port=first.port)
    finally:
        first.stop()


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.10")
