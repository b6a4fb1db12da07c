"""Capture during a traffic run: one pcapng with named interfaces from two namespaces and the root
namespace, byte counts that match the agents', FCTs that match the engine's, drops reported."""

from __future__ import annotations

import subprocess

import pytest

from picloud.errors import TrafficError
from picloud.testbed import Testbed
from topology.builders import build
from traffic import capture_check, pcapng
from traffic.engine import AGENT_PORT, replay
from traffic.trace import Flow, Trace

pytestmark = pytest.mark.root


def test_capture_counts_match_the_agents_and_interfaces_keep_their_names(leaves_nothing, tmp_path):
    with Testbed(build("single:2"), controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        src, dst = tb.containers
        with pytest.raises(TrafficError, match="no such link"):
            tb.capture(["link:s1,nowhere"])
        with pytest.raises(TrafficError, match="capture filter"):
            tb.capture([dst], bpf="tcp prot 80")
        assert tb.ping_all()[src][dst] == 0
        sizes = [3_000, 200_000, 1_500_000, 40_000]
        trace = Trace([Flow(i, src, dst, size, 0.3 * i) for i, size in enumerate(sizes)],
                      {"duration": 1.2, "drain": 15.0})
        res = replay(tb, trace, tmp_path / "run", capture=[src, dst, "link:s1,pi2"])
        cap = res.meta["capture"]
        path = tmp_path / "run" / "capture.pcapng"
        assert cap["path"] == str(path) and path.is_file()
        names = [i["name"] for i in cap["interfaces"]]
        assert sorted(names) == sorted([src, dst, "s1>pi2", "pi2>s1"])
        in_file = pcapng.interfaces(path.read_bytes())
        assert sorted(i.name for i in in_file) == sorted(names), "mergecap lost or folded interface names"
        # Kernel drop counts are reported (a number, never hidden); at these rates there are none to excuse.
        assert all(i["dropped"] is not None for i in cap["interfaces"]), cap["interfaces"]
        # ... and are in the merged file, which mergecap left without its parts' statistics blocks
        assert {i.name: i.dropped for i in in_file} == {i["name"]: i["dropped"] for i in cap["interfaces"]}
        assert all(r.status == "done" for r in res.flows), [(r.status, r.error, r.bytes_received) for r in res.flows]
        seen = capture_check.connections(capture_check.read_packets(path), AGENT_PORT)
        for iface in names:
            mine = {s.flow_id: s for s in seen if s.iface == iface}
            assert sorted(mine) == list(range(len(sizes))), (iface, sorted(mine))
            for f in res.flows:
                # every byte the receiving agent counted crossed each captured point exactly once
                assert mine[f.id].client_bytes - capture_check.HEADER_BYTES == f.bytes_received == f.size, iface
        check = cap["check"]
        assert check["compared"] == len(sizes)
        # Physically: both clocks time the same packets on one host; 20 ms bounds scheduling noise
        # on a loaded machine (the bench reports the real p99 against the 1 ms target).
        assert check["abs_diff_us"]["max"] < 20_000, check
        assert "FCT engine vs capture" in res.report()
        tshark = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.interface_name"],
                                capture_output=True, text=True, timeout=120).stdout.split()
        assert set(tshark) == set(names)


def test_ui_link_capture_downloads_a_pcapng_with_both_ends(leaves_nothing, tmp_path):
    import threading
    import time

    import requests

    from webui.server import UIServer

    with Testbed(build("single:2"), controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        ui = UIServer(tb, port=0, token="t0ken", results=tmp_path / "results", record=False)
        try:
            base = ui.url.rstrip("/")
            url = f"{base}/api/links/s1/pi2/capture"
            headers = {"Origin": base}
            refused = requests.post(url, json={"seconds": 1}, headers=headers, timeout=30)
            assert refused.status_code == 401, refused.text[:300]
            src, dst = tb.containers
            pinger = threading.Thread(target=lambda: tb.exec(src, ["ping", "-c", "8", "-i", "0.2",
                                                                   tb.container_ip(dst)]))
            pinger.start()
            time.sleep(0.3)
            resp = requests.post(url, json={"seconds": 2}, headers={**headers, "X-PiCloud-Token": "t0ken"},
                                 timeout=60)
            pinger.join()
        finally:
            ui.stop()
        assert resp.status_code == 200, resp.text[:300]
        assert resp.headers["Content-Disposition"].startswith("attachment") and resp.headers[
            "X-PiCloud-Capture-Dropped"] == "0"
        ifs = pcapng.interfaces(resp.content)
        assert sorted(i.name for i in ifs) == ["pi2>s1", "s1>pi2"]
        assert all(i.packets >= 4 for i in ifs), [(i.name, i.packets) for i in ifs]  # pings both ways
        kept = list((tmp_path / "results" / "captures").glob("*.pcapng"))
        assert len(kept) == 1 and kept[0].read_bytes() == resp.content
