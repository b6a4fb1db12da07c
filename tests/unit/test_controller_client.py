"""`picloud.controller_client.ControllerClient` against the real controller API (werkzeug on
loopback, the guard with a token): reads go without the token, changes carry it from the run's
0600 file, and every failure is one ControllerError line naming the route."""

from __future__ import annotations

import socket

import pytest

from controller_apps import api
from controller_apps.state import STATE
from picloud.controller_client import ControllerClient, ControllerHTTPError, routed
from picloud.errors import ControllerError
from picloud.httpguard import TOKEN_HEADER
from picloud.secrets_files import write_token

TOKEN = "client-unit-token"
FLOW = {"dpid": 77, "table_id": 0, "priority": 1, "match": {}, "actions": []}


@pytest.fixture
def server():
    STATE.reset()
    srv = api.ApiServer("127.0.0.1", 0, token=TOKEN).start()
    yield srv
    srv.stop()
    STATE.reset()


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "pc9.api-token"
    write_token(path, TOKEN)
    return str(path)


def test_reads_are_sent_without_the_token_and_decoded(server, token_file):
    client = ControllerClient(server.url, token_file)
    assert client.headers("GET") == {} and client.headers("POST") == {TOKEN_HEADER: TOKEN}
    state = client.get("/state")
    assert set(state) >= {"switches", "links", "hosts", "diff", "events"}
    assert client.get("/stats/switches") == []


def test_a_change_carries_the_token_from_the_run_file(server, token_file):
    """With the token the guard lets the request through to the route, which finds no switch 77;
    without it the guard refuses (401) before any route runs."""
    with pytest.raises(ControllerHTTPError, match=r"POST /stats/flowentry/add: HTTP 404") as found:
        ControllerClient(server.url, token_file).post("/stats/flowentry/add", FLOW)
    assert found.value.status == 404
    with pytest.raises(ControllerHTTPError) as refused:
        ControllerClient(server.url, None).post("/stats/flowentry/add", FLOW)
    assert refused.value.status == 401


def test_an_unreachable_api_and_a_bad_token_file_are_one_line_each(tmp_path):
    with socket.socket() as s:  # a port nobody listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(ControllerError, match=r"/state: unreachable \(ConnectionError\)"):
            ControllerClient(url).get("/state", timeout=2)
    with pytest.raises(ControllerError, match="controller API token file"):
        ControllerClient(url, str(tmp_path / "missing")).headers("POST")


def test_of_run_reads_the_run_state_controller_record(token_file):
    assert ControllerClient.of_run(None) is None
    assert ControllerClient.of_run({"mode": "none", "targets": []}) is None  # no controller of ours
    client = ControllerClient.of_run({"api": "http://127.0.0.1:8201/", "token_file": token_file})
    assert client is not None and client.api == "http://127.0.0.1:8201" and client.token == TOKEN


def test_routed_reads_readiness_facts_not_log_text():
    doc = {"ready": {"routing": {"generation": 2, "hosts": 4, "bridges": 6, "at": 20.0},
                     "discovery": {"matched_at": 10.0, "links": 5}}}
    assert routed(doc, 4, 6) and routed(doc, 3) and routed(doc, 4, since_match=True)
    assert not routed(doc, 5) and not routed(doc, 4, 7)
    assert not routed({"ready": {**doc["ready"], "discovery": {"matched_at": 25.0}}}, 4, since_match=True)
    assert not routed({"ready": {**doc["ready"], "discovery": {"matched_at": None}}}, 4, since_match=True)
    assert not routed({"events": [{"kind": "routing", "text": "paths for 4 hosts on 6 bridges"}]}, 4)
