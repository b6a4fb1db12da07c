"""ovs-vswitchd opens its one AF_PACKET send socket on its first send, so a fabric built on a freshly
started daemon had none to size, and the first run after each start queued its shaped links in the
kernel's 208 KiB default. Checked on a daemon of our own, fresh for the test (the shared one has
long since sent something): no send socket after a port is added, one after open_send_socket, and
the inert frame it sends is dropped by the next hop's kernel."""

from __future__ import annotations

import json
import subprocess

import pytest

from bench.private_ovs import NS, PrivateOvs
from topology.effects import ovs, ovs_sockets

pytestmark = pytest.mark.root

BR, PORT, PEER_NS = "tdbsock", "tdbsockp", "tdbsockn"  # this test's own names (never a run prefix)


def private_sockets(pid: int) -> list[ovs_sockets.PacketSocket]:
    """The private daemon's packet sockets: it lives in namespace NS, where `ss` must look."""
    text = subprocess.run(["ip", "netns", "exec", NS, "ss", "-0", "-a", "-e", "-m", "-p"], capture_output=True,
                          text=True, check=True).stdout
    return ovs_sockets.parse_ss(text, pid)


def rx_packets(ns: str, iface: str) -> int:
    out = subprocess.run(["ip", "-n", ns, "-j", "-s", "link", "show", iface], capture_output=True, text=True,
                         check=True).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def test_a_fresh_daemon_opens_its_send_socket_on_the_inert_frame() -> None:
    with PrivateOvs() as private:
        subprocess.run(["ip", "netns", "add", PEER_NS], check=True)
        try:
            subprocess.run(["ip", "-n", NS, "link", "add", PORT, "type", "veth", "peer", "name", "eth0",
                            "netns", PEER_NS], check=True)
            # The kernel's own IPv6 frames (DAD, MLD, router solicitation) out of PORT arrive at
            # eth0 up to seconds after `up`, and a CI run counted two of them as the OVS frame's.
            subprocess.run(["ip", "netns", "exec", NS, "sysctl", "-qw", f"net.ipv6.conf.{PORT}.disable_ipv6=1"],
                           check=True)
            subprocess.run(["ip", "-n", NS, "link", "set", PORT, "up"], check=True)
            subprocess.run(["ip", "-n", PEER_NS, "link", "set", "eth0", "up"], check=True)
            private.vsctl("add-br", BR, "--", "set", "Bridge", BR, "datapath_type=netdev", "fail_mode=secure",
                          "--", "add-port", BR, PORT, "--", "set", "Interface", PORT, "ofport_request=7")
            pid = private.pids[-1]
            socks = private_sockets(pid)
            assert any(s.iface == PORT for s in socks)  # the port's receive socket exists at once...
            assert not any(s.iface is None for s in socks)  # ...the send socket does not, yet
            before = rx_packets(PEER_NS, "eth0")

            ovs.open_send_socket(BR, 7)

            assert any(s.iface is None for s in private_sockets(pid))
            assert rx_packets(PEER_NS, "eth0") == before + 1  # the one frame, out of the port asked for
        finally:
            subprocess.run(["ip", "netns", "del", PEER_NS], capture_output=True)
