"""The tenancy app: isolates tenants on the shared fabric; the rules come from `tenancy_rules`.

Handlers stay thin: they read the plan (the run's tenants YAML), ask the pure module what each Pi
should hold, and send the difference. Three moments send rules:

- a switch connects (also after a controller restart): read back what the switch already holds
  under tenancy's cookie (meters, then flows), then modify what is kept, add what is missing and
  delete only stale entries. OVS keeps flows while the controller is away (fail_mode=secure), so
  established tenant flows never see a gap: nothing is deleted and re-added.
- `POST /tenants/reload`: re-read the YAML and send the difference against what was installed;
  the call returns once the forwarding app (routing) has sent the members' paths too and a
  barrier on every switch confirmed both, so members can reach each other when it answers.
- a tagged ARP request reaches the controller: answered from the plan, only inside the tenant.

Members are registered in `STATE` as hosts (with their tenant), so routing installs paths to them.
`GET /tenants/drops` serves each tenant's packets dropped at its edge (the drop rules' counters).
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from flask import Blueprint, jsonify
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

from controller_apps import api, fastpath, pipeline
from controller_apps import flows as fl
from controller_apps import tenancy_rules as rules_mod
from controller_apps.flows import Flow, Match, Meter, SwitchRules
from controller_apps.state import STATE
from picloud.errors import PiCloudError
from tenants import store
from tenants.model import TenantPlan
from topology.model import Topology, dpid
from topology.stalls import OVS_STALL_S

LOG = logging.getLogger(__name__)
BARRIER_TIMEOUT = OVS_STALL_S  # a barrier waits for ovs-vswitchd's main loop (topology/stalls.py)


def flow_from_stats(stat: Any) -> Flow:
    """The key-relevant part of a flow read back from a switch (instructions are not compared:
    after a restart every kept flow is modified in place anyway)."""
    return Flow(stat.table_id, stat.priority, Match(stat.match.items()), cookie=stat.cookie)


class Tenancy(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.RLock()
        self.path: str | None = STATE.options.get("tenants_file")
        self.topology: Topology = STATE.intended or Topology()
        self.plan = TenantPlan()
        self.datapaths: dict[int, Any] = {}
        self.installed: dict[int, SwitchRules] = {}  # dpid -> what it was sent, once synced
        self.syncing: dict[int, dict[str, Any]] = {}  # dpid -> {"xid", "stats"} during a connect sync
        self.barriers: dict[tuple[int, int], threading.Event] = {}
        if self.path:
            self.plan = store.load(self.path)
        self.wanted: dict[int, SwitchRules] = rules_mod.compute(self.plan, self.topology)
        self._register_hosts(TenantPlan(), self.plan)
        api.register_blueprint(self._blueprint())

    # --- the REST side ----------------------------------------------------------------------------
    def _blueprint(self) -> Blueprint:
        bp = Blueprint("tenancy", __name__)

        @bp.post("/tenants/reload")
        def reload_route() -> Any:
            try:
                summary = self.reload()
            except PiCloudError as exc:
                return jsonify({"error": str(exc)}), 400
            return jsonify(summary)

        @bp.get("/tenants")
        def tenants_route() -> Any:
            with self.lock:
                data = self.plan.to_dict()
                data["rules"] = {str(k): v for k, v in sorted(rules_mod.counts(self.wanted).items())}
            return jsonify(data)

        @bp.get("/tenants/drops")
        def drops_route() -> Any:
            """Packets each tenant's members sent that their edge dropped, read from the Pis now."""
            return jsonify(rules_mod.drop_counts(self.plan, self._tenancy_flows()))

        return bp

    def _tenancy_flows(self) -> list[dict[str, Any]]:
        """Tenancy's classify-table flows with their counters, from every connected Pi it rules."""
        with self.lock:
            pis = [dp for i, dp in sorted(STATE.datapaths.items()) if i in self.wanted]
        wanted = {"table_id": pipeline.TABLE_CLASSIFY, "cookie": pipeline.COOKIE_TENANCY,
                  "cookie_mask": pipeline.COOKIE_APP_MASK}
        flows: list[dict[str, Any]] = []
        for dp in pis:
            ofctl = api.OFCTL.get(dp.ofproto.OFP_VERSION)
            if ofctl is not None:
                for per_dp in ofctl.get_flow_stats(dp, api.WAITERS, wanted).values():
                    flows += per_dp
        return flows

    def reload(self) -> dict[str, Any]:
        """Re-read the plan and apply only the difference; returns what changed."""
        if not self.path:
            raise PiCloudError("tenancy: no tenants file (start the controller with --tenants FILE)")
        new_plan = store.load(self.path)  # validates; a bad file changes nothing
        with self.lock:
            old_plan = self.plan
            self.plan = new_plan
            self.wanted = rules_mod.compute(new_plan, self.topology)
            sent: dict[str, int] = {"add": 0, "modify": 0, "delete": 0, "meters": 0}
            for dp_id, dp in list(self.datapaths.items()):
                if dp_id not in self.installed:
                    continue  # still syncing after connect: that sync reads self.wanted when it lands
                counts = self._apply(dp, self.installed[dp_id], assume_same=True)
                for k, v in counts.items():
                    sent[k] += v
        self._register_hosts(old_plan, new_plan)
        # The members' paths are routing's (it follows STATE's hosts on its own thread, later on a
        # loaded host): answer only once it has sent them too, then one barrier per switch
        # confirms both apps' flows, as they share each switch's connection in order.
        late = STATE.wait_hosts_sent(STATE.host_version, BARRIER_TIMEOUT)
        if late:
            raise PiCloudError(f"tenancy: {', '.join(late)} did not send the members' paths within "
                               f"{BARRIER_TIMEOUT:.0f}s (see the controller log)")
        with self.lock:
            events = [self._barrier(dp) for dp in list(self.datapaths.values())]
        for event in events:
            if not event.wait(BARRIER_TIMEOUT):
                raise PiCloudError("tenancy: a switch did not confirm the new rules within "
                                   f"{BARRIER_TIMEOUT:.0f}s (see the controller log)")
        STATE.event("tenancy", f"tenants reloaded: {len(new_plan.tenants)} tenants, "
                               f"{sent['add']} rules added, {sent['delete']} deleted")
        return {"tenants": len(new_plan.tenants), "members": len(new_plan.members), **sent}

    def _register_hosts(self, old: TenantPlan, new: TenantPlan) -> None:
        """Members are hosts of their tenant's network (tag = tenant id), for routing."""
        now = {(t.id, m.mac): (t, m, m.port) for t, m in new.members if m.port is not None}
        for t, m in old.members:
            if (t.id, m.mac) not in now:
                STATE.remove_host(m.mac, tag=t.id)
        for (tag, mac), (tenant, m, port) in now.items():
            STATE.add_host(mac, m.ip, dpid(m.pi), port, name=m.name, tenant=tenant.name, tag=tag)

    # --- sending ----------------------------------------------------------------------------------
    def _apply(self, dp: Any, installed: SwitchRules, assume_same: bool) -> dict[str, int]:
        """Send the difference from `installed` to what the plan wants on `dp` (`flows.encode`:
        meters first, adds and modifies before deletes, so a changed member is never unprotected,
        stale meters last). Caller holds the lock."""
        wanted = self.wanted.get(dp.id, SwitchRules())
        change = fl.diff(installed, wanted, assume_same=assume_same)
        fl.send_change(dp, change)
        self.installed[dp.id] = wanted
        return {"add": len(change.add_flows), "modify": len(change.modify_flows),
                "delete": len(change.delete_flows),
                "meters": len(change.add_meters) + len(change.modify_meters) + len(change.delete_meters)}

    def _barrier(self, dp: Any) -> threading.Event:
        msg = dp.ofproto_parser.OFPBarrierRequest(dp)
        dp.set_xid(msg)
        event = threading.Event()
        self.barriers[(dp.id, msg.xid)] = event
        dp.send_msg(msg)
        return event

    # --- switch lifecycle -------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def features_handler(self, ev: Any) -> None:
        pipeline.ensure_installed(ev.msg.datapath)

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def state_change_handler(self, ev: Any) -> None:
        dp, dpid = ev.datapath, ev.datapath.id  # dpid by name: mypy narrows dp in `get(dpid) is dp`
        if dpid is None:
            return
        with self.lock:
            if ev.state == MAIN_DISPATCHER:
                self.datapaths[dpid] = dp
                self.installed.pop(dpid, None)
                if dpid not in self.wanted:
                    self.installed[dpid] = SwitchRules()  # a switch, not a Pi: tenancy has nothing for it
                    return
                parser, ofp = dp.ofproto_parser, dp.ofproto
                req = parser.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL)
                dp.set_xid(req)
                self.syncing[dpid] = {"xid": req.xid, "stats": [], "stage": "meters"}
                dp.send_msg(req)
            elif self.datapaths.get(dpid) is dp:
                del self.datapaths[dpid]
                self.installed.pop(dpid, None)
                self.syncing.pop(dpid, None)

    def _collect(self, msg: Any) -> list[Any] | None:
        """Accumulate a multipart reply we asked for; the whole body once the last part arrives."""
        sync = self.syncing.get(msg.datapath.id)
        if sync is None or sync["xid"] != msg.xid:
            return None
        sync["stats"].extend(msg.body)
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return None
        return sync["stats"]

    @set_ev_cls(ofp_event.EventOFPMeterConfigStatsReply, MAIN_DISPATCHER)
    def meter_config_handler(self, ev: Any) -> None:
        dp = ev.msg.datapath
        with self.lock:
            body = self._collect(ev.msg)
            if body is None:
                return
            present = {m.meter_id for m in body}
            self.syncing[dp.id] = {"meters": present, "stats": [], "stage": "flows"}
            parser, ofp = dp.ofproto_parser, dp.ofproto
            req = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                             pipeline.COOKIE_TENANCY, pipeline.COOKIE_APP_MASK, parser.OFPMatch())
            dp.set_xid(req)
            self.syncing[dp.id]["xid"] = req.xid
            dp.send_msg(req)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def flow_stats_handler(self, ev: Any) -> None:
        dp = ev.msg.datapath
        with self.lock:
            body = self._collect(ev.msg)
            if body is None:
                return
            sync = self.syncing.pop(dp.id)
            have = SwitchRules(meters={i: Meter(i, 0, 0) for i in sync["meters"]})  # contents unknown
            have.extend(flow_from_stats(s) for s in body)
            counts = self._apply(dp, have, assume_same=False)
        LOG.info("tenancy: %s synced: %s", STATE.name_of(dp.id), counts)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def barrier_handler(self, ev: Any) -> None:
        event = self.barriers.pop((ev.msg.datapath.id, ev.msg.xid), None)
        if event is not None:
            event.set()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def error_handler(self, ev: Any) -> None:
        msg = ev.msg
        LOG.warning("tenancy: switch %s error type=%d code=%d", STATE.name_of(msg.datapath.id), msg.type,
                    msg.code)

    # --- ARP from the plan ------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in_handler(self, ev: Any) -> None:
        msg = ev.msg
        if msg.cookie & pipeline.COOKIE_APP_MASK != pipeline.COOKIE_TENANCY:
            return  # untagged traffic and other apps' packet-ins are not ours
        reply = self.arp_answer(msg.data)
        if reply is None:
            return
        dp, ofp, parser = msg.datapath, msg.datapath.ofproto, msg.datapath.ofproto_parser
        out = parser.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                                  actions=[parser.OFPActionOutput(msg.match["in_port"])], data=reply)
        dp.send_msg(out)

    def fast_packet_in(self, dp: Any, pin: fastpath.PacketIn, out: list[bytes]) -> None:
        """The fast path's packet_in (controller_apps.fastpath): the same answer, as wire bytes."""
        if pin.cookie & pipeline.COOKIE_APP_MASK != pipeline.COOKIE_TENANCY or pin.in_port is None:
            return
        reply = self.arp_answer(pin.data)
        if reply is not None:
            out.append(fastpath.packet_out(fastpath.next_xid(dp), fastpath.OFP_NO_BUFFER, fastpath.OFPP_CONTROLLER,
                                           [(pin.in_port, fastpath.OFPCML_MAX)], reply))

    def arp_answer(self, data: bytes) -> bytes | None:
        """The reply to a tagged ARP request from the plan (only inside the asker's tenant), or
        None: not a tagged request, another tenant's address, or nobody. The tenant is the first
        802.1Q tag's VLAN id, read from the header bytes as os-ken's parser reads it."""
        frame = fastpath.parse_frame(data)
        req = fastpath.parse_arp(data, frame) if frame is not None and frame.vid is not None else None
        if frame is None or frame.vid is None or req is None or req.opcode != fastpath.ARP_REQUEST:
            return None
        # The plan is read without the lock: it is replaced whole, never changed in place, and the
        # fast path must not wait for a lock that a reload holds while sending to this very switch
        # (its send queue drains only while the switch's packet-ins are read: a deadlock).
        plan = self.plan
        mac = rules_mod.arp_answer(plan, frame.vid, socket.inet_ntoa(req.spa), socket.inet_ntoa(req.tpa))
        if mac is None:
            return None  # silence: another tenant's address, or nobody
        raw = fastpath.mac_bytes(mac)
        return fastpath.arp_reply_frame(req.sha, raw, raw, req.tpa, req.sha, req.spa)
