"""Stats requests that always end: one collector for every app's ofctl requests, and the OVS gaps
that would otherwise leave a REST call waiting.

Why one collector instead of each app's reply handler: os-ken's `ofctl_utils.send_stats_request`
files the request under the caller's `waiters` and relies on the *caller's* handler to hand the
reply back. Ryu's ofctl_rest lists the reply events it handles, and the list is Ryu 4.34's: it has
no `EventOFPFlowDescStatsReply` or `EventOFPMeterDescStatsReply` (OpenFlow 1.5), no error message,
and no way to learn that os-ken could not parse a reply. Each of those left `/stats/...` waiting
until it gave up. Here every request is filed in one table keyed by (dpid, xid), and the API app
(always loaded by the runner) delivers every reply, error and parse failure for those xids. The
caller's `waiters` stays empty on purpose, so an app's own handler finds no entry and leaves the
reply alone (nothing is delivered twice).

Two things OVS 3.1 does differently from what os-ken expects on OpenFlow 1.5, and what we do:
- it refuses OFPMP_FLOW_STATS (type 17, "individual flow statistics", new in 1.5) with
  OFPBRC_BAD_MULTIPART; it answers OFPMP_FLOW_DESC (type 1), whose entries hold every field of a
  flow-stats entry (table, priority, match, OXS stats). So a refused 1.5 flow-stats request is
  asked again as flow-desc and the answer handed back as OFPFlowStatsReply entries with reason
  OFPFSR_STATS_REQUEST, the value a switch gives for entries sent in answer to a request.
- its meter-features body is the 16-byte OpenFlow 1.3 layout (no `features` word), which os-ken's
  1.5 parser (24 bytes) cannot read. The 1.5 parser is taught the short layout; `features` is 0
  there (the switch declared none).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from os_ken.lib import ofctl_utils

from picloud.errors import ControllerError
from topology.stalls import OVS_STALL_S

LOG = logging.getLogger(__name__)

# How long a REST call waits for a switch's stats reply: the switch's main loop answers it, so as
# long as an ovs-vswitchd stall may last (topology/stalls.py); after that the call answers 504.
STATS_REPLY_TIMEOUT = OVS_STALL_S


class StatsTimeout(ControllerError):
    """A switch did not answer a stats request within STATS_REPLY_TIMEOUT (REST: 504)."""


class SwitchRefused(ControllerError):
    """The switch answered a request with an OpenFlow error, or with a reply os-ken could not
    parse (REST: 502, naming the error)."""

    def __init__(self, message: str, error: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.error = error  # (type, code) of the switch's OFPT_ERROR, None for a parse failure


@dataclass
class Pending:
    """One request in flight: its reply parts, and how it ended."""

    msgs: list[Any]
    event: threading.Event = field(default_factory=threading.Event)
    error: SwitchRefused | None = None


_PENDING: dict[tuple[int, int], Pending] = {}
_LOCK = threading.Lock()


def pending() -> dict[tuple[int, int], Pending]:
    """A copy of the requests in flight (tests: every call cleans up after itself)."""
    with _LOCK:
        return dict(_PENDING)


def send_stats_request(dp: Any, stats: Any, waiters: Any, msgs: list[Any], logger: Any = None) -> None:
    """os-ken's `ofctl_utils.send_stats_request`, with a wait that ends: on the last reply part,
    on the switch's error (SwitchRefused), on a reply os-ken could not parse (SwitchRefused), or
    after STATS_REPLY_TIMEOUT (StatsTimeout). os-ken's own wait is a hub.Event whose timeout the
    native hub we run ignores, so a reply that never came held the REST call's thread for ever.
    `waiters` is not used (see the module docstring)."""
    try:
        _request(dp, stats, msgs, logger)
    except SwitchRefused as exc:
        if not _refused_v15_flow_stats(dp, stats, exc):
            raise
        desc: list[Any] = []
        _request(dp, flow_desc_request(dp, stats), desc, logger)
        msgs.extend(flow_stats_replies(dp, desc))


def _request(dp: Any, stats: Any, msgs: list[Any], logger: Any) -> None:
    dp.set_xid(stats)
    key = (dp.id, stats.xid)
    wait = Pending(msgs)
    with _LOCK:
        _PENDING[key] = wait
    try:
        t0 = time.monotonic()
        ofctl_utils.send_msg(dp, stats, logger)
        t1 = time.monotonic()
        ok = wait.event.wait(STATS_REPLY_TIMEOUT)
        LOG.debug("stats request %016x xid %d: queued in %.3fs, answered %s after %.3fs", dp.id, stats.xid,
                  t1 - t0, ok, time.monotonic() - t1)
        if not ok:
            raise StatsTimeout(f"switch {dp.id:016x} did not answer a stats request within "
                               f"{STATS_REPLY_TIMEOUT:.0f}s")
    finally:
        with _LOCK:
            _PENDING.pop(key, None)
    if wait.error is not None:
        raise wait.error


def _more(msg: Any) -> bool:
    """True when a multipart (1.3+) or stats (1.0-1.2) reply says more parts follow."""
    ofp = msg.datapath.ofproto
    msg_type = getattr(type(msg), "cls_msg_type", None)
    if msg_type is not None and msg_type == getattr(ofp, "OFPT_MULTIPART_REPLY", None):
        return bool(msg.flags & ofp.OFPMPF_REPLY_MORE)
    if msg_type is not None and msg_type == getattr(ofp, "OFPT_STATS_REPLY", None):
        return bool(msg.flags & ofp.OFPSF_REPLY_MORE)
    return False  # a single-message reply (features, role, queue config)


def deliver(msg: Any) -> bool:
    """Hand a reply to the request waiting for it; True when one was."""
    key = (msg.datapath.id, msg.xid)
    with _LOCK:
        wait = _PENDING.get(key)
        if wait is None:
            return False
        wait.msgs.append(msg)
        if _more(msg):
            return True
        del _PENDING[key]
    wait.event.set()
    return True


def fail(datapath_id: int | None, xid: int, error: SwitchRefused) -> bool:
    """End the request (datapath_id, xid) with `error`; True when one was waiting."""
    with _LOCK:
        wait = _PENDING.pop((datapath_id, xid), None) if datapath_id is not None else None
    if wait is None:
        return False
    wait.error = error
    wait.event.set()
    return True


def deliver_error(msg: Any) -> bool:
    """An OFPT_ERROR whose xid is a request in flight ends that request with the error's names."""
    ofp = msg.datapath.ofproto
    names = f"{ofp.ofp_error_type_to_str(msg.type)} {ofp.ofp_error_code_to_str(msg.type, msg.code)}"
    return fail(msg.datapath.id, msg.xid, SwitchRefused(
        f"switch {msg.datapath.id:016x} refused the request: {names}", (msg.type, msg.code)))


