"""rtnetlink encoding: the fields the kernel reads, and acknowledgements decoded per sequence number.
(That the kernel applies them exactly as `ip` does is tests/integration/test_teardown_batches.py.)"""

from __future__ import annotations

import socket
import struct

from topology.effects import rtnl


def test_address_message_carries_local_and_address_with_prefix_and_index():
    msg = rtnl.add_address(7, "10.9.0.7/16", seq=2)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert (length, kind, seq) == (len(msg), rtnl.RTM_NEWADDR, 2)
    assert flags & rtnl.NLM_F_ACK and flags & rtnl.NLM_F_CREATE and flags & rtnl.NLM_F_EXCL
    family, prefixlen, _, scope, index = struct.unpack_from("=BBBBI", msg, 16)
    assert (family, prefixlen, scope, index) == (socket.AF_INET, 16, 0, 7)
    attrs = msg[24:]
    assert attrs == struct.pack("=HH", 8, rtnl.IFA_LOCAL) + bytes([10, 9, 0, 7]) + \
        struct.pack("=HH", 8, rtnl.IFA_ADDRESS) + bytes([10, 9, 0, 7])


def test_default_route_is_link_scope_without_gateway_and_universe_with_one():
    plain = rtnl.add_default_route(3, None, seq=4)
    via = rtnl.add_default_route(3, "10.9.0.1", seq=4)
    assert struct.unpack_from("=BBBBBBBBI", plain, 16)[6] == rtnl.RT_SCOPE_LINK
    assert struct.unpack_from("=BBBBBBBBI", via, 16)[6] == rtnl.RT_SCOPE_UNIVERSE
    assert struct.pack("=HH", 8, rtnl.RTA_GATEWAY) + bytes([10, 9, 0, 1]) in via
    assert plain.endswith(struct.pack("=HHI", 8, rtnl.RTA_OIF, 3))


def test_acks_decode_to_errno_per_sequence_number():
    def ack(seq: int, error: int) -> bytes:
        return struct.pack("=IHHII", 36, rtnl.NLMSG_ERROR, 0, seq, 0) + struct.pack("=i", error) + b"\0" * 16

    assert rtnl.parse_acks(ack(1, 0) + ack(2, -17)) == {1: 0, 2: 17}
    assert rtnl.parse_acks(b"") == {}
