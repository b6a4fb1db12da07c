"""The tc commands that give one link end its rate, delay, jitter, loss and queue (pure).

One function, `plan`, decides every qdisc of the scale model; `topology.effects.tc.apply` only runs
what it returns, so each combination is unit-tested as an exact command list (this machine has no
sch_netem, so those tests carry the weight for the netem half).

The shape of the plan:
- rate only: a root TBF. Not HTB (Mininet's TCLink uses HTB): with TSO on, packets reach the
  qdisc as GSO aggregates of up to 64 KB. HTB sends each whole, so a 10 Mbit/s link emits 64 KB
  every 50 ms and TCP sees wild RTT swings (the project measured 5.6-9.4 Mbit/s on a 10 Mbit/s
  link, with spurious retransmits). TBF splits an aggregate larger than its bucket back into MTU
  packets (`tbf_segment`), so the link behaves like a wire: 9.38-9.41 Mbit/s, 0 retransmits.
  Bucket: 1 ms of line rate, at least 10 full frames (so a 1 Mbit/s link still passes a frame
  burst); at 1 Gbit/s that is 125 KB, larger than any GSO aggregate, so no segmentation cost where
  the CPU is the limit. Queue: `queue` MTU frames when given (Mininet's max_queue_size), else 100
  ms of line rate (at least two buckets).
- delay / jitter / loss: a netem qdisc, as Mininet's TCLink does; under the TBF (parent 1:1)
  when there is a rate, so packets are delayed, then released at the rate. netem's queue then is
  the link's queue: `queue` packets when given, else enough for the delay's bandwidth-delay
  product plus the 100 ms queue (at least netem's own default of 1000).
- queue alone (no rate, no delay): nothing. A veth without a rate never queues, so there is no
  queue to bound; the link is left as is.

Why these numbers hold on this host (the physical argument, measured by bench/fidelity_bench.py):
- The bucket exists only to absorb the qdisc watchdog's lateness: TBF releases the head frame when
  its tokens exist, and a timer that fires e late finds e x rate tokens, lost beyond the bucket. So
  bucket >= one frame + e x rate. But whatever the bucket holds crosses an idle link at once, faster
  than the wire it models: with 4 ms (50 KB at 100 Mbit/s), 7 of 477 web-search flows at 30 % load
  finished faster than size / rate (the fastest at 0.62 of it: the verdict's impossible_fct). 1 ms
  (15 KB at 100 Mbit/s, 10 frames) gave 0 of 477, and still 95.5 of 100 and 951+ of 1000 Mbit/s on
  a quiet host. A TBF peak rate (2-frame peak bucket), the exact wire, was measured too and
  rejected here: it cuts every GSO aggregate into frames before OVS's userspace datapath, whose
  one forwarding thread then dropped 2,400-6,500 packets in its receive sockets per run and
  carried 67-78 % of the bytes.
- Goodput is the rate times 1448/1514 = 0.956: TBF counts whole Ethernet frames and TCP goodput
  is the payload (measured 9.49 of 10 and 95.4 of 100 Mbit/s, the same on a bare veth).
- The queue (`limit`) is the link's modelled buffer, and every byte of it must also fit where the
  host really holds it. OVS's userspace datapath sends through ONE AF_PACKET socket for all its
  ports, and a packet waiting in a TBF is charged to that socket's send buffer until it leaves;
  the kernel's default of 208 KiB made every shaped queue on the host share 208 KiB, and a full
  buffer is EAGAIN, the rest of OVS's batch freed, uncounted. Aggregates above the bucket are split
  by TBF into frames the socket no longer owns; the rest is charged. And the bucket is released at
  once into the next port's receive socket (default also 208 KiB: three 64 KB aggregates). With
  both at their defaults, 1 Gbit/s gave 856 Mbit/s with 37,623 retransmits and 0 qdisc drops: the
  drops were the receive sockets' (hundreds of 64 KB aggregates), and in web-search runs the send
  socket was found over its limit as well. `queue_bytes` is what each end
  may hold; topology.effects.ovs_sockets sizes both sockets from it when the fabric is built, so
  overflow happens in the TBF, where it is modelled and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FRAME = 1514  # bytes of a full Ethernet frame without FCS, as tc counts it
BUCKET_S = 0.001  # TBF bucket: 1 ms of line rate
QUEUE_S = 0.1  # default queue: 100 ms of line rate
NETEM_DEFAULT_LIMIT = 1000  # packets, netem's own default
_TIME_RE = re.compile(r"\A(\d+(?:\.\d+)?)(us|ms|s)\Z")


@dataclass(frozen=True)
class Shape:
    """What one direction of a link is asked to be (Link's attributes, same units)."""

    bw: float | None = None  # Mbit/s
    delay: str | None = None  # "2ms"
    jitter: str | None = None  # "1ms"
    loss: float | None = None  # percent
    queue: int | None = None  # packets

    @classmethod
    def of(cls, link: object) -> Shape:
        return cls(**{k: getattr(link, k, None) for k in ("bw", "delay", "jitter", "loss", "queue")})

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay and seconds(self.delay) > 0) or bool(self.jitter) or bool(self.loss)

    @property
    def empty(self) -> bool:
        return not self.bw and not self.needs_netem


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    check: bool = True  # False: may fail harmlessly (deleting a qdisc that is not there)


