"""The Experiments page shows each run's fidelity verdict as a badge, with its reasons on hover."""

from __future__ import annotations

import json

from topology.builders import build
from webui.app import create_app, live
from webui.catalog import fidelity_badge
from webui.sources import StaticSource


def test_badge_per_run_on_the_experiments_page(tmp_path):
    results = tmp_path / "results"
    runs = {"quiet": {"verdict": "faithful", "reasons": []},
            "hog": {"verdict": "degraded", "reasons": ["host CPU saturated: busiest core 100% busy"]}}
    for name, verdict in runs.items():
        (results / name).mkdir(parents=True)
        (results / name / "summary.json").write_text(json.dumps({"workload": "websearch", "fidelity": verdict}))
    (results / "old").mkdir()
    (results / "old" / "summary.json").write_text(json.dumps({"workload": "websearch"}))
    source = StaticSource(build("single:2"), results=results)
    app = create_app({"SOURCE": source, "TOKEN": "t" * 32, "INTERVAL": 0.05})
    try:
        html = app.test_client().get("/experiments").get_data(as_text=True)
        api = app.test_client().get("/api/experiments").get_json()["experiments"]
    finally:
        live(app).stop()
        source.close()
    assert '<span class="fidelity faithful"' in html and '<span class="fidelity degraded"' in html
    assert 'title="host CPU saturated: busiest core 100% busy"' in html
    assert '<span class="fidelity not-assessed"' in html
    assert {e["name"]: e["fidelity"]["verdict"] for e in api} == {"quiet": "faithful", "hog": "degraded",
                                                                  "old": "not assessed"}


def test_badge_ignores_malformed_verdicts():
    assert fidelity_badge({"fidelity": "yes"}) == {"verdict": "not assessed", "reasons": []}
    assert fidelity_badge({"fidelity": {"verdict": "great"}})["verdict"] == "not assessed"
