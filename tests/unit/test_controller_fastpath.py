"""The controller's fast path (controller_apps/fastpath.py) against os-ken and scapy.

What it protects: the header parser reads packet-ins and frames exactly as os-ken's parsers read
them (checked against scapy-built packets and os-ken's own parse), hostile frames (truncated at
every length, stacked VLAN tags, IPv6, junk) never raise and never read as ARP or LLDP they are not;
every fast handler sends the very bytes its os-ken handler sends for the same packet-in; and the
receive loop answers a read's packet-ins in one send per datapath, in order, flushing before any
other message, while apps without a fast handler still get os-ken's event.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import threading
from types import SimpleNamespace

import pytest
from flowtable import FakeDatapath
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER
from os_ken.lib.packet import arp, ether_types, ethernet, packet, vlan
from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from controller_apps import discovery as disc
from controller_apps import fastpath
from controller_apps import flows as fl
from controller_apps import routing_rules as rr
from controller_apps.l2_learning import L2Learning
from controller_apps.pipeline import COOKIE_ROUTING, COOKIE_TENANCY, TABLE_ARP, cookie
from controller_apps.routing import Routing, arp_reply
from controller_apps.state import ControllerState

A, B, C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
NO_BUFFER = ofp.OFP_NO_BUFFER


def raw_packet_in(frame: bytes, in_port: int | None = 3, buffer_id: int = NO_BUFFER, reason: int = 0,
                  table_id: int = 0, cookie_value: int = 0, before: bytes = b"", after: bytes = b"",
                  total_len: int | None = None, xid: int = 7) -> bytes:
    """OFPT_PACKET_IN (OF1.3 7.4.1) built by hand: OXMs `before` and `after` the in_port OXM."""
    oxms = before + (struct.pack("!HBBI", 0x8000, 0, 4, in_port) if in_port is not None else b"") + after
    match = struct.pack("!HH", 1, 4 + len(oxms)) + oxms
    match += bytes(-len(match) % 8)
    body = struct.pack("!IHBBQ", buffer_id, len(frame) if total_len is None else total_len, reason, table_id,
                       cookie_value) + match + b"\x00\x00" + frame
    return struct.pack("!BBHI", 4, 10, 8 + len(body), xid) + body


def os_ken_parse(raw: bytes, dp=None):
    version, msg_type, length, xid = struct.unpack_from("!BBHI", raw)
    return ofproto_parser.msg(dp or FakeDatapath(), version, msg_type, length, xid, bytearray(raw))


METADATA = struct.pack("!HBBQ", 0x8000, 2 << 1, 8, 0x1122334455667788)  # OXM metadata
TUNNEL = struct.pack("!HBBQ", 0x8000, 38 << 1, 8, 42)  # OXM tunnel_id
REG0 = struct.pack("!HBBI", 0x0001, 0 << 1, 4, 99)  # NXM reg0 (class 1): not in_port, whatever its field

# --- a corpus of frames, benign and hostile -------------------------------------------------------
ours = disc.lldp_frame(0xABCDEF, 5, "02:00:00:00:aa:05", 12.5)


def corpus() -> list[bytes]:
    frames = [
        bytes(Ether(src=A, dst=B) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / (b"x" * 20)),
        bytes(Ether(src=A, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=A, psrc="10.0.0.1", pdst="10.0.0.2")),
        bytes(Ether(src=A, dst=B) / ARP(op=2, hwsrc=A, psrc="10.0.0.1", hwdst=B, pdst="10.0.0.2")),
        bytes(Ether(src=A, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=5) / ARP(op=1, hwsrc=A, psrc="10.0.0.1",
                                                                         pdst="10.0.0.2")),
        bytes(Ether(src=A, dst="ff:ff:ff:ff:ff:ff") / Dot1AD(vlan=7) / Dot1Q(vlan=5)
              / ARP(op=1, hwsrc=A, psrc="10.0.0.1", pdst="10.0.0.2")),
        bytes(Ether(src=A, dst="ff:ff:ff:ff:ff:ff") / Dot1AD(vlan=7) / ARP(op=1, hwsrc=A, psrc="10.0.0.1",
                                                                          pdst="10.0.0.2")),
        bytes(Ether(src=A, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=5) / Dot1Q(vlan=6)
              / ARP(op=1, hwsrc=A, psrc="10.0.0.1", pdst="10.0.0.2")),
        bytes(Ether(src=A, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=5) / Dot1AD(vlan=6)
              / ARP(op=1, hwsrc=A, psrc="10.0.0.1", pdst="10.0.0.2")),
        bytes(Ether(src=A, dst=B) / Dot1Q(vlan=9) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP()),
        bytes(Ether(src=A, dst="33:33:00:00:00:01") / IPv6(src="fe80::1", dst="ff02::1") / ICMPv6EchoRequest()),
        bytes(Ether(src=A, dst=B) / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2)),
        bytes(Ether(src="01:00:5e:00:00:01", dst=B) / IP(src="10.0.0.1", dst="10.0.0.2")),  # multicast source
        bytes(Ether(src="00:00:00:00:00:00", dst=B) / ARP(op=1, psrc="0.0.0.0", pdst="10.0.0.2")),
        bytes(Ether(src=A, dst=B) / IP(src="224.0.0.5", dst="10.0.0.2")),
        bytes(Ether(src=A, dst=B, type=0x0800) / (b"\x60" + bytes(40))),  # "IPv4" whose version says 6
        bytes(Ether(src=A, dst=B, type=0x05DC) / bytes(30)),  # 802.3 length, not a type
        ours,
        bytes(Ether(src=A, dst="01:80:c2:00:00:0e") / Dot1Q(vlan=3, type=0x88CC)) + ours[14:],  # tagged probe
        bytes(Ether(src=A, dst="01:80:c2:00:00:0e", type=0x88CC) / bytes(30)),  # LLDP that is not ours
    ]
    rng = random.Random(15)
    frames += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80))) for _ in range(60)]
    frames += [f[:14] + bytes([0x08, 0x06]) + f[16:] for f in frames[:3]]  # ethertype rewritten to ARP
    return frames


def truncations(frames: list[bytes]) -> list[bytes]:
    return [f[:n] for f in frames for n in range(len(f) + 1)]


CORPUS = corpus()
EVERYTHING = truncations(CORPUS)


# --- the packet-in header --------------------------------------------------------------------------
@pytest.mark.parametrize("before,after", [(b"", b""), (METADATA, b""), (METADATA + TUNNEL, REG0), (REG0, METADATA)])
def test_packet_in_header_is_read_as_os_ken_reads_it(before, after):
    for i, frame in enumerate(CORPUS):
        raw = raw_packet_in(frame, in_port=1 + i, buffer_id=[NO_BUFFER, 0x105][i % 2], reason=i % 3, table_id=i % 4,
                            cookie_value=cookie(COOKIE_TENANCY, i), before=before, after=after)
        msg, pin = os_ken_parse(raw), fastpath.parse_packet_in(raw)
        assert pin is not None
        assert (pin.buffer_id, pin.total_len, pin.reason, pin.table_id, pin.cookie, pin.in_port) == (
            msg.buffer_id, msg.total_len, msg.reason, msg.table_id, msg.cookie, msg.match["in_port"])
        assert pin.data == bytes(msg.data) == frame


def test_packet_in_inside_a_larger_read_and_with_padding_past_total_len():
    one, two = raw_packet_in(CORPUS[0], in_port=1), raw_packet_in(CORPUS[1], in_port=2, total_len=len(CORPUS[1]) - 4)
    buf = bytearray(b"junk" + one + two)
    assert fastpath.parse_packet_in(buf, 4, len(one)).in_port == 1
    second = fastpath.parse_packet_in(buf, 4 + len(one), len(two))
    assert second.in_port == 2 and second.data == CORPUS[1][:-4]  # cut to total_len, as os-ken does


def test_malformed_packet_ins_are_refused_without_raising():
    raw = raw_packet_in(CORPUS[0], before=METADATA)
    for n in range(len(raw)):  # every truncation, with the length field saying so
        cut = raw[:2] + struct.pack("!H", n) + raw[4:n]
        pin = fastpath.parse_packet_in(cut, 0, n)
        assert pin is None or len(pin.data) <= n
    assert fastpath.parse_packet_in(raw[:30], 0, len(raw)) is None  # the message runs past the buffer
    overrun = bytearray(raw)
    struct.pack_into("!H", overrun, 26, 200)  # match length past the message
    assert fastpath.parse_packet_in(overrun) is None
    bad_oxm = bytearray(raw)
    bad_oxm[31] = 60  # the first OXM claims 60 bytes, more than the match holds
    assert fastpath.parse_packet_in(bad_oxm) is None
    standard = bytearray(raw)
    struct.pack_into("!H", standard, 24, 0)  # OFPMT_STANDARD: not an OF1.3 packet-in match
    assert fastpath.parse_packet_in(standard) is None
    no_port = fastpath.parse_packet_in(raw_packet_in(CORPUS[0], in_port=None, before=METADATA))
    assert no_port is not None and no_port.in_port is None  # apps then answer nothing
    twice = fastpath.parse_packet_in(raw_packet_in(CORPUS[0], in_port=4, after=struct.pack("!HBBI", 0x8000, 0, 4, 9)))
    assert twice.in_port == 4  # a second in_port OXM cannot override the first, as in os-ken's dict


# --- frames ---------------------------------------------------------------------------------------
def test_frame_header_fields_match_what_scapy_built():
    untagged = fastpath.parse_frame(CORPUS[0])
    assert (untagged.src, untagged.dst, untagged.vid, untagged.tagged, untagged.ethertype, untagged.payload) == (
        fastpath.mac_bytes(A), fastpath.mac_bytes(B), None, False, 0x0800, 14)
    tagged = fastpath.parse_frame(CORPUS[3])
    assert (tagged.vid, tagged.tagged, tagged.ethertype, tagged.payload) == (5, True, 0x0806, 18)
    request = fastpath.parse_arp(CORPUS[3], tagged)
    assert (request.opcode, request.sha, socket.inet_ntoa(request.spa), socket.inet_ntoa(request.tpa)) == (
        1, fastpath.mac_bytes(A), "10.0.0.1", "10.0.0.2")
    qinq = fastpath.parse_frame(CORPUS[4])
    assert (qinq.vid, qinq.ethertype, qinq.payload) == (5, 0x0806, 22)  # the C-tag's VLAN, inside the S-tag
    s_only, two_c, c_then_s = (fastpath.parse_frame(f) for f in CORPUS[5:8])
    assert (s_only.vid, s_only.tagged, s_only.payload) == (None, True, 18)  # an S-tag is no 802.1Q VLAN
    assert (two_c.vid, two_c.payload) == (5, 22) and (c_then_s.vid, c_then_s.payload) == (5, 22)  # the first C-tag
    assert {f.ethertype for f in (s_only, two_c, c_then_s)} == {0x0806}  # stacks walked as os-ken walks them
    v6 = fastpath.parse_frame(CORPUS[9])
    assert (v6.ethertype, v6.vid, v6.dst) == (0x86DD, None, bytes.fromhex("333300000001"))


def test_every_truncation_and_junk_frame_parses_or_is_refused_without_raising():
    for data in EVERYTHING:
        frame = fastpath.parse_frame(data)
        if frame is None:
            assert len(data) < 22
            continue
        assert frame.payload <= len(data)
        request = fastpath.parse_arp(data, frame)
        assert request is None or (frame.ethertype == 0x0806 and len(data) >= frame.payload + 28)


# --- the same decisions as os-ken's full parse ------------------------------------------------------
def os_ken_arp_reply(request: bytes, hosts: list[dict]) -> tuple[bytes, str, str] | None:
    """routing.arp_reply as it was, on os-ken's full parse: the oracle. Where os-ken's parser
    raised (junk that looks like 802.3 LLC), the old handler sent nothing: None."""
    try:
        pkt = packet.Packet(request)
    except Exception:
        return None
    eth, req = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(arp.arp)
    if eth is None or req is None or req.opcode != arp.ARP_REQUEST or pkt.get_protocol(vlan.vlan) is not None:
        return None
    host = next((h for h in hosts if h["ip"] == req.dst_ip and not h.get("tag")), None)
    if host is None:
        return None
    reply = packet.Packet()
    reply.add_protocol(ethernet.ethernet(dst=eth.src, src=host["mac"], ethertype=ether_types.ETH_TYPE_ARP))
    reply.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=host["mac"], src_ip=host["ip"],
                               dst_mac=req.src_mac, dst_ip=req.src_ip))
    reply.serialize()
    return bytes(reply.data), host.get("name") or host["mac"], host["ip"]


def os_ken_tenant_request(data: bytes) -> tuple[int, str, str, str] | None:
    """What the tenancy app read from a packet-in with os-ken's full parse: the oracle (None where
    os-ken's parser raised and the old handler sent nothing)."""
    try:
        pkt = packet.Packet(data)
    except Exception:
        return None
    eth, tag, req = pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(vlan.vlan), pkt.get_protocol(arp.arp)
    if eth is None or tag is None or req is None or req.opcode != arp.ARP_REQUEST:
        return None
    return tag.vid, req.src_mac, req.src_ip, req.dst_ip


