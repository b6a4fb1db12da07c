"""`ryu.app.simple_switch`: the Ryu book's learning switch on OpenFlow 1.0, for apps that import or
subclass `SimpleSwitch`. OpenFlow 1.0 has no OXM matches or instructions, so this is its own class
with 1.0's documented signature `add_flow(datapath, in_port, dst, src, actions)`; the behaviour is
`learning.LearningSwitch`'s (learn, forward or flood, install a flow for a known destination). A
1.0 switch sends unmatched packets to the controller, so there is no table-miss flow."""

from __future__ import annotations

from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ether_types, ethernet, packet
from os_ken.ofproto import ofproto_v1_0


class SimpleSwitch(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_0.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mac_to_port: dict[int, dict[str, int]] = {}

    def add_flow(self, datapath: Any, in_port: int, dst: str, src: str, actions: list[Any]) -> None:
        ofproto, parser = datapath.ofproto, datapath.ofproto_parser
        match = parser.OFPMatch(in_port=in_port, dl_dst=dst, dl_src=src)
        datapath.send_msg(parser.OFPFlowMod(
            datapath=datapath, match=match, cookie=0, command=ofproto.OFPFC_ADD, idle_timeout=0,
            hard_timeout=0, priority=ofproto.OFP_DEFAULT_PRIORITY, flags=ofproto.OFPFF_SEND_FLOW_REM,
            actions=actions))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in_handler(self, ev: Any) -> None:
        msg = ev.msg
        datapath = msg.datapath
        ofproto, parser = datapath.ofproto, datapath.ofproto_parser
        eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if eth is None or eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return
        dst, src, dpid = eth.dst, eth.src, datapath.id
        table = self.mac_to_port.setdefault(dpid, {})
        self.logger.info("packet in %s %s %s %s", dpid, src, dst, msg.in_port)
        table[src] = msg.in_port
        out_port = table.get(dst, ofproto.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]
        if out_port != ofproto.OFPP_FLOOD:
            self.add_flow(datapath, msg.in_port, dst, src, actions)
        data = msg.data if msg.buffer_id == ofproto.OFP_NO_BUFFER else None
        datapath.send_msg(parser.OFPPacketOut(datapath=datapath, buffer_id=msg.buffer_id, in_port=msg.in_port,
                                              actions=actions, data=data))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status_handler(self, ev: Any) -> None:
        msg = ev.msg
        reason = {msg.datapath.ofproto.OFPPR_ADD: "added", msg.datapath.ofproto.OFPPR_DELETE: "deleted",
                  msg.datapath.ofproto.OFPPR_MODIFY: "modified"}.get(msg.reason, f"reason {msg.reason}")
        self.logger.info("port %s %s", msg.desc.port_no, reason)

