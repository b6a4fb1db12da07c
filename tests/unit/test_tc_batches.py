"""tc plans of many link ends go into a few `tc -batch` runs with each end's order kept."""

from __future__ import annotations

import pytest

from topology.effects.tc import batches
from topology.tcplan import Shape, plan


def test_plans_group_by_namespace_with_deletes_first_and_adds_in_order():
    cmds = (plan("a1", Shape(bw=10), replace=True) + plan("eth0", Shape(bw=5, delay="2ms"), "pc1c0", replace=True)
            + plan("a2", Shape(bw=20)))
    out = batches(cmds)
    assert [argv for argv, _, _ in out] == [["tc", "-force", "-batch", "-"], ["tc", "-batch", "-"],
                                           ["tc", "-n", "pc1c0", "-force", "-batch", "-"],
                                           ["tc", "-n", "pc1c0", "-batch", "-"]]
    root_required = out[1][1].splitlines()
    assert root_required[0].startswith("qdisc add dev a1 root handle 1: tbf rate 10mbit")
    assert root_required[1].startswith("qdisc add dev a2 root handle 1: tbf rate 20mbit")
    ns_required = out[3][1].splitlines()
    assert ns_required[0].startswith("qdisc add dev eth0 root handle 1: tbf") and "netem" in ns_required[1]
    assert out[0][1] == "qdisc del dev a1 root\n" and [c for _, _, c in out] == [False, True, False, True]
    # every command of the plans is in exactly one batch
    lines = [line for _, text, _ in out for line in text.splitlines()]
    assert len(lines) == len(cmds)


def test_no_plans_no_process_and_foreign_commands_refused():
    assert batches([]) == []
    from topology.tcplan import Command

    with pytest.raises(ValueError, match="not a tc command"):
        batches([Command(("ip", "link"))])