def fast_tenant_request(data: bytes) -> tuple[int, str, str, str] | None:
    frame = fastpath.parse_frame(data)
    req = fastpath.parse_arp(data, frame) if frame is not None and frame.vid is not None else None
    if req is None or req.opcode != 1:
        return None
    return frame.vid, req.sha.hex(":"), socket.inet_ntoa(req.spa), socket.inet_ntoa(req.tpa)


def os_ken_host_from_packet(data: bytes) -> tuple[str, str | None] | None:
    """discovery.host_from_packet as it was (ipaddress for the IP checks): the oracle."""
    if len(data) < 14:
        return None
    src, ethertype = data[6:12], int.from_bytes(data[12:14], "big")
    if ethertype in (0x88CC, 0x8100) or src[0] & 1 or not any(src):
        return None
    ip = None
    if ethertype == 0x0806 and len(data) >= 42:
        ip = str(ipaddress.IPv4Address(data[28:32]))
    elif ethertype == 0x0800 and len(data) >= 34 and data[14] >> 4 == 4:
        ip = str(ipaddress.IPv4Address(data[26:30]))
    if ip is not None and (ip == "0.0.0.0" or ipaddress.ip_address(ip).is_multicast):
        ip = None
    return src.hex(":"), ip


HOSTS = [{"mac": B, "ip": "10.0.0.2", "name": "b", "tag": 0}, {"mac": C, "ip": "10.0.0.1", "name": None, "tag": 5}]


