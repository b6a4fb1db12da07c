"""controller_apps.flows: what encode sends is exactly the flow it was given (decoded back by the
fake datapath), every flow is checked against its table's declared match fields, and diff and
resync send the minimum without ever deleting on a reconnect."""

from __future__ import annotations

import pytest
from flowtable import FakeDatapath
from os_ken.ofproto import ofproto_v1_3 as ofp

from controller_apps import flows as fl
from controller_apps import pipeline
from controller_apps import routing_rules as rr
from controller_apps import tenancy_rules as T
from controller_apps.flows import Flow, Match, Meter, SwitchRules
from tenants import plan as P
from tenants.model import TenantPlan
from topology.builders import build
from topology.model import dpid


def every_apps_rules() -> dict[int, list[SwitchRules]]:
    t = build("picloud:2,2", containers_per_pi=2)
    plan = P.create_tenant(TenantPlan(), "red", "10.0.0.0/24", rate=20)
    plan, _ = P.add_members(plan, t, "red", 4, placement="spread")
    for _, m in plan.members:
        plan = P.set_port(plan, m.name, 9)
    hosts = rr.hosts_from_topology(t) + [rr.Host(m.mac, m.ip, dpid(m.pi), 9, tn.name, tn.id) for tn, m in plan.members]
    routing = rr.desired_state(rr.graph_from_topology(t), hosts)
    tenancy = T.compute(plan, t)
    return {d: [routing[d], tenancy.get(d, SwitchRules())] for d in routing}


def test_what_encode_sends_decodes_back_to_the_same_flows_groups_and_meters():
    for d, apps in every_apps_rules().items():
        dp = FakeDatapath(d)
        for rules in apps:
            for msg in fl.encode(dp, fl.diff(None, rules)):
                dp.send_msg(msg)  # serialises on the wire format, then decodes into the fake table
        wanted = SwitchRules()
        for rules in apps:
            wanted.flows.update(rules.flows)
            wanted.groups.update(rules.groups)
            wanted.meters.update(rules.meters)
        assert dp.table.flows == wanted.flows
        assert dp.table.groups == wanted.groups
        assert dp.table.meters == wanted.meters


def test_a_flow_matching_a_field_its_table_does_not_declare_is_refused():
    dp = FakeDatapath()
    egress_on_ip = Flow(pipeline.TABLE_EGRESS, 10, Match(ipv4_dst="10.0.0.1"), (fl.output(1),))
    with pytest.raises(fl.TableContractError, match="table egress does not match on ipv4_dst"):
        fl.encode(dp, fl.Change(add_flows=[egress_on_ip]))
    with pytest.raises(fl.TableContractError, match="undeclared table 9"):
        fl.encode(dp, fl.Change(add_flows=[Flow(9, 10, Match())]))


def test_diff_modifies_in_place_and_resync_never_deletes():
    a = Flow(pipeline.TABLE_FORWARD, 100, Match(eth_dst="02:00:00:00:00:01"), (fl.output(1),))
    moved = Flow(a.table, a.priority, a.match, (fl.output(2),))
    gone = Flow(pipeline.TABLE_FORWARD, 100, Match(eth_dst="02:00:00:00:00:02"), (fl.output(1),))
    old, new = SwitchRules(), SwitchRules(meters={1: Meter(1, 100, 64)})
    old.extend([a, gone])
    new.add(moved)
    change = fl.diff(old, new)
    assert (change.modify_flows, change.delete_flows, change.add_meters) == ([moved], [gone], [Meter(1, 100, 64)])
    assert not change.add_flows and len(fl.diff(new, new)) == 0
    assert fl.diff(new, new, assume_same=False).modify_flows == [moved]
    dp = FakeDatapath()
    sent = fl.encode(dp, fl.resync(new))
    assert {m.command for m in sent if hasattr(m, "match")} == {ofp.OFPFC_ADD}
    assert [m.command for m in sent if not hasattr(m, "match")] == [ofp.OFPMC_ADD, ofp.OFPMC_MODIFY]
