"""Live updates: a Server-Sent Events stream of link utilisation and state, and the event log.

Why SSE rather than WebSockets: updates flow one way, browsers reconnect by themselves (with
`Last-Event-ID`), it is plain HTTP that Werkzeug serves without extra packages, and a test can
read it with any HTTP client.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from picloud.errors import UIError
from webui.live import LiveView
from webui.metrics import COUNTER_KEYS

bp = Blueprint("stream", __name__, url_prefix="/api")
KEEPALIVE = 15.0  # seconds without a sample before a comment line keeps proxies from closing
EVENT_KINDS = ("link", "switch", "tenant", "traffic", "controller", "host", "ui")
# Each open stream holds a server thread for as long as it lasts. Without a cap, 200 idle
# connections held 206 threads (issue 19). A browser tab needs one; a few dozen is plenty.
MAX_STREAMS = 48
MAX_STREAMS_PER_CLIENT = 16
SLOTS_KEY = "picloud_stream_slots"


class StreamSlots:
    """Counts open streams, in total and per client address; `take` refuses past the caps."""

    def __init__(self, total: int = MAX_STREAMS, per_client: int = MAX_STREAMS_PER_CLIENT) -> None:
        self.total, self.per_client = total, per_client
        self.lock = threading.Lock()
        self.open: dict[str, int] = {}

    def take(self, client: str) -> str | None:
        """None when a slot was taken for `client`; else why not (for the 503's message)."""
        with self.lock:
            if sum(self.open.values()) >= self.total:
                return f"the UI serves at most {self.total} live streams at once"
            if self.open.get(client, 0) >= self.per_client:
                return f"at most {self.per_client} live streams per client ({client})"
            self.open[client] = self.open.get(client, 0) + 1
            return None

    def give(self, client: str) -> None:
        with self.lock:
            left = self.open.get(client, 0) - 1
            if left > 0:
                self.open[client] = left
            else:
                self.open.pop(client, None)


def slots() -> StreamSlots:
    return current_app.extensions.setdefault(SLOTS_KEY, StreamSlots())


# Link ends travel as arrays in this order (named once per frame in `end_keys`): a fattree:8
# frame is a quarter of the size it would be with a dict per end.
END_KEYS = ("node", "port", *COUNTER_KEYS)


def frame(snapshot: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """One SSE message: `id` is the sample number, `data` the links plus new events."""
    data = {
        "end_keys": END_KEYS,
        "seq": snapshot["seq"],
        "time": snapshot.get("time"),
        "controller": snapshot.get("controller"),
        "totals": snapshot.get("totals", {}),
        "switches": snapshot.get("switches", {}),
        "links": [{"id": ln["id"], "up": ln["up"], "bps": ln["bps"], "util": ln["util"],
                   "ends": [[end.get(k, 0) for k in END_KEYS] for end in ln["ends"]]}
                  | ({"sent_bps": ln["sent_bps"]} if "sent_bps" in ln else {})
                  for ln in snapshot.get("links", [])],
        "events": events,
    }
    return f"id: {snapshot['seq']}\nevent: links\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@bp.get("/stream")
def stream() -> Response:
    live: LiveView = current_app.extensions["picloud"]
    live.start()
    try:
        last = int(request.headers.get("Last-Event-ID", "0"))
    except ValueError:
        last = 0
    once = request.args.get("once") == "1"
    client = request.remote_addr or "?"
    pool = slots()
    refused = pool.take(client)
    if refused is not None:
        return Response(json.dumps({"error": "service unavailable",
                                    "message": f"{refused}; close another tab or try again shortly"}),
                        status=503, mimetype="application/json", headers={"Retry-After": "5"})

    def generate() -> Iterator[str]:
        seq = last
        # A reconnecting browser (Last-Event-ID) has the older events already.
        seen_t = (live.latest().get("time") or 0.0) if last else 0.0
        yield "retry: 2000\n\n"
        while live.running:
            snap = live.wait_newer(seq, KEEPALIVE)
            if snap["seq"] <= seq:
                yield ": keepalive\n\n"
                continue
            seq = snap["seq"]
            events = live.events.since(seen_t)
            if events:
                seen_t = events[-1]["t"]
            yield frame(snap, events)
            if once:
                return

    response = Response(generate(), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    # The server closes the response when the stream ends or the client has gone (also before the
    # first byte): the slot is given back exactly once.
    response.call_on_close(lambda: pool.give(client))
    return response


@bp.get("/events")
def events() -> Any:
    try:
        since = float(request.args.get("since", 0))
    except ValueError:
        raise UIError("events: since must be a number of seconds since the epoch (for example ?since=0)") from None
    kind = request.args.get("kind")
    if kind is not None and kind not in EVENT_KINDS:
        raise UIError(f"events: kind {kind!r} (one of {', '.join(EVENT_KINDS)})")
    live: LiveView = current_app.extensions["picloud"]
    if not live.running:
        live.sample()  # no sampler yet: pull the controller's events once
    return jsonify(events=live.events.since(since, kind))
