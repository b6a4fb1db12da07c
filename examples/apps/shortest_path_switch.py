"""A shortest-path learning switch written against the Ryu API, as a PiCloud user would write it.

Run it on any PiCloud fabric (it imports only `ryu.*`; PiCloud's controller maps that to os-ken):

    Testbed("leafspine:2,2,2", controller=["examples/apps/shortest_path_switch.py"])
    picloud up leafspine:2,2,2 --apps examples/apps/shortest_path_switch.py

Why not Ryu's simple_switch_13: it floods unknown and broadcast frames out of every port, and a
leaf-spine has loops (leaf1 -> spine1 -> leaf2 -> spine2 -> leaf1), so one ARP request circulates
forever. This app stays loop-free without spanning tree:

- Discovery: when a switch connects the app asks for its ports and sends an LLDP frame
  (ryu.lib.packet.lldp) out of each, naming (dpid, port); the frame arriving at another switch is
  a link. Probes repeat every PROBE_S, and a port going down removes its link.
- Table 0 admits: frames from a link port, or from a learned host on its own port, go on to table
  1; anything else (a new host, LLDP) goes to the controller, which learns the host.
- Table 1 forwards on eth_dst along the shortest-path tree rooted at the destination host's switch
  (breadth-first over the discovered links, lowest dpid first on ties), installed on every switch
  the moment the host is learned. A miss goes to the controller.
- Broadcasts and unknown destinations: the controller sends the frame out of every edge port (a
  port with no link) of every switch, never into the fabric, so it cannot loop.
- Until discovery has been quiet for SETTLE_S the app ignores frames: before it knows which ports
  are links it cannot tell an edge port from a fabric one.
"""

import struct
import time
from collections import deque

from ryu.base import app_manager
from ryu.controller import ofp_event
from ryu.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from ryu.lib import hub
from ryu.lib.packet import ether_types, ethernet, lldp, packet
from ryu.ofproto import ofproto_v1_3

PROBE_S = 5.0
SETTLE_S = 2.0
TABLE_ADMIT, TABLE_FORWARD = 0, 1
CHASSIS_PREFIX = b"dpid:"