def test_header_reads_decide_as_os_ken_full_parse_did_on_every_frame():
    answered = raised = 0
    for data in EVERYTHING:
        try:
            packet.Packet(data)
        except Exception:
            raised += 1  # the old handlers raised on these; the header reads simply say "not ARP"
        expected = os_ken_arp_reply(data, HOSTS)
        assert arp_reply(data, HOSTS) == expected, data.hex()
        answered += expected is not None
        assert fast_tenant_request(data) == os_ken_tenant_request(data), data.hex()
        assert disc.host_from_packet(data) == os_ken_host_from_packet(data), data.hex()
        frame = fastpath.parse_frame(data)
        gate = frame is not None and frame.ethertype == fastpath.ETH_TYPE_LLDP
        assert (disc.parse_lldp(data) if gate else None) == disc.parse_lldp(data), data.hex()
    assert answered >= 1  # the untagged request for 10.0.0.2 is answered, by both
    assert raised >= 1  # the corpus holds frames that made os-ken's parser raise
    assert disc.parse_lldp(CORPUS[17]) == (0xABCDEF, 5)  # a tagged probe is still a probe, as before


def test_ip_addresses_read_from_headers_never_name_nobody():
    arp_any = bytes(Ether(src=A, dst=B) / ARP(op=1, hwsrc=A, psrc="239.1.2.3", pdst="10.0.0.2"))
    assert disc.host_from_packet(arp_any) == (A, None)  # multicast is not a host's address
    assert disc.host_from_packet(CORPUS[12]) is None  # all-zero source MAC
    assert disc.host_from_packet(CORPUS[14]) == (A, None)  # "IPv4" whose version nibble is 6


