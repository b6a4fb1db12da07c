"""The learning switch the Ryu book teaches, once for every OXM-based OpenFlow version (1.2-1.5).

Documented behaviour (Ryu book, "Switching Hub"): learn the source MAC's port per datapath in
`mac_to_port`; forward to the learned port of the destination, else flood; once the destination is
known, install a flow (priority 1, match in_port + eth_dst + eth_src) so later frames stay in the
switch; LLDP is ignored. From OpenFlow 1.3 a switch drops what no flow matches, so on the features
reply the app installs the table-miss flow (priority 0, everything to the controller, unbuffered).

The version modules (`simple_switch_12` ... `_15`) subclass `LearningSwitch` with their
`OFP_VERSIONS` and the class name users import; event handlers are inherited the way os-ken finds
them (it collects every decorated method of the app instance, inherited or not).
"""

from __future__ import annotations

from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ether_types, ethernet, packet
from os_ken.ofproto import ofproto_v1_5


class LearningSwitch(app_manager.OSKenApp):
    """The Ryu book's switching hub; subclasses set OFP_VERSIONS."""

    INSTALL_TABLE_MISS = True  # False for OpenFlow 1.2, where a miss goes to the controller already

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mac_to_port: dict[int, dict[str, int]] = {}

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features_handler(self, ev: Any) -> None:
        if not self.INSTALL_TABLE_MISS:
            return
        datapath = ev.msg.datapath
        ofproto, parser = datapath.ofproto, datapath.ofproto_parser
        match = parser.OFPMatch()
        actions = [parser.OFPActionOutput(ofproto.OFPP_CONTROLLER, ofproto.OFPCML_NO_BUFFER)]
        self.add_flow(datapath, 0, match, actions)

    def add_flow(self, datapath: Any, priority: int, match: Any, actions: list[Any],
                 buffer_id: int | None = None) -> None:
        ofproto, parser = datapath.ofproto, datapath.ofproto_parser
        inst = [parser.OFPInstructionActions(ofproto.OFPIT_APPLY_ACTIONS, actions)]
        extra = {"buffer_id": buffer_id} if buffer_id is not None else {}
        datapath.send_msg(parser.OFPFlowMod(datapath=datapath, priority=priority, match=match,
                                            instructions=inst, **extra))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in_handler(self, ev: Any) -> None:
        msg = ev.msg
        if msg.msg_len < msg.total_len:
            self.logger.debug("packet truncated: only %s of %s bytes", msg.msg_len, msg.total_len)
        datapath = msg.datapath
        ofproto, parser = datapath.ofproto, datapath.ofproto_parser
        in_port = msg.match["in_port"]
        eth = packet.Packet(msg.data).get_protocols(ethernet.ethernet)[0]
        if eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return
        dst, src, dpid = eth.dst, eth.src, datapath.id
        table = self.mac_to_port.setdefault(dpid, {})
        self.logger.info("packet in %s %s %s %s", dpid, src, dst, in_port)
        table[src] = in_port
        out_port = table.get(dst, ofproto.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]
        if out_port != ofproto.OFPP_FLOOD and self._install_learned(datapath, in_port, dst, src, actions,
                                                                    msg.buffer_id):
            return  # the switch applied the new flow to the buffered packet
        data = msg.data if msg.buffer_id == ofproto.OFP_NO_BUFFER else None
        datapath.send_msg(self._packet_out(datapath, msg.buffer_id, in_port, actions, data))

    def _install_learned(self, datapath: Any, in_port: int, dst: str, src: str, actions: list[Any],
                         buffer_id: int) -> bool:
        """The flow for a learned destination; True when it also released the buffered packet."""
        match = datapath.ofproto_parser.OFPMatch(in_port=in_port, eth_dst=dst, eth_src=src)
        if buffer_id != datapath.ofproto.OFP_NO_BUFFER:
            self.add_flow(datapath, 1, match, actions, buffer_id)
            return True
        self.add_flow(datapath, 1, match, actions)
        return False

    @staticmethod
    def _packet_out(datapath: Any, buffer_id: int, in_port: int, actions: list[Any], data: bytes | None) -> Any:
        """OpenFlow 1.5 carries the in_port in a match; earlier versions in a field of its own."""
        parser = datapath.ofproto_parser
        if datapath.ofproto.OFP_VERSION >= ofproto_v1_5.OFP_VERSION:
            return parser.OFPPacketOut(datapath=datapath, buffer_id=buffer_id,
                                       match=parser.OFPMatch(in_port=in_port), actions=actions, data=data)
        return parser.OFPPacketOut(datapath=datapath, buffer_id=buffer_id, in_port=in_port,
                                   actions=actions, data=data)
