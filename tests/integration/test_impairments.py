"""Link shapes on the real fabric: the Pi model's NIC rate lands on every Pi uplink as the tc plan
says, run-time shapes replace the old plan, and delay/loss hold within 10 % where the kernel has
netem (skipped elsewhere: a missing kernel feature cannot be installed)."""

from __future__ import annotations

import re
import subprocess

import pytest

from picloud.testbed import Testbed
from topology.builders import build
from topology.effects import tc

pytestmark = pytest.mark.root


def qdiscs(iface: str, netns: str | None = None) -> str:
    ns = ["-n", netns] if netns else []
    return subprocess.run(["tc", *ns, "qdisc", "show", "dev", iface], capture_output=True, text=True,
                          check=True).stdout


def test_picloud_pis_get_model_b_nic_rate_and_run_time_shapes_replace_it(leaves_nothing):
    with Testbed("picloud:1,2", controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        link = tb.topology.link("tor1", "pi1-1")
        assert link.bw == 100.0
        for end in (link.a, link.b):
            e = tb.fabric.end(end, link)
            assert re.search(r"tbf 1: root .*rate 100Mbit", qdiscs(e.iface, e.netns)), qdiscs(e.iface, e.netns)
        # The container's own link is inside the Pi: unshaped.
        inner = tb.topology.link("pi1-1", "pi1-1-c1")
        e = tb.fabric.end("pi1-1-c1", inner)
        assert "tbf" not in qdiscs(e.iface, e.netns)

        shaped = tb.link("tor1", "pi1-1").shape(25, queue=40)
        assert (shaped.bw, shaped.queue) == (25.0, 40)
        e = tb.fabric.end("tor1", link)
        # limit 40 frames = 60,560 B; tc shows it as latency: (60560 - 15137 B bucket) / 25 Mbit/s
        assert re.search(r"rate 25Mbit burst 1513\d+b lat 14.5ms", qdiscs(e.iface)), qdiscs(e.iface)
        assert tb.state.topology and any(ln.get("bw") == 25.0 for ln in tb.state.topology["links"])
        tb.link("tor1", "pi1-1").shape(None)
        assert "tbf" not in qdiscs(e.iface)


def _ping(tb: Testbed, src: str, dst: str, count: int) -> tuple[float, list[float]]:
    rc, out = tb.exec(src, ["ping", "-q", "-n", "-i", "0.005", "-c", str(count), "-W", "1", tb.container_ip(dst)],
                      timeout=count * 0.05 + 30)
    sent_recv = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert sent_recv, out
    sent, got = int(sent_recv[1]), int(sent_recv[2])
    rtt = re.search(r"= [\d.]+/([\d.]+)/", out)
    return 1 - got / sent, [float(rtt[1])] if rtt else []


def test_delay_and_loss_hold_within_ten_percent_where_netem_exists(leaves_nothing):
    if not tc.netem_available():
        pytest.skip(f"kernel feature netem missing: kernel {tc.kernel()} has no sch_netem; the tc plans are "
                    "unit-tested in tests/unit/test_tcplan.py")
    topo = build("linear:2", 1)
    with Testbed(topo, controller="none") as tb:
        leaves_nothing.append(tb.prefix)
        a, b = tb.containers[:2]
        # 10 ms each way on the s1-s2 link: RTT 20 ms plus the fabric's own (well under 1 ms).
        tb.link("s1", "s2").shape(delay="10ms")
        _, rtt = _ping(tb, a, b, 200)
        assert rtt and 20.0 <= rtt[0] <= 22.0, rtt
        # 10 % loss each way: a ping round trip survives with 0.9^2, so 19 % are lost. 3000 pings:
        # standard error 0.7 points, the 10 % band (17.1-20.9 %) is 2.7 standard errors wide.
        tb.link("s1", "s2").shape(delay=None, loss=10)
        lost, _ = _ping(tb, a, b, 3000)
        assert 0.171 <= lost <= 0.209, lost
