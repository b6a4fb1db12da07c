"""Bridge deletion in bounded transactions (topology.effects.ovs.deletion_batches): one transaction
closing a whole 1,000-container run's ports held ovs-vswitchd's main loop, which forwards every
run's packets, for 32 s."""

from __future__ import annotations

from topology.effects import ovs


def test_groups_never_exceed_the_port_limit_and_keep_the_order():
    ports = {f"b{i}": 21 for i in range(50)}  # picloud:5,10 at 20 containers per Pi: 20 + internal
    batches = ovs.deletion_batches(sorted(ports), ports, limit=256)
    assert [n for b in batches for n in b] == sorted(ports)
    assert all(sum(ports[n] for n in b) <= 256 for b in batches)
    assert len(batches) == 5  # 12 bridges of 21 ports fit 256; 50 bridges need five transactions


def test_a_bridge_above_the_limit_goes_alone_and_unknown_bridges_count_one():
    ports = {"big": 900, "a": 10, "b": 10}
    assert ovs.deletion_batches(["a", "big", "b", "gone"], ports, limit=256) == [["a"], ["big"], ["b", "gone"]]


def test_a_small_run_is_one_transaction():
    ports = {"s0": 5, "s1": 5, "p0": 1}
    assert ovs.deletion_batches(["p0", "s0", "s1"], ports) == [["p0", "s0", "s1"]]


def test_nothing_to_delete_is_no_transaction():
    assert ovs.deletion_batches([], {}) == []
