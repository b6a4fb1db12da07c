"""Flow, group and meter rows as the Switch page shows them, and the flow filter."""

from __future__ import annotations

import pytest

from picloud.errors import UIError
from webui.tables import filter_page, flow_row, flow_rows, group_row, merge_groups, meter_row, page_args, unwrap

FLOW = {"priority": 100, "table_id": 2, "cookie": 0x20001, "match": {"in_port": 1, "eth_dst": "02:00:00:00:00:01"},
        "actions": ["OUTPUT:3"], "packet_count": 7, "byte_count": 700, "duration_sec": 12,
        "duration_nsec": 500_000_000, "idle_timeout": 0, "hard_timeout": 30}


def test_unwrap_accepts_ofctl_rest_keyed_by_dpid_or_a_bare_list():
    assert unwrap({"123": [FLOW]}) == [FLOW]
    assert unwrap([FLOW, "junk"]) == [FLOW]
    assert unwrap(None) == [] and unwrap({"1": [], "2": []}) == []


def test_flow_row_renders_match_actions_and_age():
    row = flow_row(FLOW)
    assert row == {"table": 2, "priority": 100, "cookie": "0x20001", "match": "in_port=1,eth_dst=02:00:00:00:00:01",
                   "actions": "OUTPUT:3", "packets": 7, "bytes": 700, "age": 12.5, "idle_timeout": 0,
                   "hard_timeout": 30}


def test_empty_match_and_actions_read_as_wildcard_and_drop():
    row = flow_row({"priority": 0, "match": {}, "actions": []})
    assert row["match"] == "*" and row["actions"] == "drop"


def test_instructions_form_is_rendered():
    row = flow_row({"instructions": [{"type": "APPLY_ACTIONS", "actions": ["OUTPUT:1"]}, {"table_id": 3}]})
    assert row["actions"] == "apply_actions(OUTPUT:1),GOTO_TABLE:3"


def test_rows_are_in_pipeline_order():
    rows = flow_rows([{**FLOW, "table_id": 1, "priority": 5}, {**FLOW, "table_id": 0, "priority": 1},
                      {**FLOW, "table_id": 1, "priority": 50}])
    assert [(r["table"], r["priority"]) for r in rows] == [(0, 1), (1, 50), (1, 5)]


def test_filter_terms_all_match_and_columns_compare_exactly():
    rows = flow_rows([FLOW, {**FLOW, "priority": 1000, "actions": ["CONTROLLER:65535"]},
                      {**FLOW, "table_id": 0, "match": {"in_port": 2}}])
    assert filter_page(rows, "output", 10, 0)["matched"] == 2
    assert filter_page(rows, "priority=100 eth_dst", 10, 0)["matched"] == 1
    assert filter_page(rows, "priority=10", 10, 0)["matched"] == 0, "exact, not a prefix"
    assert filter_page(rows, "table=0", 10, 0)["flows"][0]["match"] == "in_port=2"
    page = filter_page(rows, "", 2, 1)
    assert page["total"] == 3 and page["matched"] == 3 and len(page["flows"]) == 2


@pytest.mark.parametrize("args", [{"limit": "x"}, {"limit": "0"}, {"limit": "999999"}, {"offset": "-1"}])
def test_bad_paging_is_a_ui_error(args):
    with pytest.raises(UIError, match="limit"):
        page_args(args)


def test_group_and_meter_rows():
    g = group_row({"group_id": 4, "type": "SELECT", "packet_count": 3, "byte_count": 30,
                   "buckets": [{"weight": 1, "actions": ["OUTPUT:1"]}, {"weight": 1, "actions": ["OUTPUT:2"]}]})
    assert g["buckets"][1]["actions"] == "OUTPUT:2" and g["type"] == "SELECT"
    m = meter_row({"meter_id": 2, "flags": ["KBPS"], "bands": [{"type": "DROP", "rate": 1000}],
                   "packet_in_count": 9, "byte_in_count": 90, "duration_sec": 4})
    assert (m["meter_id"], m["flags"], m["packets"], m["bytes"]) == (2, "KBPS", 9, 90)


def test_groups_join_descriptions_and_counters():
    desc = {"1": [{"group_id": 7, "type": "SELECT", "buckets": [{"weight": 1, "actions": ["OUTPUT:1"]},
                                                                {"weight": 1, "actions": ["OUTPUT:2"]}]}]}
    stats = {"1": [{"group_id": 7, "packet_count": 30, "byte_count": 3000,
                    "bucket_stats": [{"packet_count": 10}, {"packet_count": 20}]},
                   {"group_id": 9, "packet_count": 1, "byte_count": 60}]}
    rows = merge_groups(stats, desc)
    assert [r["group_id"] for r in rows] == [7, 9]
    assert rows[0]["type"] == "SELECT" and rows[0]["packets"] == 30
    assert [(b["actions"], b["packets"]) for b in rows[0]["buckets"]] == [("OUTPUT:1", 10), ("OUTPUT:2", 20)]
    assert rows[1]["buckets"] == [] and rows[1]["bytes"] == 60
    assert merge_groups(None, None) == []


def test_meter_stats_bands_are_shown():
    row = meter_row({"meter_id": 1, "band_stats": [{"packet_band_count": 4, "byte_band_count": 400}]})
    assert row["bands"] == [{"packet_band_count": 4, "byte_band_count": 400}]
