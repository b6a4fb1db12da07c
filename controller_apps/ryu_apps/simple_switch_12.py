"""`ryu.app.simple_switch_12`: the Ryu book's learning switch on OpenFlow 1.2, for apps that
import or subclass `SimpleSwitch12`. As documented for 1.2: no table-miss flow (a 1.2 switch sends
what no flow matches to the controller), and `add_flow(datapath, port, dst, src, actions)`."""

from __future__ import annotations

from typing import Any

from os_ken.ofproto import ofproto_v1_2

from controller_apps.ryu_apps.learning import LearningSwitch

DEFAULT_PRIORITY = 0x8000  # OpenFlow's default flow priority (os-ken's 1.2 module has no constant for it)


class SimpleSwitch12(LearningSwitch):
    OFP_VERSIONS = [ofproto_v1_2.OFP_VERSION]
    INSTALL_TABLE_MISS = False

    # Ryu's simple_switch_12 signature (apps subclass it), not the base class's
    def add_flow(self, datapath: Any, port: int, dst: str, src: str, actions: list[Any]) -> None:  # type: ignore[override]
        ofproto, parser = datapath.ofproto, datapath.ofproto_parser
        match = parser.OFPMatch(in_port=port, eth_dst=dst, eth_src=src)
        inst = [parser.OFPInstructionActions(ofproto.OFPIT_APPLY_ACTIONS, actions)]
        datapath.send_msg(parser.OFPFlowMod(datapath=datapath, match=match, priority=DEFAULT_PRIORITY,
                                            instructions=inst))

    def _install_learned(self, datapath: Any, in_port: int, dst: str, src: str, actions: list[Any],
                         buffer_id: int) -> bool:
        self.add_flow(datapath, in_port, dst, src, actions)
        return False  # the packet goes out with a packet-out, buffered or not