def seconds(text: str) -> float:
    m = _TIME_RE.match(text)
    if not m:
        raise ValueError(f"{text!r}: not a time like 2ms")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]


def tbf_numbers(bw_mbit: float, queue: int | None) -> tuple[int, int]:
    """(burst, limit) in bytes for a TBF at bw_mbit (see the module docstring)."""
    rate_bytes = bw_mbit * 1e6 / 8
    burst = max(10 * FRAME, int(rate_bytes * BUCKET_S))
    limit = queue * FRAME if queue else max(2 * burst, int(rate_bytes * QUEUE_S))
    return burst, limit


def netem_limit(shape: Shape) -> int:
    """Packets netem may hold: the queue when given, else the bandwidth-delay product of the delay
    (plus its jitter) and the 100 ms queue, in full frames, at least netem's default."""
    if shape.queue:
        return int(shape.queue)
    if not shape.bw:
        return NETEM_DEFAULT_LIMIT
    hold = (seconds(shape.delay) if shape.delay else 0.0) + (seconds(shape.jitter) if shape.jitter else 0.0)
    frames = shape.bw * 1e6 / 8 * (hold + QUEUE_S) / FRAME
    return max(NETEM_DEFAULT_LIMIT, int(frames) + 1)


def queue_bytes(shape: Shape) -> int:
    """Bytes the plan's qdiscs on one link end may hold: the TBF's limit plus a netem child's
    packets in full frames (0 for an empty shape). What the host must be able to buffer for this
    end, see topology.effects.ovs_sockets."""
    total = tbf_numbers(shape.bw, shape.queue)[1] if shape.bw else 0
    if shape.needs_netem:
        total += netem_limit(shape) * FRAME
    return total


def _netem_args(shape: Shape) -> list[str]:
    args = ["netem"]
    if shape.delay or shape.jitter:
        args += ["delay", shape.delay or "0ms"]
        if shape.jitter:
            args.append(shape.jitter)
    if shape.loss:
        args += ["loss", f"{shape.loss:g}%"]
    return [*args, "limit", str(netem_limit(shape))]


def plan(iface: str, shape: Shape, netns: str | None = None, replace: bool = False) -> list[Command]:
    """The tc commands for one link end. `replace`: the end may already carry a plan (a run-time
    change), so its root qdisc is removed first: `tc qdisc replace` of a TBF would keep an old
    netem child, and an empty shape must leave no qdisc at all."""
    tc = ("tc", *(("-n", netns) if netns else ()), "qdisc")
    out = [Command((*tc, "del", "dev", iface, "root"), check=False)] if replace else []
    if shape.bw:
        burst, limit = tbf_numbers(shape.bw, shape.queue)
        out.append(Command((*tc, "add", "dev", iface, "root", "handle", "1:", "tbf", "rate", f"{shape.bw:g}mbit",
                            "burst", str(burst), "limit", str(limit))))
        if shape.needs_netem:
            out.append(Command((*tc, "add", "dev", iface, "parent", "1:1", "handle", "10:", *_netem_args(shape))))
    elif shape.needs_netem:
        out.append(Command((*tc, "add", "dev", iface, "root", "handle", "10:", *_netem_args(shape))))
    return out