# --- fast handlers send what the os-ken handlers send -----------------------------------------------
def fast_and_slow(app_slow, app_fast, slow_handler: str, raws: list[bytes], dpid: int = 1):
    """Run each raw packet-in through the os-ken handler of one app and the fast handler of a twin;
    return (slow bytes, fast bytes) per packet-in, xids blanked (each side numbers its own)."""
    slow_dp, fast_dp = FakeDatapath(dpid), FakeDatapath(dpid)
    fast_dp.xid = 0
    pairs = []
    for raw in raws:
        slow_dp.sent.clear()
        getattr(app_slow, slow_handler)(ofp_event.EventOFPPacketIn(os_ken_parse(raw, slow_dp)))
        out: list[bytes] = []
        pin = fastpath.parse_packet_in(raw)
        app_fast.fast_packet_in(fast_dp, pin, out)
        pairs.append(([_no_xid(bytes(m.buf)) for m in slow_dp.sent], [_no_xid(m) for m in out]))
    return pairs


def _no_xid(message: bytes) -> bytes:
    return message[:4] + message[8:]


def test_l2_learning_fast_path_sends_the_same_bytes():
    frames = [bytes(Ether(src=s, dst=d) / IP() / UDP()) for s, d in [(A, B), (B, A), (A, B), (C, A), (A, C), (B, C)]]
    raws = [raw_packet_in(f, in_port=1 + i % 3, buffer_id=[NO_BUFFER, 0x200 + i][i % 2]) for i, f in enumerate(frames)]
    raws += [raw_packet_in(ours, in_port=1)]  # LLDP: neither answers
    slow, fast = L2Learning(), L2Learning()
    pairs = fast_and_slow(slow, fast, "packet_in_handler", raws)
    for slow_bytes, fast_bytes in pairs:
        assert fast_bytes == slow_bytes
    # flood; then known destinations: a buffered flow-mod alone, or a flow-mod and a packet-out
    assert [len(s) for s, _ in pairs] == [1, 1, 2, 1, 2, 1, 0]
    assert slow.mac_to_port == fast.mac_to_port


