"""Inventory validation, Pi presets, placement and wiring: the pure half of cluster mode."""

from __future__ import annotations

import pytest

from picloud.errors import ClusterError
from topology.inventory import (
    PI_MODELS,
    check_underlay,
    inventory_problems,
    parse_docker,
    parse_inventory,
    parse_ovsdb,
    pi_model,
    place,
    wiring,
)
from topology.model import Topology


def pi(name: str, n: int, **extra) -> dict:
    entry = {
        "name": name,
        "management": f"172.29.0.{n}",
        "ovsdb": f"tcp:172.29.0.{n}:6640",
        "docker": "none",
        "netns": f"emu{n}",
        "underlay": f"172.29.0.{n}",
    }
    entry.update(extra)
    return entry


def three() -> dict:
    return {"controller": "172.29.0.1", "pis": [pi("pi1", 11), pi("pi2", 12), pi("pi3", 13)]}


def test_valid_inventory_parses_with_endpoints_split():
    inv = parse_inventory(three())
    assert [p.name for p in inv.pis] == ["pi1", "pi2", "pi3"]
    assert inv.pi("pi2").ovsdb.host == "172.29.0.12" and inv.pi("pi2").ovsdb.port == 6640
    assert inv.pi("pi1").docker.scheme == "none"
    assert inv.controller == "172.29.0.1"


def test_duplicate_names_and_addresses_give_one_line_each():
    data = {"pis": [pi("pi1", 11), pi("pi1", 12), pi("pi3", 12)]}
    problems = inventory_problems(data, "inv.yaml")
    assert "inv.yaml: pi 'pi1': duplicate name (2 entries; names must be unique)" in problems
    assert any(p.startswith("inv.yaml: management 172.29.0.12 is used by pi1, pi3") for p in problems)
    assert any(p.startswith("inv.yaml: underlay 172.29.0.12 is used by pi1, pi3") for p in problems)
    assert all("\n" not in p for p in problems)
    with pytest.raises(ClusterError, match=r"\+2 more"):
        parse_inventory(data, "inv.yaml")


def test_every_bad_field_is_reported_not_just_the_first():
    data = {
        "pis": [
            {"name": "Bad_Name", "management": "300.1.1.1", "ovsdb": "http://x", "docker": "ftp://x",
             "underlay": "10.0.0.1", "colour": "red", "model": "zero"},
        ]
    }
    text = "\n".join(inventory_problems(data))
    for fragment in ("invalid name", "not an IP address", "ovsdb 'http://x'", "docker 'ftp://x'",
                     "unknown key 'colour'", "unknown model 'zero'"):
        assert fragment in text


def test_tls_is_required_for_ssl_and_tcp_docker():
    data = {"pis": [pi("pi1", 11, ovsdb="ssl:172.29.0.11:6640", docker="tcp://172.29.0.11:2376")]}
    del data["pis"][0]["netns"]
    (problem,) = inventory_problems(data)
    assert "ovsdb ssl: and docker tcp:// need tls" in problem
    data["pis"][0]["tls"] = {"ca": "ca.pem", "cert": "c.pem", "key": "k.pem"}
    assert inventory_problems(data) == []


def test_emulated_pis_need_their_namespace():
    data = {"pis": [pi("pi1", 11), pi("pi2", 12, docker="unix:///var/run/docker.sock"),
                    pi("pi3", 13, docker="ssh://pi@172.29.0.13")]}
    for entry in data["pis"]:
        del entry["netns"]
    assert inventory_problems(data) == [
        "inventory: pi 'pi1': docker none needs netns (the emulated Pi's namespace here)",
        "inventory: pi 'pi2': docker unix needs netns (the emulated Pi's namespace here)",
    ]
    assert parse_docker("unix:///var/run/docker.sock").host == "/var/run/docker.sock"


