"""Issue 19 finding 8: names and addresses from a topology (or tenants, or inventory) file with a
newline, tab or NUL. `^...$` let 'pi1\\n' and a MAC ending in '\\n' through, and the newline split an
`ip -batch` line. Every field is tried with each character, through the file path (from_dict) and
the Python path (add_*, which GraphML and Mininet files use)."""

from __future__ import annotations

import copy

import pytest

from picloud.errors import ClusterError, TenantError, TopologyError
from tenants import store
from topology import inventory
from topology.model import NAME_RE, Topology

CHARS = ["\n", "\t", "\x00"]
VALID = {
    "name": "lab",
    "switches": [{"name": "s1", "role": "core"}],
    "pis": [{"name": "pi1", "rack": 0}, {"name": "pi2", "rack": 1}],
    "containers": [{"name": "c1", "pi": "pi1", "ip": "10.0.0.1/8", "mac": "02:00:00:00:00:01",
                    "link": {"bw": 100, "delay": "1ms", "jitter": "1ms", "loss": 1, "queue": 10}},
                   {"name": "c2", "pi": "pi2"}],
    "links": [{"a": "s1", "b": "pi1", "bw": 100, "delay": "2ms", "jitter": "1ms", "loss": 0, "queue": 100},
              {"a": "s1", "b": "pi2"}],
}
# every string-or-number field of the file, as a path into VALID
FIELDS = [("name",), ("switches", 0, "name"), ("switches", 0, "role"), ("pis", 0, "name"), ("pis", 0, "rack"),
          ("containers", 0, "name"), ("containers", 0, "pi"), ("containers", 0, "ip"), ("containers", 0, "mac"),
          ("containers", 0, "link", "bw"), ("containers", 0, "link", "delay"), ("containers", 0, "link", "jitter"),
          ("containers", 0, "link", "loss"), ("containers", 0, "link", "queue"),
          ("links", 0, "a"), ("links", 0, "b"), ("links", 0, "bw"), ("links", 0, "delay"), ("links", 0, "jitter"),
          ("links", 0, "loss"), ("links", 0, "queue")]


def with_value(data, path, char, where="end"):
    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    value = str(target[path[-1]])
    target[path[-1]] = value + char if where == "end" else value[:1] + char + value[1:]
    return data


def test_the_valid_file_loads():
    assert Topology.from_dict(VALID).counts()["containers"] == 2


@pytest.mark.parametrize("char", CHARS, ids=["newline", "tab", "nul"])
@pytest.mark.parametrize("path", FIELDS, ids=[".".join(map(str, p)) for p in FIELDS])
@pytest.mark.parametrize("where", ["end", "middle"])
def test_every_topology_field_refuses_control_characters(path, char, where):
    with pytest.raises(TopologyError):
        Topology.from_dict(with_value(VALID, path, char, where))


@pytest.mark.parametrize("char", CHARS, ids=["newline", "tab", "nul"])
def test_the_python_api_refuses_them_too(char):
    topo = Topology()
    topo.add_pi("pi1")
    for call in (lambda: topo.add_switch("s1" + char), lambda: topo.add_pi("pi2" + char),
                 lambda: topo.add_container("c1", "pi1", mac="02:00:00:00:00:01" + char),
                 lambda: topo.add_container("c1", "pi1", ip="10.0.0.1/8" + char),
                 lambda: Topology(name="x" + char)):
        with pytest.raises(TopologyError):
            call()
    assert topo.containers == []


@pytest.mark.parametrize("text", ["pi1\n", "pi1\r\n", "\npi1"])
def test_name_pattern_is_anchored_at_the_very_end(text):
    assert NAME_RE.match(text) is None


@pytest.mark.parametrize("char", CHARS, ids=["newline", "tab", "nul"])
@pytest.mark.parametrize("field", ["name", "subnet", "member", "rate"])
def test_tenants_file_fields_refuse_control_characters(char, field):
    tenant = {"name": "red", "id": 1, "subnets": ["10.9.0.0/24"], "rate": "10mbit",
              "members": [{"name": "red-1", "pi": "pi1", "ip": "10.9.0.2", "mac": "0a:00:01:00:00:01"}]}
    if field == "name":
        tenant["name"] += char
    elif field == "subnet":
        tenant["subnets"] = ["10.9.0.0/24" + char]
    elif field == "member":
        tenant["members"][0]["name"] += char
    else:
        tenant["rate"] += char
    with pytest.raises(TenantError, match="control character"):
        store.plan_from_dict({"tenants": [tenant]})


@pytest.mark.parametrize("char", CHARS, ids=["newline", "tab", "nul"])
@pytest.mark.parametrize("field", ["name", "management", "ovsdb", "docker", "netns", "underlay"])
def test_inventory_fields_refuse_control_characters(char, field):
    entry = {"name": "pi1", "management": "172.29.0.11", "ovsdb": "tcp:172.29.0.11:6640", "docker": "none",
             "netns": "emu11", "underlay": "172.29.0.11"}
    entry[field] += char
    with pytest.raises(ClusterError, match="control character"):
        inventory.parse_inventory({"controller": "172.29.0.1", "pis": [entry]})
