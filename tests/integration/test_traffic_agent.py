"""The agent and the web client on loopback (no root): protocol, closed loop, deadlines, errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from traffic.agent_wire import ACK, HEADER

REPO = Path(__file__).resolve().parents[2]


def _agent() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "traffic.agent", "--port", "0"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    assert ready["ev"] == "ready"
    return proc, ready["port"]


def _finish(proc: subprocess.Popen) -> list[dict]:
    out, _ = proc.communicate("stop\n", timeout=30)
    return [json.loads(line) for line in out.splitlines()]


def test_flows_closed_loop_successors_and_deadline() -> None:
    server, port = _agent()
    client, _ = _agent()
    try:
        t0 = time.monotonic() + 0.3
        flows = [
            {"id": 0, "dst": "127.0.0.1", "port": port, "size": 1, "start": 0.0, "after": -1},
            {"id": 1, "dst": "127.0.0.1", "port": port, "size": 5_000_000, "start": 0.05, "after": -1},
            {"id": 2, "dst": "127.0.0.1", "port": port, "size": 1000, "start": 0.01, "after": 0},  # after 0
            {"id": 3, "dst": "127.0.0.1", "port": 1, "size": 10, "start": 0.1, "after": -1},  # refused
            {"id": 4, "dst": "127.0.0.1", "port": port, "size": 10, "start": 5.0, "after": -1},  # late
            {"id": 5, "dst": "127.0.0.1", "port": port, "size": 10, "start": 1.5, "after": 1},  # too late
        ]
        assert client.stdin is not None and client.stdout is not None
        config = {"t0": t0, "deadline": t0 + 2.0, "last_start": t0 + 1.0, "flows": flows}
        client.stdin.write(json.dumps(config) + "\n")
        client.stdin.flush()
        records = []
        while True:
            rec = json.loads(client.stdout.readline())
            records.append(rec)
            if rec["ev"] == "client_done":
                break
    finally:
        client_rest = _finish(client)
        server_records = _finish(server)
    by_id = {r["id"]: r for r in records if r["ev"] == "flow"}
    assert by_id[0]["status"] == by_id[1]["status"] == by_id[2]["status"] == "done"
    assert by_id[3]["status"] == "error" and "ConnectionRefused" in by_id[3]["error"]
    assert by_id[4]["status"] == by_id[5]["status"] == "not_started"
    # The successor started after its predecessor finished, plus its think time.
    assert by_id[2]["start"] >= by_id[0]["start"] + by_id[0]["fct_us"] / 1e6 + 0.01
    assert all(r["lateness_us"] < 50_000 for r in by_id.values() if r["lateness_us"] is not None)
    received = {r["id"]: r["bytes"] for r in server_records if r["ev"] == "recv"}
    assert received == {0: 1, 1: 5_000_000, 2: 1000}
    assert client_rest[-1]["ev"] == "bye"


def _run_client(flows: list[dict], seconds: float) -> list[dict]:
    client, _ = _agent()
    try:
        t0 = time.monotonic() + 0.3
        assert client.stdin is not None and client.stdout is not None
        config = {"t0": t0, "deadline": t0 + seconds, "last_start": t0 + seconds * 0.8, "flows": flows}
        client.stdin.write(json.dumps(config) + "\n")
        client.stdin.flush()
        records = []
        while not records or records[-1]["ev"] != "client_done":
            records.append(json.loads(client.stdout.readline()))
    finally:
        _finish(client)
    return records


def test_flows_reuse_pooled_connections() -> None:
    server, port = _agent()
    try:
        flows = [{"id": i, "dst": "127.0.0.1", "port": port, "size": 1000, "start": 0.005 * i, "after": -1}
                 for i in range(200)]
        records = _run_client(flows, 3.0)
    finally:
        server_records = _finish(server)
    assert sorted(r["id"] for r in records if r["ev"] == "flow" and r["status"] == "done") == list(range(200))
    assert {r["id"]: r["bytes"] for r in server_records if r["ev"] == "recv"} == {i: 1000 for i in range(200)}
    # One flow every 5 ms against exchanges of well under a millisecond: a pool that opened a connection
    # per flow would show 200; a few cover it, and even a host that stalls the agent for 100 ms (20
    # flows due at once) stays far below half.
    assert records[-1]["connections"] < 100, records[-1]


def test_a_stalled_flow_does_not_hold_up_the_flows_after_it() -> None:
    """Head-of-line: a receiver that stops reading one connection (the flow of 10 MB) must not stop
    the small flows to the same destination that start after it; they finish on other connections."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            while True:
                header = conn.recv(HEADER.size, socket.MSG_WAITALL)
                if len(header) < HEADER.size:
                    return
                flow_id, size = HEADER.unpack(header)
                if size > 1_000_000:  # the stalled flow: stop reading, hold the connection open
                    held.append(conn)
                    time.sleep(10)
                    return
                got = 0
                while got < size:
                    got += len(conn.recv(size - got))
                conn.sendall(ACK.pack(flow_id, got))

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        flows = [{"id": 0, "dst": "127.0.0.1", "port": port, "size": 10_000_000, "start": 0.0, "after": -1}]
        flows += [{"id": i, "dst": "127.0.0.1", "port": port, "size": 2000, "start": 0.1 + 0.02 * i, "after": -1}
                  for i in range(1, 6)]
        records = _run_client(flows, 1.5)
    finally:
        listener.close()
    by_id = {r["id"]: r for r in records if r["ev"] == "flow"}
    assert by_id[0]["status"] == "unfinished" and by_id[0]["sent"] < 10_000_000
    assert all(by_id[i]["status"] == "done" for i in range(1, 6)), by_id
    assert len(held) == 1


def test_web_client_counts_refused_connections_as_errors() -> None:
    out = subprocess.run([sys.executable, "-m", "traffic.web", "client", "--targets", "127.0.0.1:1",
                          "--rate", "50", "--duration", "0.5"], capture_output=True, text=True, cwd=REPO,
                         timeout=30, check=True).stdout
    result = json.loads(out.splitlines()[-1])
    assert result["requests"] == 25 and result["replies"] == 0
    assert result["errors"] == {"refused": 25}
