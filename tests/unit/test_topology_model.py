"""The model's contract: names, ports, DPIDs, interface names, default addresses, add_* checks."""

from __future__ import annotations

import hashlib

import pytest

from picloud.errors import TopologyError
from topology.model import Topology, default_mac, dpid, dpid_str, ifname


def small() -> Topology:
    topo = Topology(name="small")
    topo.add_switch("tor1", role="tor")
    topo.add_pi("pi1", rack=1)
    topo.add_pi("pi2", rack=1)
    topo.add_link("tor1", "pi1", bw=100)
    topo.add_link("tor1", "pi2")
    topo.add_container("a", "pi1")
    topo.add_container("b", "pi2", ip="192.168.0.5/24", mac="02:AA:00:00:00:01")
    return topo


def test_ports_are_numbered_per_node_in_link_order() -> None:
    topo = small()
    assert topo.ports("tor1") == {1: "pi1", 2: "pi2"}
    assert topo.ports("pi1") == {1: "tor1", 2: "a"}
    assert topo.port("a", "pi1") == 1 and topo.port("pi1", "a") == 2


def test_dpid_is_48_bits_of_sha256_of_the_name() -> None:
    assert dpid("core1") == int(hashlib.sha256(b"core1").hexdigest()[:12], 16)
    assert dpid("core1") < 2**48
    assert dpid_str(dpid("core1")) == f"0000{hashlib.sha256(b'core1').hexdigest()[:12]}"
    assert small().by_dpid()[dpid("pi2")] == "pi2"
    with pytest.raises(TopologyError, match="containers have no datapath id"):
        small().dpid("a")


def test_short_ids_and_interface_names() -> None:
    topo = small()
    assert [topo.short_id(n) for n in ("tor1", "pi1", "pi2", "a", "b")] == ["s0", "p0", "p1", "c0", "c1"]
    assert ifname("pc27", "p1", 2) == "pc27p1p2"
    with pytest.raises(TopologyError, match="Linux allows 15"):
        ifname("pc999", "c123456", 1234)


def test_default_and_explicit_addresses() -> None:
    topo = small()
    assert (topo.node("a").ip, topo.node("a").mac) == ("10.0.0.1/8", "02:00:00:00:00:01")
    assert (topo.node("b").ip, topo.node("b").mac) == ("192.168.0.5/24", "02:aa:00:00:00:01")
    assert default_mac(0x10203 - 1) == "02:00:00:01:02:03"
    topo.add_container("c", "pi1", ip="10.9.0.1")
    assert topo.node("c").ip == "10.9.0.1/8"  # no prefix written: the default network's /8


def test_counts_and_fabric_links() -> None:
    topo = small()
    assert topo.counts() == {"switches": 1, "pis": 2, "containers": 2, "links": 2}
    assert topo.bridges == ["tor1", "pi1", "pi2"]
    assert topo.containers_on("pi1") == ["a"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.add_switch("Tor_1"), "switch 'Tor_1': invalid name (names are 1-32 characters of [a-z0-9-]"),
        (lambda t: t.add_switch("x" * 33), "invalid name"),
        (lambda t: t.add_switch("-x"), "invalid name"),
        (lambda t: t.add_pi("tor1"), "pi 'tor1': duplicate name (node names must be unique)"),
        (lambda t: t.add_switch("s9", role="router"), "switch 's9': unknown role 'router' (one of core"),
        (lambda t: t.add_pi("p9", rack=-1), "pi 'p9': rack -1 must be a whole number >= 0"),
        (lambda t: t.add_link("tor1", "nope"), "link 'tor1'-'nope': unknown node 'nope' (links must join declared"),
        (lambda t: t.add_link("tor1", "tor1"), "self-loop (a link must join two different nodes)"),
        (lambda t: t.add_link("pi1", "tor1"), "link 'pi1'-'tor1': duplicate link (one link per pair of nodes)"),
        (lambda t: t.add_link("a", "pi2"), "container 'a' has exactly one link, to its pi"),
        (lambda t: t.add_link("pi1", "pi2", bw=-5), "link 'pi1'-'pi2': bw: -5 must be a positive number"),
        (lambda t: t.add_link("pi1", "pi2", bw="x"), "bw: 'x' is not a number"),
        (lambda t: t.add_link("pi1", "pi2", loss=101), "loss 101.0 is over 100 percent"),
        (lambda t: t.add_link("pi1", "pi2", queue=2.5), "queue 2.5 must be a whole number of packets"),
        (lambda t: t.add_link("pi1", "pi2", delay="soon"), "delay 'soon' must look like '2ms'"),
        (lambda t: t.add_container("c", "tor1"), "container 'c': unknown pi 'tor1' (containers run on a declared pi)"),
        (lambda t: t.add_container("c", "pi1", ip="fe80::1"), "container 'c': ip 'fe80::1' is not IPv4"),
        (lambda t: t.add_container("c", "pi1", mac="zz:00:00:00:00:00"), "container 'c': invalid mac"),
        (lambda t: t.add_container("c", "pi1", link={"color": 1}), "'link' takes only bw, delay, jitter, loss, queue"),
    ],
)
def test_add_calls_refuse_bad_input(call, message: str) -> None:
    topo = small()
    before = topo.to_dict()
    with pytest.raises(TopologyError) as err:
        call(topo)
    assert message in str(err.value)
    assert topo.to_dict() == before, "a refused call changes nothing"


def test_delay_numbers_are_milliseconds() -> None:
    topo = small()
    assert topo.add_link("pi1", "pi2", delay=3).delay == "3ms"


def test_from_dict_errors_name_the_source() -> None:
    with pytest.raises(TopologyError, match=r"^t\.yaml: an entry is missing the key 'name'$"):
        Topology.from_dict({"switches": [{"role": "tor"}]}, where="t.yaml")
    with pytest.raises(TopologyError, match=r"^t\.yaml: 'pis' must be a list of mappings$"):
        Topology.from_dict({"pis": "pi1"}, where="t.yaml")
    with pytest.raises(TopologyError, match=r"t\.yaml: container 'c': unknown key 'cpu'"):
        Topology.from_dict({"pis": [{"name": "p"}], "containers": [{"name": "c", "pi": "p", "cpu": 1}]},
                           where="t.yaml")
