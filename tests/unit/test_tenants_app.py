"""The tenancy app's handler glue against a recording fake datapath (no switch, no sockets).

What it protects: a (re)connecting switch is brought to the plan by modifying kept rules in place,
adding the missing and deleting only stale ones (never a blanket delete, which would cut
established flows after a controller restart); a reload sends only the difference; ARP is
answered from the plan and only inside the asker's tenant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from flowtable import FakeDatapath
from os_ken.controller.handler import MAIN_DISPATCHER
from os_ken.lib.packet import arp, ethernet, packet, vlan
from os_ken.ofproto import ether, ofproto_v1_3, ofproto_v1_3_parser
from test_tenants_rules import build

from controller_apps import tenancy_rules as R
from controller_apps.flows import Flow, Match
from controller_apps.pipeline import COOKIE_ROUTING, COOKIE_TENANCY, cookie
from controller_apps.state import STATE
from controller_apps.tenancy import Tenancy
from picloud.errors import PiCloudError
from tenants import plan as P
from tenants import store
from topology.model import dpid

OFP, PARSER = ofproto_v1_3, ofproto_v1_3_parser


def switch(dp_id: int, app: Tenancy | None = None) -> FakeDatapath:
    """A fake datapath that answers barriers at once, like a switch with nothing queued."""
    return FakeDatapath(dp_id, on_barrier=None if app is None else
                        lambda msg: app.barrier_handler(SimpleNamespace(msg=msg)))


@contextlib.contextmanager
def tenancy_running(tmp_path, **build_args: Any) -> Iterator[Tenancy]:
    """A Tenancy app on the plan of test_tenants_rules.build(**build_args), written where the
    controller would read it; STATE is restored afterwards (the fast path's tests use it too)."""
    plan, topo = build(**build_args)
    path = tmp_path / "pc1.tenants.yaml"
    store.save(plan, path)
    saved = dict(STATE.options)
    STATE.reset()
    STATE.set_intended(topo)
    STATE.options.update(tenants_file=str(path))
    try:
        yield Tenancy()
    finally:
        STATE.reset()
        STATE.options.clear()
        STATE.options.update(saved)


@pytest.fixture
def app(tmp_path):
    with tenancy_running(tmp_path, rate=20) as tenancy:
        yield tenancy


def stats_entry(rule: Flow):
    return SimpleNamespace(match=PARSER.OFPMatch(**dict(rule.match)), table_id=rule.table,
                           priority=rule.priority, cookie=rule.cookie)


def connect(app: Tenancy, dp: FakeDatapath, meters: list[int], flows: list) -> None:
    app.state_change_handler(SimpleNamespace(datapath=dp, state=MAIN_DISPATCHER))
    request = dp.sent[-1]
    assert isinstance(request, PARSER.OFPMeterConfigStatsRequest)
    app.meter_config_handler(SimpleNamespace(msg=SimpleNamespace(
        datapath=dp, xid=request.xid, flags=0, body=[SimpleNamespace(meter_id=i) for i in meters])))
    request = dp.sent[-1]
    assert isinstance(request, PARSER.OFPFlowStatsRequest) and request.cookie == COOKIE_TENANCY
    app.flow_stats_handler(SimpleNamespace(msg=SimpleNamespace(datapath=dp, xid=request.xid, flags=0,
                                                               body=flows)))


def test_reconnect_modifies_kept_rules_adds_missing_and_deletes_only_stale(app):
    pa = dpid("pa")
    wanted = list(app.wanted[pa].flows.values())
    kept, missing = wanted[: len(wanted) // 2], wanted[len(wanted) // 2:]
    stale = Flow(0, R.PRI_MEMBER_DROP, Match(in_port=99), cookie=cookie(COOKIE_TENANCY, 77))
    dp = FakeDatapath(pa)
    connect(app, dp, meters=[77], flows=[stats_entry(r) for r in kept] + [stats_entry(stale)])
    modified = dp.flow_mods(OFP.OFPFC_MODIFY_STRICT)
    added = dp.flow_mods(OFP.OFPFC_ADD)
    deleted = dp.flow_mods(OFP.OFPFC_DELETE_STRICT)
    assert len(modified) == len(kept) and len(added) == len(missing)
    assert [(m.match["in_port"], m.cookie) for m in deleted] == [(99, stale.cookie)]
    assert deleted[0].cookie_mask == 0xFFFFFFFFFFFFFFFF  # only that exact rule
    assert not dp.flow_mods(OFP.OFPFC_DELETE), "a blanket delete would cut established flows"
    meter_mods = [m for m in dp.sent if isinstance(m, PARSER.OFPMeterMod)]
    blue = app.plan.tenant("blue").id
    assert [(m.command, m.meter_id) for m in meter_mods] == [(OFP.OFPMC_ADD, blue), (OFP.OFPMC_DELETE, 77)]
    assert meter_mods[0].bands[0].rate == 20000
    # The meter exists before the first flow that uses it.
    first_metered = next(i for i, m in enumerate(dp.sent) if isinstance(m, PARSER.OFPFlowMod)
                         and any(isinstance(x, PARSER.OFPInstructionMeter) for x in m.instructions))
    assert dp.sent.index(meter_mods[0]) < first_metered


def test_switch_without_tenancy_rules_is_not_asked_anything(app):
    dp = FakeDatapath(dpid("tor"))
    app.state_change_handler(SimpleNamespace(datapath=dp, state=MAIN_DISPATCHER))
    assert dp.sent == []


def test_reload_sends_only_the_difference(app, tmp_path):
    dp = switch(dpid("pb"), app)
    connect(app, dp, meters=[], flows=[])
    dp.sent.clear()
    plan, gone = P.remove_members(app.plan, "red", ["red-2"])
    store.save(plan, app.path)
    summary = app.reload()
    # red-2 was red's only member on pb: its 5 member rules and red's 3 table-1 rules there go.
    assert summary["add"] == 0 and summary["modify"] == 0 and summary["delete"] == 5 + 3
    deleted = dp.flow_mods(OFP.OFPFC_DELETE_STRICT)
    assert len(deleted) == 8 and not dp.flow_mods(OFP.OFPFC_ADD) and not dp.flow_mods(OFP.OFPFC_MODIFY_STRICT)
    assert all(m.cookie == cookie(COOKIE_TENANCY, app.plan.tenant("red").id) for m in deleted)
    assert gone[0].mac not in {h["mac"] for h in STATE.hosts()}
    assert isinstance(dp.sent[-1], PARSER.OFPBarrierRequest)


def test_reload_of_a_bad_file_changes_nothing(app):
    dp = switch(dpid("pa"), app)
    connect(app, dp, meters=[], flows=[])
    dp.sent.clear()
    before = app.plan
    with open(app.path, "w") as fh:
        fh.write("tenants: [{name: x}]\n")
    with pytest.raises(PiCloudError, match="missing key 'id'"):
        app.reload()
    assert app.plan == before and dp.sent == []


def arp_request(tenant_id: int, src_mac: str, src_ip: str, dst_ip: str) -> bytes:
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=src_mac, ethertype=ether.ETH_TYPE_8021Q))
    pkt.add_protocol(vlan.vlan(vid=tenant_id, ethertype=ether.ETH_TYPE_ARP))
    pkt.add_protocol(arp.arp(opcode=arp.ARP_REQUEST, src_mac=src_mac, src_ip=src_ip, dst_mac="00:00:00:00:00:00",
                             dst_ip=dst_ip))
    pkt.serialize()
    return bytes(pkt.data)


