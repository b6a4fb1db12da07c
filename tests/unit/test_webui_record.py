"""Recorded timelines and the offline HTML export (pure: no fabric, no browser)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from picloud.errors import UIError
from topology.builders import build
from traffic.results import FlowRecord
from webui.export import export, render
from webui.layout import compute_layout
from webui.record import TIMELINE, build_timeline, flow_counts


def _flow(i: int, start: float, fct_s: float | None) -> FlowRecord:
    return FlowRecord(id=i, src="a", dst="b", tenant="", size=1000, scheduled=start, job=-1, status="done",
                      start=start, lateness_us=0, fct_us=None if fct_s is None else fct_s * 1e6, sent=1000,
                      bytes_received=1000, warmup=False, ideal_us=80)


def recorded_run(directory: Path) -> Path:
    """A results directory with a 6-sample timeline of single:4: link s1-pi1 cut at 2.2 s, back at
    4.1 s; six flows. Shared with the browser test of the export."""
    topo = build("single:4")
    layout = compute_layout(topo)
    samples = []
    for t in range(6):
        down = 2.2 <= t < 4.1
        links = [{"id": ln["id"], "a": ln["a"], "b": ln["b"], "up": not (down and ln["id"] == "s1:pi1"),
                  "bps": 5e6 if ln["kind"] == "fabric" else 1e6, "util": 0.05} for ln in layout["links"]]
        samples.append({"t": float(t), "links": links, "switches": {"s1": True}, "totals": {}, "events": []})
    flows = [_flow(i, 0.5 * i, 0.4) for i in range(6)]
    scenario = [{"planned_s": 2.2, "applied_s": 2.201, "action": "link-down", "target": "s1-pi1", "params": "",
                 "status": "ok"},
                {"planned_s": 4.1, "applied_s": 4.102, "action": "link-up", "target": "s1-pi1", "params": "",
                 "status": "ok"}]
    directory.mkdir(parents=True, exist_ok=True)
    data = build_timeline(layout, samples, flows, scenario, {"name": "run </script>", "duration": 5.0,
                                                             "summary": {}})
    (directory / TIMELINE).write_text(json.dumps(data))
    return directory


def test_flow_counts_at_a_time():
    flows = [_flow(0, 0.0, 1.0), _flow(1, 0.5, None), _flow(2, 3.0, 0.1)]
    assert flow_counts(flows, 0.7) == {"started": 2, "in_flight": 2, "done": 0}
    assert flow_counts(flows, 1.5) == {"started": 2, "in_flight": 1, "done": 1}
    assert flow_counts(flows, 4.0) == {"started": 3, "in_flight": 1, "done": 2}


def test_timeline_marks_applied_times_of_scenario_events(tmp_path):
    data = json.loads((recorded_run(tmp_path) / TIMELINE).read_text())
    assert [e["t"] for e in data["scenario"]] == [2.201, 4.102]
    assert data["samples"][5]["flows"] == {"started": 6, "in_flight": 0, "done": 6}
    assert len(data["layout"]["links"]) == 8 and data["flows_total"] == 6


def test_export_is_one_file_that_names_no_url_and_forbids_the_network(tmp_path):
    text = render(recorded_run(tmp_path))
    assert "Content-Security-Policy" in text and "default-src 'none'" in text and "connect-src 'none'" in text
    assert not re.search(r"""\b(src|href)\s*=""", text), "an exported file must load nothing"
    assert not re.search(r"""url\(\s*['"]?(https?:)?//""", text)
    # The recording's "</script>" in a name must not end the data block early.
    data_block = text.split('<script type="application/json" id="picloud-run">')[1].split("</script>")[0]
    assert json.loads(data_block)["name"] == "run </script>"
    assert "function start(root, run)" in text  # replay.js inlined


def test_export_refuses_what_it_cannot_replay(tmp_path):
    with pytest.raises(UIError, match="no timeline.json"):
        render(tmp_path)
    with pytest.raises(UIError, match="must end in .html"):
        export(recorded_run(tmp_path / "r"), tmp_path / "x.txt")
