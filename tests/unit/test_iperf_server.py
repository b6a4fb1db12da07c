"""`traffic.iperf.start_server` returns only once iperf3 listens: a client started right after is
never refused (the fixed 0.3-0.4 s pauses it replaced lost that race on a loaded host)."""

from __future__ import annotations

import socket
import subprocess

import pytest

from picloud.errors import TrafficError
from traffic.iperf import start_server


def host_popen(_container: str, argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(argv, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_server_listens_when_start_returns():
    port = free_port()
    server = start_server(host_popen, "host", ["iperf3", "-s", "-1", "-p", str(port)])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # not refused
    finally:
        server.kill()
        server.wait()


def test_a_server_that_exits_instead_is_one_error_with_its_output():
    def broken(_container: str, _argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["sh", "-c", "echo 'iperf3: error - unable to start listener'; exit 1"], **kwargs)

    with pytest.raises(TrafficError, match="did not listen .*unable to start listener"):
        start_server(broken, "c1", ["iperf3", "-s"])