def test_endpoint_parsing():
    assert parse_ovsdb("ssl:10.1.2.3:6640").scheme == "ssl"
    assert parse_docker("ssh://pi@10.0.0.5").user == "pi"
    assert parse_docker("ssh://10.0.0.5:2222").port == 2222
    with pytest.raises(ValueError):
        parse_docker("tcp://10.0.0.5")  # TLS port must be explicit
    with pytest.raises(ValueError):
        parse_ovsdb("tcp:10.0.0.5:70000")


def test_pi_presets_follow_published_specs():
    assert PI_MODELS["b+"].memory_mb == 512 and PI_MODELS["b+"].cores == 1 and PI_MODELS["b+"].mhz == 700
    assert PI_MODELS["3"].cores == 4 and PI_MODELS["3"].mhz == 1200
    assert pi_model("B+").cpus(host_cpus=2) == pytest.approx(0.233, abs=0.001)
    assert pi_model("5").cpus(host_cpus=2) == 2.0  # capped at the host
    with pytest.raises(ClusterError, match="unknown"):
        pi_model("zero")


def rack_topology() -> Topology:
    topo = Topology()
    topo.add_switch("core", role="core")
    for r in range(3):
        tor = topo.add_switch(f"tor{r}", role="tor")
        topo.add_link("core", tor)
        for i in range(2):
            p = topo.add_pi(f"r{r}pi{i}", rack=r)
            topo.add_link(tor, p)
            topo.add_container(f"r{r}c{i}", p)
    return topo


def test_placement_round_robins_pis_and_puts_switches_with_their_neighbours():
    topo = Topology()
    topo.add_switch("tor")
    for i in range(4):
        topo.add_link("tor", topo.add_pi(f"p{i}"))
    placement = place(topo, parse_inventory(three()))
    assert [placement[f"p{i}"] for i in range(4)] == ["pi1", "pi2", "pi3", "pi1"]
    assert placement["tor"] == "pi1"  # two of its Pis live there


def test_placement_is_deterministic_and_covers_every_bridge():
    topo = rack_topology()
    inv = parse_inventory(three())
    first = place(topo, inv)
    assert first == place(topo, inv)
    assert set(first) == set(topo.bridges)


def test_wiring_uses_patch_ports_on_one_host_and_vxlan_across_hosts():
    topo = Topology()
    topo.add_switch("tor")
    a, b = topo.add_pi("pa"), topo.add_pi("pb")
    topo.add_link("tor", a)
    topo.add_link("tor", b)
    inv = parse_inventory({"pis": [pi("pi1", 11), pi("pi2", 12)]})
    placement = place(topo, inv)
    assert placement == {"pa": "pi1", "pb": "pi2", "tor": "pi1"}
    wires = wiring(topo, placement, inv, "pc9")
    by_node = {(w.node, w.port): w for w in wires}
    patch = by_node[("tor", 1)]
    assert patch.kind == "patch" and patch.peer_ifname == by_node[("pa", 1)].ifname
    tunnel_tor, tunnel_pi = by_node[("tor", 2)], by_node[("pb", 1)]
    assert tunnel_tor.kind == tunnel_pi.kind == "vxlan"
    assert tunnel_tor.remote_ip == "172.29.0.12" and tunnel_pi.remote_ip == "172.29.0.11"
    assert tunnel_tor.key == tunnel_pi.key == 2  # one VNI per model link, the same at both ends
    assert tunnel_tor.host == "pi1" and tunnel_pi.host == "pi2"
    keys = [w.key for w in wires if w.kind == "vxlan"]
    assert len(set(keys)) == len(keys) // 2


def test_underlay_overlap_is_refused_in_one_line():
    routes = ["default", "172.17.0.0/16", "192.0.2.0/24"]
    assert str(check_underlay("172.29.0.0/24", routes)) == "172.29.0.0/24"
    with pytest.raises(ClusterError) as info:
        check_underlay("192.0.2.128/25", routes)
    assert str(info.value) == (
        "underlay: 192.0.2.128/25 overlaps the host route 192.0.2.0/24 (pick a subnet no route covers)"
    )
    with pytest.raises(ClusterError, match="not an IPv4 subnet"):
        check_underlay("172.29.0.1/24", routes)
