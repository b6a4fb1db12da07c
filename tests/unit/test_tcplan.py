"""The exact tc commands for each combination of rate, delay, jitter, loss and queue.

This machine's kernel has no sch_netem, so these plans are what vouches for the netem half: they
are the commands Mininet's TCLink would issue in spirit (rate, then a netem child), with TBF in
place of HTB for the reason given in topology.tcplan."""

from __future__ import annotations

import pytest

from picloud.errors import FabricError, TopologyError
from topology import tcplan
from topology.builders import build
from topology.tcplan import Command, Shape, plan


def argv(commands: list[Command]) -> list[str]:
    return [" ".join(c.argv) + ("" if c.check else "  [may fail]") for c in commands]


def test_rate_only_is_one_tbf_with_a_bucket_for_tso_segments():
    assert argv(plan("pc1s0p1", Shape(bw=100))) == [
        # 1 ms at 100 Mbit/s = 12,500 bytes, below ten frames: 15,140; queue 100 ms = 1,250,000 bytes
        "tc qdisc add dev pc1s0p1 root handle 1: tbf rate 100mbit burst 15140 limit 1250000"]


@pytest.mark.parametrize(("bw", "burst", "limit"), [
    (1, 15140, 30280),          # ten full frames; 100 ms would be 12,500 bytes: two buckets instead
    (10, 15140, 125000),
    (1000, 125000, 12500000),   # 125 KB bucket: a 64 KB GSO aggregate passes whole
])
def test_tbf_numbers_per_rate(bw, burst, limit):
    assert tcplan.tbf_numbers(bw, None) == (burst, limit)


def test_queue_sets_the_tbf_limit_in_full_frames():
    assert argv(plan("e", Shape(bw=10, queue=50), netns="pc1c0")) == [
        "tc -n pc1c0 qdisc add dev e root handle 1: tbf rate 10mbit burst 15140 limit 75700"]


def test_delay_only_is_a_root_netem():
    assert argv(plan("e", Shape(delay="5ms"))) == ["tc qdisc add dev e root handle 10: netem delay 5ms limit 1000"]


def test_delay_jitter_loss_without_rate():
    assert argv(plan("e", Shape(delay="10ms", jitter="2ms", loss=1.5))) == [
        "tc qdisc add dev e root handle 10: netem delay 10ms 2ms loss 1.5% limit 1000"]


def test_loss_only_is_a_netem_without_delay():
    assert argv(plan("e", Shape(loss=2))) == ["tc qdisc add dev e root handle 10: netem loss 2% limit 1000"]


def test_rate_and_delay_put_netem_under_the_tbf_with_room_for_the_bdp():
    # 100 Mbit/s x (20 ms + 100 ms queue) / 1514 B = 990.7 frames -> netem's default 1000
    # 1000 Mbit/s x (20 ms + 100 ms) / 1514 B = 9907.5 frames -> 9908
    assert argv(plan("e", Shape(bw=1000, delay="20ms"))) == [
        "tc qdisc add dev e root handle 1: tbf rate 1000mbit burst 125000 limit 12500000",
        "tc qdisc add dev e parent 1:1 handle 10: netem delay 20ms limit 9908"]
    assert argv(plan("e", Shape(bw=100, delay="20ms")))[1].endswith("netem delay 20ms limit 1000")


def test_rate_delay_jitter_loss_queue_all_together():
    assert argv(plan("e", Shape(bw=10, delay="2ms", jitter="500us", loss=0.5, queue=20), netns="ns")) == [
        "tc -n ns qdisc add dev e root handle 1: tbf rate 10mbit burst 15140 limit 30280",
        "tc -n ns qdisc add dev e parent 1:1 handle 10: netem delay 2ms 500us loss 0.5% limit 20"]


def test_zero_loss_and_zero_delay_need_no_netem():
    assert not Shape(bw=10, loss=0.0, delay="0ms").needs_netem
    assert argv(plan("e", Shape(bw=10, loss=0.0))) == [
        "tc qdisc add dev e root handle 1: tbf rate 10mbit burst 15140 limit 125000"]


def test_queue_alone_leaves_the_link_alone():
    assert plan("e", Shape(queue=10)) == []
    assert Shape(queue=10).empty


def test_a_run_time_change_first_removes_the_old_plan():
    assert argv(plan("e", Shape(bw=5), replace=True)) == [
        "tc qdisc del dev e root  [may fail]",
        "tc qdisc add dev e root handle 1: tbf rate 5mbit burst 15140 limit 62500"]
    assert argv(plan("e", Shape(), netns="n", replace=True)) == ["tc -n n qdisc del dev e root  [may fail]"]


def test_shape_of_a_link_reads_every_attribute():
    topo = build("single:1", 1)
    link = topo.add_link("s1", topo.add_switch("s2"), bw=10, delay="1ms", jitter="1ms", loss=1, queue=5)
    assert Shape.of(link) == Shape(10.0, "1ms", "1ms", 1.0, 5)


def test_jitter_needs_a_delay():
    topo = build("single:1", 1)
    with pytest.raises(TopologyError, match="jitter 1ms without a delay"):
        topo.add_link("s1", topo.add_switch("s2"), jitter="1ms")


def test_fabric_refuses_impairments_before_building_without_netem(monkeypatch, tmp_path):
    from picloud.runstate import RunState
    from topology.backends.local import LocalFabric
    from topology.effects import tc

    monkeypatch.setattr(tc, "netem_available", lambda: False)
    topo = build("single:2", 1)
    topo.add_link("s1", topo.add_switch("s2"), bw=10, jitter="1ms", delay="3ms")
    fabric = LocalFabric(topo, RunState(prefix="pc99"), ["tcp:127.0.0.1:1"], datapath="netdev")
    with pytest.raises(FabricError, match=r"link 's1'-'s2': delay/jitter/loss need the kernel's sch_netem, "
                                          r"which kernel \S+ lacks \(1 link\(s\)"):
        fabric.check()


def test_run_time_shape_is_validated_and_refused_without_netem_before_any_tc(monkeypatch):
    from picloud.runstate import RunState
    from topology.backends.local import LocalFabric
    from topology.effects import tc

    calls: list = []
    monkeypatch.setattr(tc, "netem_available", lambda: False)
    monkeypatch.setattr(tc, "apply", calls.append)
    topo = build("linear:2", 1)
    fabric = LocalFabric(topo, RunState(prefix="pc99"), [], datapath="netdev")
    with pytest.raises(FabricError, match="sch_netem"):
        fabric.shape_link("s1", "s2", 10, delay="5ms")
    with pytest.raises(FabricError, match=r"link 's1'-'s2': loss 150.0 is over 100 percent"):
        fabric.shape_link("s1", "s2", loss=150)
    with pytest.raises(FabricError, match="bw"):
        fabric.shape_link("s1", "s2", -3)
    assert calls == []
    assert topo.link("s1", "s2").bw is None


def test_queue_bytes_is_what_one_end_may_hold():
    # The TBF limit, plus a netem child's packets in full frames: what the host's OVS send socket
    # and the next port's receive socket must be able to buffer (topology.effects.ovs_sockets).
    assert tcplan.queue_bytes(Shape()) == 0
    assert tcplan.queue_bytes(Shape(bw=100)) == 1_250_000
    assert tcplan.queue_bytes(Shape(bw=10, queue=50)) == 50 * 1514
    assert tcplan.queue_bytes(Shape(bw=1000, delay="20ms")) == 12_500_000 + 9908 * 1514
    assert tcplan.queue_bytes(Shape(delay="5ms")) == 1000 * 1514