def _refused_v15_flow_stats(dp: Any, stats: Any, exc: SwitchRefused) -> bool:
    from os_ken.ofproto import ofproto_v1_5, ofproto_v1_5_parser

    return (dp.ofproto.OFP_VERSION == ofproto_v1_5.OFP_VERSION
            and type(stats) is ofproto_v1_5_parser.OFPFlowStatsRequest
            and exc.error == (ofproto_v1_5.OFPET_BAD_REQUEST, ofproto_v1_5.OFPBRC_BAD_MULTIPART))


def flow_desc_request(dp: Any, stats: Any) -> Any:
    """The OpenFlow 1.5 flow-desc request selecting the same flows as flow-stats request `stats`."""
    return dp.ofproto_parser.OFPFlowDescStatsRequest(
        dp, stats.flags, stats.table_id, stats.out_port, stats.out_group, stats.cookie, stats.cookie_mask,
        stats.match)


def flow_stats_replies(dp: Any, desc_replies: list[Any]) -> list[Any]:
    """OpenFlow 1.5 flow-desc replies as the flow-stats replies a switch implementing
    OFPMP_FLOW_STATS would have sent: same table, priority, match and stats per entry, reason
    OFPFSR_STATS_REQUEST, and each entry's length as ofp_flow_stats on the wire (8 + padded match +
    padded stats)."""
    from os_ken import utils

    ofp, parser = dp.ofproto, dp.ofproto_parser
    out = []
    for desc in desc_replies:
        entries = []
        for d in desc.body:
            length = ofp.OFP_FLOW_STATS_0_SIZE + utils.round_up(d.match.length, 8)
            if d.stats is not None:
                length += utils.round_up(d.stats.length, 8)
            entries.append(parser.OFPFlowStats(table_id=d.table_id, reason=ofp.OFPFSR_STATS_REQUEST,
                                               priority=d.priority, match=d.match, stats=d.stats,
                                               length=length))
        reply = parser.OFPFlowStatsReply(dp, body=entries, flags=desc.flags)
        reply.xid, reply.type = desc.xid, ofp.OFPMP_FLOW_STATS
        out.append(reply)
    return out


