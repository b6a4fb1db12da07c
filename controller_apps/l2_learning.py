"""A learning switch: the teaching example, doing what Ryu's simple_switch_13 does.

The algorithm, per switch:
1. When the switch connects, install a table-miss rule: anything unmatched goes to the controller.
2. On each packet-in, learn that the source MAC lives behind the port it came in on.
3. If the destination MAC has been learnt, send the packet out of that port and install a flow
   (in_port, eth_src, eth_dst) -> that port, so later packets of the conversation stay in the
   switch; otherwise flood it.

It uses one table and no pipeline, like the apps users bring. It only reads the Ethernet header
(the rest of the packet is irrelevant to an L2 switch), which is what makes it cheaper per
packet-in than simple_switch_13's full parse (bench/cbench.py measures it).
Loops: like simple_switch_13 it floods, so run it on loop-free topologies only.
"""

from __future__ import annotations

from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib.packet import ether_types, ethernet
from os_ken.ofproto import ofproto_v1_3

from controller_apps import fastpath
from controller_apps import flows as fl
from controller_apps.flows import Flow, Match
from controller_apps.pipeline import COOKIE_L2, Table

# One table, declared like the shared pipeline's (flows.encode checks every flow against it).
TABLES = {0: Table(0, "l2", "l2_learning", "controller", "MAC learning in one table, like a user's app",
                   frozenset({"in_port", "eth_src", "eth_dst"}))}
TABLE_MISS = Flow(0, 0, Match(), (fl.TO_CONTROLLER,), cookie=COOKIE_L2)


class L2Learning(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mac_to_port: dict[int, dict[str, int]] = {}  # dpid -> {mac: port}

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features_handler(self, ev: Any) -> None:
        dp = ev.msg.datapath
        self.mac_to_port[ev.msg.datapath_id] = {}  # dp.id may not be set yet (handlers run in threads)
        self.add_flow(dp, TABLE_MISS)

    @staticmethod
    def add_flow(dp: Any, flow: Flow, buffer_id: int | None = None) -> None:
        dp.send_msg(fl.flow_mod(dp, flow, dp.ofproto.OFPFC_ADD, TABLES, buffer_id))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in_handler(self, ev: Any) -> None:
        msg = ev.msg
        dp = msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        in_port = msg.match["in_port"]
        eth, _, _ = ethernet.ethernet.parser(msg.data)
        if eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return  # link discovery's business, never forwarded

        table = self.mac_to_port.setdefault(dp.id, {})
        table[eth.src] = in_port
        out_port = table.get(eth.dst, ofp.OFPP_FLOOD)

        if out_port != ofp.OFPP_FLOOD:
            flow = Flow(0, 1, Match(in_port=in_port, eth_dst=eth.dst, eth_src=eth.src), (fl.output(out_port),),
                        cookie=COOKIE_L2)
            if msg.buffer_id != ofp.OFP_NO_BUFFER:
                self.add_flow(dp, flow, msg.buffer_id)
                return  # the switch releases the buffered packet through the new flow
            self.add_flow(dp, flow)
        data = msg.data if msg.buffer_id == ofp.OFP_NO_BUFFER else None
        dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=msg.buffer_id, in_port=in_port,
                                        actions=[parser.OFPActionOutput(out_port)], data=data))

    def fast_packet_in(self, dp: Any, pin: fastpath.PacketIn, out: list[bytes]) -> None:
        """packet_in_handler on the fast path (controller_apps.fastpath): the same decisions from
        the Ethernet header bytes, answered with the same messages as wire bytes."""
        data, in_port = pin.data, pin.in_port
        if len(data) < 14 or in_port is None or data[12:14] == b"\x88\xcc":
            return  # a runt (os-ken's parser would raise), no in_port, or LLDP
        dst, src = data[0:6], data[6:12]
        table = self.mac_to_port.setdefault(dp.id, {})
        table[src.hex(":")] = in_port
        out_port = table.get(dst.hex(":"), fastpath.OFPP_FLOOD)
        buffered = pin.buffer_id != fastpath.OFP_NO_BUFFER
        if out_port != fastpath.OFPP_FLOOD:
            out.append(fastpath.output_flow_mod(fastpath.next_xid(dp), COOKIE_L2, 0, 1, in_port, bytes(dst), bytes(src),
                                                out_port, pin.buffer_id))
            if buffered:
                return
        out.append(fastpath.packet_out(fastpath.next_xid(dp), pin.buffer_id, in_port, [(out_port, fastpath.OFPCML_MAX)],
                                       None if buffered else data))
