"""The pipeline as data: table order, cookies, and the messages that install it."""

from __future__ import annotations

import pytest
from flowtable import FakeDatapath
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller_apps import pipeline


def test_tables_are_declared_in_contract_order():
    assert [(t.table_id, t.name) for t in pipeline.TABLES] == [
        (0, "classify"), (1, "arp"), (2, "forward"), (3, "egress")]
    assert pipeline.next_table(0) == 1
    assert pipeline.next_table(3) is None


def test_cookie_carries_app_and_tenant():
    value = pipeline.cookie(pipeline.COOKIE_TENANCY, 42)
    assert pipeline.cookie_app(value) == "tenancy"
    assert pipeline.cookie_tenant(value) == 42
    assert pipeline.cookie_app(0x1234) == "user"
    with pytest.raises(ValueError):
        pipeline.cookie(pipeline.COOKIE_ROUTING, 1 << 48)
    with pytest.raises(ValueError):
        pipeline.cookie(5)


def test_install_messages_chain_tables_and_miss_to_controller_in_forward():
    dp = FakeDatapath()
    misses = pipeline.install_messages(dp)
    # ADDs only: they replace a previous controller's identical miss rules without a gap.
    assert all(m.command == ofproto_v1_3.OFPFC_ADD for m in misses)
    by_table = {m.table_id: m for m in misses}
    assert set(by_table) == {0, 1, 2, 3}
    assert all(m.priority == 0 and m.cookie == pipeline.COOKIE_PIPELINE for m in misses)
    assert by_table[0].instructions[0].table_id == 1
    assert by_table[1].instructions[0].table_id == 2
    out = by_table[2].instructions[0].actions[0]
    assert out.port == ofproto_v1_3.OFPP_CONTROLLER
    assert by_table[3].instructions == []  # egress miss drops


def test_flow_mod_puts_actions_before_goto():
    dp = FakeDatapath()
    parser = dp.ofproto_parser
    msg = pipeline.flow_mod(dp, 0, 10, {"in_port": 3}, actions=[parser.OFPActionPushVlan()],
                            instructions=[pipeline.goto(dp, 1)], cookie_value=7)
    assert msg.match["in_port"] == 3
    assert isinstance(msg.instructions[0], parser.OFPInstructionActions)
    assert isinstance(msg.instructions[1], parser.OFPInstructionGotoTable)
    assert msg.cookie == 7


def test_ensure_installed_sends_once_per_connection():
    dp = FakeDatapath()
    assert pipeline.ensure_installed(dp) is True
    count = len(dp.sent)
    assert pipeline.ensure_installed(dp) is False
    assert len(dp.sent) == count
    assert isinstance(dp.sent[-1], ofproto_v1_3_parser.OFPBarrierRequest)
    assert pipeline.ensure_installed(FakeDatapath()) is True


def test_delete_app_flows_scopes_to_tenant_when_given():
    dp = FakeDatapath()
    msg = pipeline.delete_app_flows(dp, pipeline.COOKIE_TENANCY, tenant=5)
    assert msg.cookie == pipeline.COOKIE_TENANCY | 5
    assert msg.cookie_mask == pipeline.COOKIE_APP_MASK | pipeline.COOKIE_TENANT_MASK
    assert msg.table_id == ofproto_v1_3.OFPTT_ALL


def test_the_fake_flow_tables_pipeline_is_what_install_messages_installs():
    from flowtable import pipeline_rules

    dp = FakeDatapath()
    pipeline.ensure_installed(dp)
    assert dp.table.flows == pipeline_rules().flows