def routing_app() -> Routing:
    state = ControllerState()
    state.add_host(B, "10.0.0.2", 1, 2, name="b")
    state.add_host(A, "10.0.0.1", 1, 1, name="a")
    app = Routing(state=state)
    known = [rr.Host(B, "10.0.0.2", 1, 2)]  # routed, its forward rule sent; no ARP answers sent
    app.routed = rr.Routed(known)
    app.installed[1] = fl.SwitchRules(flows={f.key: f for f in rr._into_egress(known)})
    return app


def test_routing_fast_path_sends_the_same_bytes():
    raws = []
    for i, data in enumerate(CORPUS + truncations(CORPUS[:4])):
        for table in (0, TABLE_ARP, 2, 3):
            raws.append(raw_packet_in(data, in_port=1 + i % 4, buffer_id=[NO_BUFFER, 0x300 + i][i % 2],
                                      reason=i % 2, table_id=table))
    pairs = fast_and_slow(routing_app(), routing_app(), "packet_in", raws)
    for (slow_bytes, fast_bytes), raw in zip(pairs, raws, strict=True):
        assert fast_bytes == slow_bytes, raw.hex()
    kinds = {len(s) for s, _ in pairs}
    assert kinds == {0, 1}  # answered or not, never more than one message
    assert sum(len(s) for s, _ in pairs) >= 20  # resubmits, buffer releases and ARP answers were compared


def test_tenancy_fast_path_sends_the_same_bytes(tmp_path):
    from test_tenants_app import arp_request, tenancy_running

    from topology.model import dpid

    with tenancy_running(tmp_path) as app:
        blue, red = app.plan.tenant("blue"), app.plan.tenant("red")
        b1, b2, r1 = blue.member("blue-1"), blue.member("blue-2"), red.member("red-1")
        frames = [arp_request(blue.id, b1.mac, b1.ip, b2.ip), arp_request(red.id, r1.mac, r1.ip, b2.ip),
                  arp_request(blue.id, b1.mac, b1.ip, "10.9.0.9")] + CORPUS
        raws = [raw_packet_in(f, in_port=b1.port, cookie_value=ck) for f in frames
                for ck in (cookie(COOKIE_TENANCY, blue.id), cookie(COOKIE_TENANCY, red.id), COOKIE_ROUTING)]
        pairs = fast_and_slow(app, app, "packet_in_handler", raws, dpid(b1.pi))
    for slow_bytes, fast_bytes in pairs:
        assert fast_bytes == slow_bytes
    assert sum(len(s) for s, _ in pairs) >= 2  # blue's and red's questions were answered by both


