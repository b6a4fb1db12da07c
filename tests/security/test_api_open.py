"""`--api-open`: Ryu's unauthenticated API for tutorials that curl it, and what it still refuses.
The documented curl calls (docs/API.md) are run as curl runs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.root


def curl(*args: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "-s", "-o", "/dev/stdout", "-w", "\n%{http_code}", *args],
                         capture_output=True, text=True, timeout=30).stdout
    body, _, code = out.rpartition("\n")
    return int(code), body


def test_open_api_takes_ryu_tutorial_calls_without_a_token_but_not_from_a_web_page():
    from picloud.testbed import Testbed

    with Testbed("single:2", controller=["l2_learning"], api_open=True) as tb:
        assert tb.state.controller["token_file"] is None
        dpid = tb.topology.dpid("s1")
        flow = json.dumps({"dpid": dpid, "priority": 4321, "cookie": 77, "match": {"in_port": 1},
                           "actions": [{"type": "OUTPUT", "port": 2}]})
        code, _ = curl("-X", "POST", "-H", "Content-Type: application/json", "-d", flow,
                       tb.controller_api + "/stats/flowentry/add")
        assert code == 200
        assert any(f["priority"] == 4321 for f in tb.flows("s1"))
        # still refused: a web page's kind of request (text/plain, foreign Origin) and a rebinding Host
        assert curl("-X", "POST", "-H", "Content-Type: text/plain", "-d", flow,
                    tb.controller_api + "/stats/flowentry/delete")[0] == 415
        assert curl("-X", "POST", "-H", "Content-Type: application/json", "-H", "Origin: http://evil.example",
                    "-d", flow, tb.controller_api + "/stats/flowentry/delete")[0] == 403
        assert curl("-H", "Host: attacker.example", tb.controller_api + "/state")[0] == 400
        assert any(f["priority"] == 4321 for f in tb.flows("s1"))
        log = Path(tb.state.controller["log"]).read_text()
        assert "is OPEN (--api-open)" in log


def test_token_api_takes_the_documented_curl_with_the_token_only():
    from picloud.testbed import Testbed

    with Testbed("single:2", controller=["l2_learning"]) as tb:
        token = Path(tb.state.controller["token_file"]).read_text().strip()
        dpid = tb.topology.dpid("s1")
        flow = json.dumps({"dpid": dpid, "priority": 4322, "match": {"in_port": 1},
                           "actions": [{"type": "OUTPUT", "port": 2}]})
        url = tb.controller_api + "/stats/flowentry/add"
        assert curl("-X", "POST", "-H", "Content-Type: application/json", "-d", flow, url)[0] == 401
        assert curl("-X", "POST", "-H", f"X-PiCloud-Token: {token}", "-H", "Content-Type: application/json",
                    "-d", flow, url)[0] == 200
        assert any(f["priority"] == 4322 for f in tb.flows("s1"))
        assert curl("-X", "DELETE", "-H", f"X-PiCloud-Token: {token}",
                    f"{tb.controller_api}/stats/flowentry/clear/{dpid}")[0] == 200
        assert not any(f["priority"] == 4322 for f in tb.flows("s1"))
