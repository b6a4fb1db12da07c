"""Discovery, pure parts: the LLDP codec, the link table (observe, contradict, port down, expire)
and what a packet-in teaches about hosts."""

from __future__ import annotations

from os_ken.lib.packet import arp, ether_types, ethernet, ipv4, packet, udp, vlan

from controller_apps import discovery as disc

A, B, C = 0xA1, 0xB2, 0xC3


def frame(*protocols) -> bytes:
    pkt = packet.Packet()
    for proto in protocols:
        pkt.add_protocol(proto)
    pkt.serialize()
    return bytes(pkt.data)


def test_lldp_probe_round_trips_sender_dpid_and_port():
    data = disc.lldp_frame(0xABCDEF012345, 17, "02:11:22:33:44:55")
    assert disc.parse_lldp(data) == (0xABCDEF012345, 17)
    eth = packet.Packet(data).get_protocol(ethernet.ethernet)
    assert eth.dst == "01:80:c2:00:00:0e" and eth.ethertype == ether_types.ETH_TYPE_LLDP


def test_foreign_lldp_and_other_frames_are_not_probes():
    ours = disc.lldp_frame(A, 1, "02:00:00:00:00:01")
    foreign = ours.replace(disc.SYSTEM_NAME, b"switchX")
    assert disc.parse_lldp(foreign) is None
    assert disc.parse_lldp(ours[:20]) is None
    arp_frame = frame(ethernet.ethernet("ff:ff:ff:ff:ff:ff", "02:00:00:00:00:01", ether_types.ETH_TYPE_ARP),
                      arp.arp(src_mac="02:00:00:00:00:01", src_ip="10.0.0.1", dst_ip="10.0.0.2"))
    assert disc.parse_lldp(arp_frame) is None


def test_one_direction_is_enough_and_both_directions_make_one_link():
    table = disc.LinkTable()
    assert table.observe((A, 1), (B, 2), now=0.0)
    assert not table.observe((B, 2), (A, 1), now=0.1)
    assert table.links() == [((A, 1), (B, 2))]
    assert table.fabric_ports() == {(A, 1), (B, 2)}


def test_a_port_down_removes_its_link_and_late_probes_do_not_bring_it_back():
    table = disc.LinkTable()
    table.observe((A, 1), (B, 2), 0.0)
    table.observe((A, 3), (C, 1), 0.0)
    assert table.port_down((B, 2), 0.1)
    assert table.links() == [((A, 3), (C, 1))]
    assert not table.observe((A, 1), (B, 2), 0.2)  # a probe that was in flight when the port died
    table.port_up((B, 2))
    assert table.observe((A, 1), (B, 2), 0.3)


def test_a_probe_long_after_a_down_mark_proves_the_port_up():
    """The port-status 'up' can be lost (sent before the connection was ready); probes through
    the port, long after it was marked down, are not in flight and correct the mark."""
    table = disc.LinkTable()
    table.port_down((B, 2), 0.0)
    assert not table.observe((A, 1), (B, 2), disc.STALE_DOWN / 2)
    assert table.observe((A, 1), (B, 2), disc.STALE_DOWN + 0.1)
    assert (B, 2) not in table.down


def test_links_unconfirmed_for_the_timeout_and_missing_from_the_last_rounds_expire():
    table = disc.LinkTable()
    table.observe((A, 1), (B, 2), 0.0)
    for t in (1.0, 2.0, 3.0):  # rounds whose probes only confirm A-C
        table.probed(t)
        table.observe((A, 3), (C, 1), t + 0.01)
    assert not table.expire(3.0)
    assert table.expire(0.0 + disc.LINK_TIMEOUT + 0.01)
    assert table.links() == [((A, 3), (C, 1))]


def test_a_stalled_controller_does_not_declare_every_link_dead():
    """A loaded host starves the controller for seconds; the prober then wakes before the probes
    queued meanwhile are read. Links confirmed in the rounds before the stall stay: only a link that
    missed the replies to the last MISSED_ROUNDS rounds is gone, however long the stall."""
    table = disc.LinkTable()
    for t in (0.0, 1.0, 2.0):
        table.probed(t)
        table.observe((A, 1), (B, 2), t + 0.01)
    assert not table.expire(12.0)  # ten seconds without the prober or the packet-in handler
    assert table.links() == [((A, 1), (B, 2))]
    for t in (12.0, 13.0, 14.0):  # three more rounds that A-C answers and A-B does not: gone
        assert not table.expire(t)
        table.probed(t)
        table.observe((A, 3), (C, 1), t + 0.01)
    assert table.expire(15.0) and table.links() == [((A, 3), (C, 1))]