def test_discovery_fast_path_learns_and_observes_as_the_os_ken_handler():
    def discovery() -> disc.Discovery:
        return disc.Discovery(state=ControllerState())

    slow, fast = discovery(), discovery()
    raws = [raw_packet_in(f, in_port=2 + i % 3) for i, f in enumerate(EVERYTHING[::7] + CORPUS)]
    pairs = fast_and_slow(slow, fast, "packet_in", raws, dpid=9)
    assert all(s == f == [] for s, f in pairs)  # discovery answers nothing
    assert slow.state.hosts() == fast.state.hosts() and len(fast.state.hosts()) >= 3
    assert slow.table.seen.keys() == fast.table.seen.keys() and len(fast.table.seen) == 1  # our probes: one link


def test_flow_changes_as_bytes_are_what_os_ken_serialises():
    from topology.builders import build

    topo = build("fattree:4")
    desired = rr.desired_state(rr.graph_from_topology(topo), rr.hosts_from_topology(topo))
    for dpid, rules in list(desired.items())[:4]:
        dp = FakeDatapath(dpid)
        dp.xid = 100
        change = fl.resync(rules)
        change.delete_flows = list(rules.flows.values())[:5]
        change.delete_groups = list(rules.groups)[:2]
        expected = []
        for i, msg in enumerate(fl.encode(dp, change)):
            msg.set_xid(101 + i)
            msg.serialize()
            expected.append(bytes(msg.buf))
        assert fl.encode_bytes(dp, change) == expected
        assert fl.encode_bytes(dp, change)[0][4:8] == (101 + len(expected)).to_bytes(4, "big")  # xids move on


# --- the receive loop: one send per read, in order ---------------------------------------------------
class Brick:
    """os-ken's ofp_event service as the loop sees it: observers, events, no handlers of its own."""

    def __init__(self, observers: dict) -> None:
        self.observers = {ofp_event.EventOFPPacketIn: observers}
        self.events: list = []

    def send_event(self, name, ev, state) -> None:
        self.events.append((name, ev))

    def send_event_to_observers(self, ev, state) -> None:
        self.events.append(("*", ev))

    def get_handlers(self, ev):
        return []


class Recorder(app_manager.OSKenApp):
    """An app without a fast handler (a user's Ryu app)."""


def test_receive_loop_answers_a_read_in_one_send_in_order_and_flushes_before_other_messages(monkeypatch):
    l2 = L2Learning()
    monkeypatch.setitem(app_manager.SERVICE_BRICKS, "l2", l2)
    monkeypatch.setitem(app_manager.SERVICE_BRICKS, "user", Recorder())
    ours_end, switch_end = socket.socketpair()
    sent: list[bytes] = []
    dp = SimpleNamespace(id=1, xid=0, state=MAIN_DISPATCHER, socket=ours_end, send=sent.append,
                         ofp_brick=Brick({"l2": {MAIN_DISPATCHER}, "user": {MAIN_DISPATCHER}}))
    frames = [bytes(Ether(src=f"02:00:00:00:01:{i:02x}", dst=A) / IP() / UDP()) for i in range(40)]
    first = b"".join(raw_packet_in(f, in_port=1, buffer_id=0x400 + i) for i, f in enumerate(frames[:25]))
    echo = struct.pack("!BBHI", 4, 2, 8, 77)  # OFPT_ECHO_REQUEST: os-ken's path
    rest = b"".join(raw_packet_in(f, in_port=1, buffer_id=0x400 + i) for i, f in enumerate(frames[25:], 25))
    switch_end.sendall(first + echo + rest)
    switch_end.shutdown(socket.SHUT_WR)
    fastpath._recv_loop(dp)  # reads until the switch closes
    ours_end.close()
    switch_end.close()
    assert len(sent) == 2  # the 25 answers before the echo request in one buffer, the 15 after in another
    answers = [sent[0][i:i + 40] for i in range(0, len(sent[0]), 40)] + [sent[1][i:i + 40] for i in
                                                                       range(0, len(sent[1]), 40)]
    assert [struct.unpack_from("!I", a, 8)[0] for a in answers] == [0x400 + i for i in range(40)]  # flooded, in order
    assert all(a[1] == fastpath.OFPT_PACKET_OUT for a in answers)
    names = [(name, type(ev).__name__) for name, ev in dp.ofp_brick.events]
    assert names.count(("user", "EventOFPPacketIn")) == 40  # the app without a fast handler got os-ken's event
    assert ("*", "EventOFPEchoRequest") in names and not any(n == "l2" for n, _ in names)  # ours: never twice