def packet_in(app: Tenancy, dp: FakeDatapath, ck: int, data: bytes, port: int) -> None:
    app.packet_in_handler(SimpleNamespace(msg=SimpleNamespace(cookie=ck, data=data, match={"in_port": port},
                                                              datapath=dp)))


def test_arp_answered_from_plan_within_tenant_only(app):
    blue, red = app.plan.tenant("blue"), app.plan.tenant("red")
    b1, b2 = blue.member("blue-1"), blue.member("blue-2")
    dp = FakeDatapath(dpid(b1.pi))
    packet_in(app, dp, cookie(COOKIE_TENANCY, blue.id), arp_request(blue.id, b1.mac, b1.ip, b2.ip), b1.port)
    assert len(dp.sent) == 1
    out = dp.sent[0]
    assert isinstance(out, PARSER.OFPPacketOut) and out.actions[0].port == b1.port
    reply = packet.Packet(out.data).get_protocol(arp.arp)
    assert (reply.opcode, reply.src_mac, reply.src_ip, reply.dst_mac) == (arp.ARP_REPLY, b2.mac, b2.ip, b1.mac)
    # The same question asked inside red gets red's member, never blue's.
    r1 = red.member("red-1")
    dp.sent.clear()
    packet_in(app, dp, cookie(COOKIE_TENANCY, red.id), arp_request(red.id, r1.mac, r1.ip, b2.ip), r1.port)
    assert packet.Packet(dp.sent[0].data).get_protocol(arp.arp).src_mac == red.member("red-2").mac
    # Another tenant's only address (green's): silence. Untagged / other apps' packet-ins: ignored.
    dp.sent.clear()
    green_ip = app.plan.tenant("green").member("green-1").ip
    packet_in(app, dp, cookie(COOKIE_TENANCY, blue.id), arp_request(blue.id, b1.mac, b1.ip, green_ip), b1.port)
    packet_in(app, dp, COOKIE_ROUTING, arp_request(blue.id, b1.mac, b1.ip, b2.ip), b1.port)
    assert dp.sent == []


def test_members_are_registered_as_hosts_with_their_tenant(app):
    hosts = {h["mac"]: h for h in STATE.hosts()}
    for tenant, member in app.plan.members:
        assert hosts[member.mac]["tenant"] == tenant.name
        assert (hosts[member.mac]["dpid"], hosts[member.mac]["port"]) == (dpid(member.pi), member.port)
