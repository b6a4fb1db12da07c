"""Tenants and experiments as the UI reads them from other packages' files."""

from __future__ import annotations

import json

from tenants.model import Member, Tenant, TenantPlan, make_subnet
from webui.catalog import (
    PALETTE,
    find_experiments,
    headline,
    membership,
    normalise_tenants,
    read_flows_csv,
    resolve_experiment,
    tenant_colour,
    tenant_verdicts,
)


def test_tenants_in_the_store_format_are_read():
    plan = TenantPlan(tenants=(
        Tenant("red", 1, (make_subnet("10.0.0.0/24"),), rate=50.0,
               members=(Member("red-1", "pi1", "10.0.0.2", "0a:00:00:01:00:01", "10.0.0.0/24", port=5),)),
        Tenant("acme", 2, (make_subnet("10.0.0.0/24"), make_subnet("10.1.0.0/24"))),
    ))
    tenants = normalise_tenants(plan.to_dict())
    assert [t["name"] for t in tenants] == ["acme", "red"]
    red = tenants[1]
    assert red["id"] == 1 and red["subnet"] == "10.0.0.0/24" and red["rate"] == 50.0
    assert red["colour"] == PALETTE["red"]
    assert red["members"][0] | {} == {"name": "red-1", "pi": "pi1", "ip": "10.0.0.2", "mac": "0a:00:00:01:00:01",
                                      "rack": None, "port": 5}
    assert tenants[0]["subnet"] == "10.0.0.0/24, 10.1.0.0/24"
    assert membership(tenants) == {"red-1": "red"}


def test_tenant_shapes_are_tolerated_and_junk_ignored():
    assert normalise_tenants(None) == []
    assert normalise_tenants({"blue": {"members": ["b1", {"name": "b2"}, 7]}})[0]["members"] == [
        {"name": "b1", "pi": None, "ip": None, "mac": None, "rack": None, "port": None},
        {"name": "b2", "pi": None, "ip": None, "mac": None, "rack": None, "port": None}]
    assert normalise_tenants([{"nope": 1}, "x"]) == []
    verified = normalise_tenants([{"name": "t", "verify": {"ok": True, "summary": "12 probes"}}])
    assert verified[0]["verify"] == {"ok": True, "summary": "12 probes"}


def test_colours_are_stable_and_from_the_palette():
    assert tenant_colour("acme") == tenant_colour("acme")
    assert tenant_colour("acme") in PALETTE.values()
    assert tenant_colour("blue") == PALETTE["blue"]


def _experiment(directory, summary, files=("flows.csv", "fct.png")):
    directory.mkdir(parents=True)
    (directory / "summary.json").write_text(json.dumps(summary))
    for f in files:
        (directory / f).write_text("src,dst,fct_us\na,b,10\nc,d,20\n" if f.endswith(".csv") else "x")


def test_experiments_are_found_with_files_and_headline(tmp_path):
    _experiment(tmp_path / "demo", {"workload": "websearch", "flows": 2, "all": {"fct_us": {"p50": 10.0, "p99": 20.5}}})
    _experiment(tmp_path / "sweep" / "load-0.5", {"workload": "datamining"})
    (tmp_path / "empty").mkdir()
    found = {e["id"]: e for e in find_experiments(tmp_path)}
    assert set(found) == {"demo", "sweep/load-0.5"}
    demo = found["demo"]
    assert demo["plots"] == ["fct.png"] and demo["flows_csv"] == "flows.csv"
    assert ("FCT p99 ms", 0.021) in demo["headline"] and ("workload", "websearch") in demo["headline"]
    assert find_experiments(tmp_path / "missing") == [] and find_experiments(None) == []


def test_resolve_refuses_escapes_and_unknown_ids(tmp_path):
    root = tmp_path / "results"
    _experiment(root / "run1", {})
    _experiment(tmp_path / "outside", {})
    assert resolve_experiment(root, "run1") == (root / "run1").resolve()
    assert resolve_experiment(root, "../outside") is None
    assert resolve_experiment(root, "nope") is None
    assert resolve_experiment(None, "run1") is None


def test_flows_csv_preview_counts_all_rows(tmp_path):
    _experiment(tmp_path / "r", {})
    preview = read_flows_csv(tmp_path / "r" / "flows.csv", limit=1)
    assert preview == {"columns": ["src", "dst", "fct_us"], "rows": [{"src": "a", "dst": "b", "fct_us": "10"}],
                       "total": 2}


def test_headline_skips_missing_and_nested_values():
    assert headline({"flows": 3, "buckets": {"a": 1}, "goodput_mbps": 1.23456}) == [
        ("flows", 3), ("goodput Mbit/s", 1.235)]


def test_tenant_verdicts_from_an_isolation_report():
    report = {"tenants": ["blue", "red"], "matrix": {"blue": {"red": 0}, "red": {"blue": 3}},
              "reachability": {"blue": {"pairs": 6, "failed": [["b1", "b2"]]}, "red": {"pairs": 2, "failed": []}},
              "time": 12.0}
    verdicts = tenant_verdicts(report)
    assert verdicts["red"] == {"ok": False, "leaks_out": 3, "leaks_in": 0, "pairs": 2, "reached": 2, "time": 12.0}
    assert verdicts["blue"]["leaks_in"] == 3 and verdicts["blue"]["reached"] == 5 and not verdicts["blue"]["ok"]
    clean = tenant_verdicts({"tenants": ["a"], "matrix": {"a": {}}, "reachability": {"a": {"pairs": 0, "failed": []}}})
    assert clean["a"]["ok"] is True
    assert tenant_verdicts(None) == {}