def test_frames_sent_back_out_carry_finished_checksums():
    """OVS's userspace TSO leaves a TCP checksum partial in packet-ins; a fast handler that sends the
    frame back out (a flood, a resubmit) must send it finished, as the os-ken path does."""
    from test_controller_compat_checksum import partial, tcp4

    good, eth_len = tcp4()
    pseudo = bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 6]) + struct.pack("!H", len(good) - eth_len - 20)
    bad = partial(good, eth_len + 20, 16, pseudo)
    assert bad != good
    dp, out = FakeDatapath(), []
    dp.xid = 0
    L2Learning().fast_packet_in(dp, fastpath.parse_packet_in(raw_packet_in(bad, in_port=1)), out)
    (flood,) = out
    assert flood.endswith(good) and not flood.endswith(bad)
    app = routing_app()
    out.clear()
    to_b = bytes(Ether(src=A, dst=B, type=0x0800)) + good[14:]
    app.fast_packet_in(dp, fastpath.parse_packet_in(raw_packet_in(partial(to_b, 34, 16, pseudo), in_port=1)), out)
    (resubmit,) = out
    assert resubmit.endswith(to_b)  # back through the pipeline, finished


def test_fast_handlers_never_wait_for_an_app_lock_held_while_sending(tmp_path):
    """A reload holds tenancy's lock while it sends to every switch; a switch's send queue drains
    only while that switch's messages are read, and the fast path reads them. So a fast handler
    that waited for that lock could deadlock the controller (it did, on a fat-tree's reload)."""
    import threading

    from test_tenants_app import arp_request, tenancy_running

    with tenancy_running(tmp_path) as app:
        blue = app.plan.tenant("blue")
        b1, b2 = blue.member("blue-1"), blue.member("blue-2")
        pin = fastpath.parse_packet_in(raw_packet_in(arp_request(blue.id, b1.mac, b1.ip, b2.ip), in_port=b1.port,
                                                     cookie_value=cookie(COOKIE_TENANCY, blue.id)))
        dp, out = FakeDatapath(), []
        dp.xid = 0
        with app.lock:  # what a reload holds while it sends
            worker = threading.Thread(target=app.fast_packet_in, args=(dp, pin, out), daemon=True)
            worker.start()
            worker.join(timeout=10)
            assert not worker.is_alive(), "the fast handler waited for tenancy's lock"
        assert len(out) == 1  # and it answered


def test_receive_loop_dispatches_nothing_more_once_the_controller_is_closing(monkeypatch):
    """The runner's shutdown sets CLOSING: a connection stops reading, and drops what is left of
    its buffer, so 57 switches' queued flow statistics cannot keep the apps' event queues full
    while the shutdown's stop events wait behind them."""
    monkeypatch.setitem(app_manager.SERVICE_BRICKS, "user", Recorder())
    monkeypatch.setattr(fastpath, "CLOSING", threading.Event())
    ours_end, switch_end = socket.socketpair()
    brick = Brick({"user": {MAIN_DISPATCHER}})
    dp = SimpleNamespace(id=1, xid=0, state=MAIN_DISPATCHER, socket=ours_end, send=lambda b: None, ofp_brick=brick)
    delivered = brick.send_event_to_observers

    def closing_after_first(ev, state) -> None:  # the shutdown starts while the first is dispatched
        delivered(ev, state)
        fastpath.CLOSING.set()

    brick.send_event_to_observers = closing_after_first
    echoes = b"".join(struct.pack("!BBHI", 4, 2, 8, xid) for xid in range(1, 6))  # OFPT_ECHO_REQUEST x5
    switch_end.sendall(echoes)
    fastpath._recv_loop(dp)  # returns without waiting for the switch to close
    ours_end.close()
    switch_end.close()
    assert [type(ev).__name__ for _, ev in brick.events] == ["EventOFPEchoRequest"]