class ShortestPathSwitch(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.datapaths = {}  # dpid -> Datapath
        self.ports = {}  # dpid -> {port_no: hw_addr}
        self.links = {}  # (dpid, port) -> (peer dpid, peer port)
        self.hosts = {}  # mac -> (dpid, port)
        self.last_change = time.monotonic()
        self.prober = hub.spawn(self._probe_loop)

    # --- switches and their ports -------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev):
        dp = ev.msg.datapath
        parser, ofp = dp.ofproto_parser, dp.ofproto
        self.datapaths[dp.id] = dp
        self.last_change = time.monotonic()
        to_controller = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        for table in (TABLE_ADMIT, TABLE_FORWARD):
            self._flow(dp, table, 0, parser.OFPMatch(), actions=to_controller)
        dp.send_msg(parser.OFPPortDescStatsRequest(dp, 0))

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def port_desc(self, ev):
        dp = ev.msg.datapath
        self.ports[dp.id] = {p.port_no: p.hw_addr for p in ev.msg.body if p.port_no <= dp.ofproto.OFPP_MAX}
        for port_no in self.ports[dp.id]:
            self._send_probe(dp, port_no)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def port_status(self, ev):
        dp, port = ev.msg.datapath, ev.msg.desc
        ofp = dp.ofproto
        if port.port_no > ofp.OFPP_MAX:
            return
        down = ev.msg.reason == ofp.OFPPR_DELETE or port.state & ofp.OFPPS_LINK_DOWN
        if down:
            self.ports.get(dp.id, {}).pop(port.port_no, None)
            self._drop_links(lambda end: end == (dp.id, port.port_no))
        else:
            self.ports.setdefault(dp.id, {})[port.port_no] = port.hw_addr
            self._send_probe(dp, port.port_no)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def switch_gone(self, ev):
        dpid = ev.datapath.id
        if dpid in self.datapaths:
            del self.datapaths[dpid]
            self.ports.pop(dpid, None)
            self._drop_links(lambda end: end[0] == dpid)

    # --- discovery ------------------------------------------------------------------------------
    def _probe_loop(self):
        while True:
            hub.sleep(PROBE_S)
            for dpid, dp in list(self.datapaths.items()):
                for port_no in list(self.ports.get(dpid, {})):
                    self._send_probe(dp, port_no)

    def _send_probe(self, dp, port_no):
        hw_addr = self.ports.get(dp.id, {}).get(port_no, "00:00:00:00:00:00")
        pkt = packet.Packet()
        pkt.add_protocol(ethernet.ethernet(dst=lldp.LLDP_MAC_NEAREST_BRIDGE, src=hw_addr,
                                           ethertype=ether_types.ETH_TYPE_LLDP))
        pkt.add_protocol(lldp.lldp([
            lldp.ChassisID(subtype=lldp.ChassisID.SUB_LOCALLY_ASSIGNED,
                           chassis_id=CHASSIS_PREFIX + b"%016x" % dp.id),
            lldp.PortID(subtype=lldp.PortID.SUB_PORT_COMPONENT, port_id=struct.pack("!I", port_no)),
            lldp.TTL(ttl=int(PROBE_S * 3)),
            lldp.End(),
        ]))
        pkt.serialize()
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                                        actions=[parser.OFPActionOutput(port_no)], data=pkt.data))

    def _link_seen(self, dp, in_port, probe):
        chassis, port = probe.tlvs[0], probe.tlvs[1]
        if not chassis.chassis_id.startswith(CHASSIS_PREFIX):
            return  # someone else's LLDP
        src = (int(chassis.chassis_id[len(CHASSIS_PREFIX):], 16), struct.unpack("!I", port.port_id)[0])
        dst = (dp.id, in_port)
        if self.links.get(src) == dst:
            return
        self.links[src] = dst
        self.links[dst] = src
        self.last_change = time.monotonic()
        self.logger.info("link %016x:%d <-> %016x:%d", src[0], src[1], dst[0], dst[1])
        parser = dp.ofproto_parser
        for dpid, port_no in (src, dst):
            if dpid in self.datapaths:  # frames from a fabric port are always admitted
                self._flow(self.datapaths[dpid], TABLE_ADMIT, 1, parser.OFPMatch(in_port=port_no),
                           goto=TABLE_FORWARD)
        self._install_all_hosts()

    def _drop_links(self, touches):
        gone = [end for end in self.links if touches(end) or touches(self.links[end])]
        for end in gone:
            self.links.pop(end, None)
        if gone:
            self.last_change = time.monotonic()
            self.logger.info("%d link ends removed", len(gone))
            self._install_all_hosts()

    # --- hosts and forwarding -------------------------------------------------------------------
    def _tree_ports(self, root):
        """dpid -> the port that leads one hop closer to `root` on a shortest path (BFS)."""
        reaches = {}  # dpid -> [(neighbour, the neighbour's port facing dpid)]
        for (dpid, port_no), (peer, _peer_port) in self.links.items():
            reaches.setdefault(peer, []).append((dpid, port_no))
        toward = {}
        seen, queue = {root}, deque([root])
        while queue:
            here = queue.popleft()
            for neighbour, port_no in sorted(reaches.get(here, [])):
                if neighbour not in seen:
                    seen.add(neighbour)
                    toward[neighbour] = port_no
                    queue.append(neighbour)
        return toward

    def _install_host(self, mac):
        dpid, port_no = self.hosts[mac]
        outputs = self._tree_ports(dpid)
        outputs[dpid] = port_no
        for switch, out_port in outputs.items():
            dp = self.datapaths.get(switch)
            if dp is not None:
                self._flow(dp, TABLE_FORWARD, 10, dp.ofproto_parser.OFPMatch(eth_dst=mac),
                           actions=[dp.ofproto_parser.OFPActionOutput(out_port)])
        dp = self.datapaths.get(dpid)
        if dp is not None:
            self._flow(dp, TABLE_ADMIT, 10, dp.ofproto_parser.OFPMatch(in_port=port_no, eth_src=mac),
                       goto=TABLE_FORWARD)

    def _install_all_hosts(self):
        for mac in list(self.hosts):
            self._install_host(mac)

    def _edge_ports(self):
        for dpid, ports in self.ports.items():
            yield dpid, [p for p in ports if (dpid, p) not in self.links]

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        in_port = msg.match["in_port"]
        pkt = packet.Packet(msg.data)
        eth = pkt.get_protocol(ethernet.ethernet)
        if eth is None:
            return
        if eth.ethertype == ether_types.ETH_TYPE_LLDP:
            probe = pkt.get_protocol(lldp.lldp)
            if probe is not None:
                self._link_seen(dp, in_port, probe)
            return
        if time.monotonic() - self.last_change < SETTLE_S or (dp.id, in_port) in self.links:
            return  # discovery not settled yet, or a frame we never send into the fabric
        if eth.src not in self.hosts or self.hosts[eth.src] != (dp.id, in_port):
            self.hosts[eth.src] = (dp.id, in_port)
            self.logger.info("host %s at %016x:%d", eth.src, dp.id, in_port)
            self._install_host(eth.src)
        if eth.dst in self.hosts:
            dpid, port_no = self.hosts[eth.dst]
            self._packet_out(self.datapaths.get(dpid), [port_no], msg.data)
            return
        for dpid, ports in self._edge_ports():  # broadcast or unknown: every edge port, no fabric port
            ports = [p for p in ports if (dpid, p) != (dp.id, in_port)]
            self._packet_out(self.datapaths.get(dpid), ports, msg.data)

    # --- OpenFlow helpers -----------------------------------------------------------------------
    def _flow(self, dp, table, priority, match, actions=None, goto=None):
        parser, ofp = dp.ofproto_parser, dp.ofproto
        inst = []
        if actions:
            inst.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
        if goto is not None:
            inst.append(parser.OFPInstructionGotoTable(goto))
        dp.send_msg(parser.OFPFlowMod(datapath=dp, table_id=table, priority=priority, match=match,
                                      instructions=inst))

    def _packet_out(self, dp, ports, data):
        if dp is None or not ports:
            return
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                                        actions=[parser.OFPActionOutput(p) for p in ports], data=data))
