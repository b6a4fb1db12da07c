"""ovs-vswitchd's packet sockets (topology.effects.ovs_sockets): the `ss` parser on recorded output
and the buffer sizes the model's queues need (pure parts; the setsockopt itself runs in the
integration and bench runs)."""

from __future__ import annotations

from topology import tcplan
from topology.effects import ovs_sockets
from topology.effects.ovs_sockets import PacketSocket

# `ss -0 -a -e -m -p` on the build machine (2026-12-07), plus a packet socket of another process.
SS = """Netid State  Recv-Q Send-Q Local Address:Port    Peer Address:PortProcess
p_raw UNCONN 0      0    [0]:*                   *     users:(("ovs-vswitchd",pid=3718,fd=60)) ino:6969 sk:1
\tver:0 cpy_thresh:0 flags(  vnethdr ) skmem:(r0,rb212992,t1536,tb84194304,f0,w0,o0,bl0,d0)
p_raw UNCONN 0      0    *:pc2s2p1             *     users:(("ovs-vswitchd",pid=3718,fd=38)) ino:2399391 sk:1001
\tver:0 cpy_thresh:0 flags( running auxdata vnethdr ) skmem:(r0,rb212992,t0,tb212992,f0,w0,o176,bl0,d0)
p_raw UNCONN 0      0    *:pc2s2p3             *     users:(("ovs-vswitchd",pid=3718,fd=42)) ino:2399394 sk:1003
\tver:0 cpy_thresh:0 flags( running auxdata vnethdr ) skmem:(r0,rb212992,t0,tb212992,f0,w0,o176,bl0,d42)
p_raw UNCONN 0      0    *:eth9                *     users:(("tcpdump",pid=77,fd=3)) ino:5 sk:9
\tver:0 cpy_thresh:0 flags( running ) skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d5)
"""


def test_parse_ss_reads_ovs_vswitchds_sockets_only():
    assert ovs_sockets.parse_ss(SS, 3718) == [
        PacketSocket(None, 60, 212992, 84194304, 1536, 0),
        PacketSocket("pc2s2p1", 38, 212992, 212992, 0, 0),
        PacketSocket("pc2s2p3", 42, 212992, 212992, 0, 42),
    ]
    assert ovs_sockets.parse_ss(SS, 1) == []


def test_receive_buffer_holds_the_largest_queue_in_truesize_at_least_the_floor():
    # picloud's 100 Mbit/s uplinks: a 1.25 MB TBF queue (100 ms) -> 4 MB of truesize, about the floor
    q100 = tcplan.queue_bytes(tcplan.Shape(bw=100))
    assert q100 == 1_250_000
    assert ovs_sockets.rx_buffer([q100]) == max(4 << 20, int(3.2 * 1_250_000))
    q1000 = tcplan.queue_bytes(tcplan.Shape(bw=1000))  # 12.5 MB at 1 Gbit/s
    assert ovs_sockets.rx_buffer([q100, q1000]) == 40_000_000
    assert ovs_sockets.rx_buffer([]) == 4 << 20  # unshaped: the floor
    # Never below what the kernel gives: sizing only grows a buffer.
    assert ovs_sockets.rx_buffer([]) > ovs_sockets.KERNEL_DEFAULT


def test_send_buffer_holds_every_queue_of_the_run_at_once():
    queues = [tcplan.queue_bytes(tcplan.Shape(bw=100))] * 16  # picloud:2,4: 8 shaped links, 2 ends each
    assert ovs_sockets.tx_buffer(queues) == (4 << 20) + int(3.2 * 16 * 1_250_000)
    assert ovs_sockets.tx_buffer([]) == 4 << 20


def test_drops_without_ovs_is_empty():
    assert ovs_sockets.drops(None, ["x"]) == {} and ovs_sockets.size_buffers(None, ["x"], [1]) == {}
