"""OpenFlow 1.5 for os-ken's topology app (`ryu.topology.switches`), which stops at 1.4.

Why: Ryu's rest_topology (and every app on `ryu.topology.api`) loads that app, and os-ken
intersects the versions of all loaded apps, so with it loaded a bridge that offers only 1.5 was
refused, and the REST answers of a "1.5" fabric came from a 1.4 session. The app's 1.2-1.4 code is
1.5-correct except for one message: OpenFlow 1.5 moved a packet-out's ingress port from `in_port`
into a `match` (OFPPacketOut(datapath, buffer_id, match, actions, data)). The app's LLDP
probes and `Datapath.send_packet_out` still say `in_port`; os-ken's 1.5 OFPPacketOut then fails
(a keyword it does not take, or an int where the match goes). So the 1.5 packet-out also takes
the 1.2-1.4 spelling and turns it into the match a 1.5 switch expects; nothing else changes.
"""

from __future__ import annotations

from typing import Any


def _packet_out_init(original: Any, parser: Any) -> Any:
    def init(self: Any, datapath: Any, buffer_id: Any = None, match: Any = None, actions: Any = None,
             data: Any = None, actions_len: Any = None, in_port: int | None = None) -> None:
        if isinstance(match, int):  # positional, as Datapath.send_packet_out passes in_port
            match, in_port = None, match
        if match is None and in_port is not None:
            match = parser.OFPMatch(in_port=in_port)
        original(self, datapath, buffer_id, match, actions, data, actions_len)

    init.picloud_in_port = True  # type: ignore[attr-defined]
    return init


def install() -> None:
    """Idempotent; the runner calls it before loading apps."""
    from os_ken.ofproto import ofproto_v1_5, ofproto_v1_5_parser
    from os_ken.topology import switches

    packet_out = ofproto_v1_5_parser.OFPPacketOut
    if not getattr(packet_out.__init__, "picloud_in_port", False):
        packet_out.__init__ = _packet_out_init(packet_out.__init__, ofproto_v1_5_parser)
    if ofproto_v1_5.OFP_VERSION not in switches.Switches.OFP_VERSIONS:
        switches.Switches.OFP_VERSIONS = [*switches.Switches.OFP_VERSIONS, ofproto_v1_5.OFP_VERSION]
