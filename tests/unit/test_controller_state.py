"""The controller state store: naming, intended-versus-discovered diff, utilisation, events."""

from __future__ import annotations

import threading

from controller_apps.state import ControllerState
from topology.model import Topology, dpid, dpid_str


def small_topology() -> Topology:
    topo = Topology("t")
    topo.add_switch("s1", role="core")
    topo.add_pi("p1")
    topo.add_pi("p2")
    topo.add_link("s1", "p1", bw=100)
    topo.add_link("s1", "p2")
    topo.add_container("c1", "p1")
    topo.add_container("c2", "p2")
    return topo


def test_snapshot_names_switches_and_reports_missing_until_connected():
    state = ControllerState()
    state.set_intended(small_topology().to_dict())
    snap = state.snapshot()
    assert [s["name"] for s in snap["switches"]] == ["p1", "p2", "s1"]
    assert not any(s["connected"] for s in snap["switches"])
    assert {"kind": "switch", "name": "s1"} in snap["diff"]["missing"]
    assert len([m for m in snap["diff"]["missing"] if m["kind"] == "link"]) == 2

    for name in ("s1", "p1", "p2"):
        state.switch_enter(dpid(name), [1, 2])
    state.set_links([
        {"a": dpid("p1"), "a_port": 1, "b": dpid("s1"), "b_port": 1},
        {"a": "s1", "a_port": 2, "b": "p2", "b_port": 1},
    ])
    snap = state.snapshot()
    assert snap["diff"] == {"missing": [], "unexpected": []}
    s1 = next(s for s in snap["switches"] if s["name"] == "s1")
    assert s1["dpid"] == dpid_str(dpid("s1")) and s1["connected"] and s1["ports"][1]["port_no"] == 2
    fabric = [ln for ln in snap["links"] if "c" not in (ln["a"][0], ln["b"][0])]
    assert all(ln["up"] for ln in fabric) and len(fabric) == 2
    container_links = [ln for ln in snap["links"] if ln not in fabric]
    assert len(container_links) == 2 and all(ln["up"] for ln in container_links)


def test_unknown_dpid_is_shown_as_hex_and_unexpected():
    state = ControllerState()
    state.set_intended(small_topology())
    state.switch_enter(0xABC, [1])
    snap = state.snapshot()
    assert {"kind": "switch", "name": "0000000000000abc"} in snap["diff"]["unexpected"]


def test_link_util_uses_topology_bandwidth_and_either_direction():
    state = ControllerState()
    state.set_intended(small_topology())
    state.set_link_util("p1", 1, "s1", 1, bps=25e6, capacity_bps=100e6)
    link = next(ln for ln in state.snapshot()["links"] if {ln["a"], ln["b"]} == {"s1", "p1"})
    assert link["bps"] == 25e6 and link["capacity_bps"] == 100e6
    assert abs(link["util"] - 0.25) < 1e-9
    state.set_link_util(dpid("s1"), 1, dpid("p1"), 1, bps=500e6, capacity_bps=100e6)
    link = next(ln for ln in state.snapshot()["links"] if {ln["a"], ln["b"]} == {"s1", "p1"})
    assert link["util"] == 1.0  # clamped to 0..1


def test_switch_leave_drops_its_links_and_logs_events():
    state = ControllerState()
    state.set_intended(small_topology())
    state.switch_enter(dpid("s1"), [1, 2])
    state.set_links([{"a": "s1", "a_port": 1, "b": "p1", "b_port": 1}])
    state.switch_leave(dpid("s1"))
    assert state.links() == []
    texts = [e["text"] for e in state.events()]
    assert "switch s1 disconnected" in texts
    assert "link p1:1-s1:1 down" in texts


def test_hosts_get_names_from_topology_and_moves_are_events():
    state = ControllerState()
    topo = small_topology()
    state.set_intended(topo)
    mac = topo.node("c1").mac
    state.add_host(mac.upper(), "10.0.0.1", dpid("p1"), 2)
    state.add_host(mac, "10.0.0.1", dpid("p1"), 2)  # same fact: no new event
    state.add_host(mac, "10.0.0.1", dpid("p2"), 2)
    hosts = state.snapshot()["hosts"]
    assert hosts == [{"mac": mac, "ip": "10.0.0.1", "dpid": dpid_str(dpid("p2")), "port": 2, "name": "c1"}]
    host_events = [e["text"] for e in state.events() if e["kind"] == "host"]
    assert len(host_events) == 2 and "moved to p2:2" in host_events[1]
    assert state.host(mac.upper())["dpid"] == dpid("p2")
    state.remove_host(mac)
    assert state.snapshot()["hosts"] == [] and state.host(mac) is None


def test_events_since_pages_without_repeats():
    state = ControllerState()
    for i in range(5):
        state.event("test", str(i))
    first = state.events()
    assert [e["text"] for e in first] == ["0", "1", "2", "3", "4"]
    assert [e["text"] for e in state.events(since=first[2]["t"])] == ["3", "4"]
    assert all(a["t"] < b["t"] for a, b in zip(first, first[1:], strict=False))


def test_listeners_are_called_after_changes_and_may_reenter():
    state = ControllerState()
    seen: list[tuple[str, int]] = []
    state.subscribe(lambda kind: seen.append((kind, len(state.hosts()))))
    state.add_host("aa:bb:cc:dd:ee:01", None, 1, 1)
    assert seen == [("host", 1)]
    state.set_link_util("a", 1, "b", 1, 1.0, 2.0)  # measurements do not notify
    assert len(seen) == 1


def test_concurrent_writers_and_readers_do_not_corrupt():
    state = ControllerState()
    state.set_intended(small_topology())

    def writer(base: int) -> None:
        for i in range(200):
            state.add_host(f"aa:00:00:00:{base:02x}:{i % 256:02x}", None, dpid("p1"), i % 4 + 1)
            state.snapshot()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(state.hosts()) == 800


def test_discovery_match_time_is_when_the_links_last_came_to_match_the_intended_ones():
    """/state "ready"["discovery"]["matched_at"]: None while a link is missing or unexpected, the
    time of the last change that made them match otherwise (readers compare routing's time to it)."""
    state = ControllerState()
    state.set_intended(small_topology())
    both = [{"a": "p1", "a_port": 1, "b": "s1", "b_port": 1}, {"a": "s1", "a_port": 2, "b": "p2", "b_port": 1}]
    assert state.snapshot()["ready"]["discovery"]["matched_at"] is None
    state.set_links(both[:1])
    assert state.snapshot()["ready"]["discovery"] == {"matched_at": None, "links": 1}
    state.set_links(both)
    first = state.snapshot()["ready"]["discovery"]["matched_at"]
    assert first is not None
    state.set_links(both)  # the same links again: the match did not change
    assert state.snapshot()["ready"]["discovery"]["matched_at"] == first
    state.set_links([*both, {"a": "p1", "a_port": 2, "b": "p2", "b_port": 2}])  # one the topology lacks
    assert state.snapshot()["ready"]["discovery"]["matched_at"] is None
    state.set_links(both)
    assert state.snapshot()["ready"]["discovery"]["matched_at"] > first


def test_apps_record_readiness_facts_in_the_snapshot():
    state = ControllerState()
    state.set_ready("routing", generation=3, hosts=2, bridges=3, at=1.5)
    assert state.snapshot()["ready"]["routing"] == {"generation": 3, "hosts": 2, "bridges": 3, "at": 1.5}
    state.reset()
    assert state.snapshot()["ready"] == {}