def _meter_features_v15_parser(cls: Any, buf: bytes, offset: int) -> Any:
    """os-ken's 1.5 meter-features parser, also reading the 1.3 layout OVS sends (see above)."""
    from os_ken.ofproto import ofproto_v1_3, ofproto_v1_5

    if len(buf) - offset >= ofproto_v1_5.OFP_METER_FEATURES_SIZE:
        stats = cls(*struct.unpack_from(ofproto_v1_5.OFP_METER_FEATURES_PACK_STR, buf, offset))
        stats.length = ofproto_v1_5.OFP_METER_FEATURES_SIZE
        return stats
    fields = struct.unpack_from(ofproto_v1_3.OFP_METER_FEATURES_PACK_STR, buf, offset)
    stats = cls(*fields, 0)
    stats.length = ofproto_v1_3.OFP_METER_FEATURES_SIZE
    return stats


def _wrap_version_parser(version: int) -> None:
    """A reply os-ken cannot parse is logged by os-ken and dropped; if a request waits for it,
    end that request now with the parse error instead of letting it time out."""
    from os_ken.ofproto import ofproto_parser

    original = ofproto_parser._MSG_PARSERS.get(version)
    if original is None or getattr(original, "picloud_stats_wait", False):
        return

    def parse(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: bytes) -> Any:
        try:
            return original(datapath, version, msg_type, msg_len, xid, buf)
        except Exception as exc:
            fail(getattr(datapath, "id", None), xid, SwitchRefused(
                f"switch {getattr(datapath, 'id', 0) or 0:016x} sent a reply os-ken 4.2.2 cannot parse "
                f"(OpenFlow 0x{version:02x} message type {msg_type}: {exc})"))
            raise

    parse.picloud_stats_wait = True  # type: ignore[attr-defined]
    ofproto_parser._MSG_PARSERS[version] = parse


def install() -> None:
    """Every ofctl_v1_x stats call (ours, and a Ryu app's through the `ryu` alias) uses the wait
    above, and the parser gaps are closed; idempotent, called before any app starts."""
    from os_ken.ofproto import (  # noqa: F401  (each registers its version's message parser)
        ofproto_parser,
        ofproto_v1_0_parser,
        ofproto_v1_2_parser,
        ofproto_v1_3_parser,
        ofproto_v1_4_parser,
        ofproto_v1_5_parser,
    )

    ofctl_utils.send_stats_request = send_stats_request
    features = ofproto_v1_5_parser.OFPMeterFeaturesStats
    if features.parser.__func__ is not _meter_features_v15_parser:
        features.parser = classmethod(_meter_features_v15_parser)
    for version in list(ofproto_parser._MSG_PARSERS):
        _wrap_version_parser(version)