def test_replies_read_late_are_not_mistaken_for_missing_ones():
    """The 1,000-container failure: routing held the controller for seconds, the prober kept
    sending rounds, and the replies queued behind routing's work. Until a reply to the newest round
    has been read, no link expires; a reply read late counts for the round it answered."""
    table = disc.LinkTable()
    for t in (0.0, 1.0, 2.0):
        table.probed(t)
        table.observe((A, 1), (B, 2), t + 0.01)
        table.observe((A, 3), (C, 1), t + 0.01)
    for t in (3.0, 4.0, 5.0, 6.0):  # rounds sent while nothing is read
        assert not table.expire(t)
        table.probed(t)
    # At 9.0 the backlog drains: A-C's reply to round 3.0 is read, A-B's is still queued.
    table.observe((A, 3), (C, 1), 9.0, sent=3.0)
    assert not table.expire(9.0)  # nothing read yet from the newest round (6.0): still behind
    table.observe((A, 1), (B, 2), 9.1, sent=3.0)
    table.observe((A, 3), (C, 1), 9.2, sent=6.0)
    assert not table.expire(9.3)  # current again (6.0 answered); A-B's late reply, read at 9.1, keeps it
    assert table.links() == [((A, 1), (B, 2)), ((A, 3), (C, 1))]


def test_probes_carry_their_send_time():
    frame = disc.lldp_frame(A, 7, "02:00:00:00:00:01", sent=1234.5)
    assert disc.parse_lldp(frame) == (A, 7) and disc.probe_sent_at(frame) == 1234.5
    assert disc.probe_sent_at(disc.lldp_frame(A, 7, "02:00:00:00:00:01")) is None


def test_a_recabled_port_forgets_its_old_neighbour():
    table = disc.LinkTable()
    table.observe((A, 1), (B, 2), 0.0)
    table.observe((A, 1), (C, 4), 1.0)
    assert table.links() == [((A, 1), (C, 4))]


def test_a_switch_leaving_takes_its_links():
    table = disc.LinkTable()
    table.observe((A, 1), (B, 2), 0.0)
    table.observe((B, 3), (C, 1), 0.0)
    assert table.switch_gone(B)
    assert table.links() == []


def test_hosts_are_learned_from_untagged_unicast_senders_with_their_ip():
    src = "02:00:00:00:00:07"
    request = frame(ethernet.ethernet("ff:ff:ff:ff:ff:ff", src, ether_types.ETH_TYPE_ARP),
                    arp.arp(src_mac=src, src_ip="10.0.0.7", dst_ip="10.0.0.2"))
    assert disc.host_from_packet(request) == (src, "10.0.0.7")
    datagram = frame(ethernet.ethernet("02:00:00:00:00:02", src, ether_types.ETH_TYPE_IP),
                     ipv4.ipv4(src="10.0.0.7", dst="10.0.0.2", proto=17), udp.udp(1, 2))
    assert disc.host_from_packet(datagram) == (src, "10.0.0.7")
    probe = frame(ethernet.ethernet("ff:ff:ff:ff:ff:ff", src, ether_types.ETH_TYPE_ARP),
                  arp.arp(src_mac=src, src_ip="0.0.0.0", dst_ip="10.0.0.7"))  # duplicate-address probe
    assert disc.host_from_packet(probe) == (src, None)


def test_tagged_multicast_sourced_and_lldp_frames_teach_nothing():
    tagged = frame(ethernet.ethernet("02:00:00:00:00:02", "0a:00:00:00:00:07", ether_types.ETH_TYPE_8021Q),
                   vlan.vlan(vid=5, ethertype=ether_types.ETH_TYPE_IP),
                   ipv4.ipv4(src="10.1.0.7", dst="10.1.0.2", proto=17), udp.udp(1, 2))
    assert disc.host_from_packet(tagged) is None
    bogus = frame(ethernet.ethernet("02:00:00:00:00:02", "03:00:00:00:00:07", ether_types.ETH_TYPE_IP),
                  ipv4.ipv4(src="10.0.0.7", dst="10.0.0.2", proto=17), udp.udp(1, 2))
    assert disc.host_from_packet(bogus) is None
    assert disc.host_from_packet(disc.lldp_frame(A, 1, "02:00:00:00:00:01")) is None
