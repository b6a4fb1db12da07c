"""A cbench-style controller benchmark: fake OpenFlow 1.3 switches flood a controller with
packet-ins and count the flow-mods and packet-outs it answers with.

    python bench/cbench.py [--quick] [--switches 16] [--outstanding 1000] [--loops 5] [--ms 1000]
                           [--rounds 2] [--controllers simple_switch_13,l2_learning,pipeline,ovs-testcontroller]
                           [--install fattree:8] [--controller-cpu CPU|auto|none] [--record]

Why our own: cbench (from the oflops suite) speaks OpenFlow 1.0 only and is no longer packaged.
This one does what it does, in OpenFlow 1.3: each fake switch connects over TCP, says hello,
answers the features request, port-description, echo, barrier and other multipart requests, and
then sends buffered packet-ins from a set of per-switch hosts (MACs behind ports 1..4, each
packet-in from host i to host i+1, like cbench's MAC ring). Two modes:

- throughput: every switch keeps OUTSTANDING packet-ins unanswered (the defaults are cbench's: 16
  switches, 1,000 outstanding each); answers/s measures how fast the controller can decide.
- latency: one outstanding packet-in per switch; answers/s is the reciprocal of the round trip.

An answer is a flow-mod or a packet-out not sourced by the controller itself (LLDP probes carry
in_port CONTROLLER and are not answers). Each mode runs LOOPS windows of MS milliseconds after a
warm-up window, ROUNDS times with the controllers interleaved; the median window is reported, as
cbench's summary line does.

Controllers, each started as its own process on a free port and stopped after its run:
- simple_switch_13: Ryu's sample (tests/fixtures/ryu_apps, unmodified) on plain os-ken, the
  baseline; it runs through PiCloud's runner only for the ryu -> os_ken import alias.
- l2_learning: PiCloud's teaching app.
- pipeline: PiCloud's default app set (discovery, routing, monitor).
- ovs-testcontroller: Open vSwitch's C learning switch, the ceiling.
Results print as a table with ratios to the baseline; --record writes them into this benchmark's
section of bench/RESULTS.md.

--install SPEC times the default pipeline's proactive installation: fake switches wired as the
topology SPEC (each LLDP probe the controller sends out of a port comes back as a packet-in on
the peer's port, as over a wire), the controller given the topology, and the time from the last
switch connecting to the last flow-mod or group-mod, with the message counts.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Controller (cbench)"

OFP_VERSION = 0x04
OFPT_HELLO, OFPT_ERROR, OFPT_ECHO_REQUEST, OFPT_ECHO_REPLY = 0, 1, 2, 3
OFPT_FEATURES_REQUEST, OFPT_FEATURES_REPLY = 5, 6
OFPT_GET_CONFIG_REQUEST, OFPT_GET_CONFIG_REPLY = 7, 8
OFPT_PACKET_IN, OFPT_PACKET_OUT, OFPT_FLOW_MOD, OFPT_GROUP_MOD = 10, 13, 14, 15
OFPT_MULTIPART_REQUEST, OFPT_MULTIPART_REPLY = 18, 19
OFPT_BARRIER_REQUEST, OFPT_BARRIER_REPLY = 20, 21
OFPT_ROLE_REQUEST, OFPT_ROLE_REPLY = 24, 25
OFPMP_DESC, OFPMP_PORT_DESC = 0, 13
OFPP_CONTROLLER = 0xFFFFFFFD
HEADER = struct.Struct("!BBHI")
N_PORTS = 4
HOSTS_PER_SWITCH = 1000


def header(msg_type: int, length: int, xid: int) -> bytes:
    return HEADER.pack(OFP_VERSION, msg_type, length, xid)


def mac(switch: int, host: int) -> bytes:
    """A locally administered unicast MAC unique to (switch, host)."""
    return bytes([0x02, 0xCB, switch & 0xFF, (host >> 16) & 0xFF, (host >> 8) & 0xFF, host & 0xFF])


def host_port(host: int) -> int:
    return host % N_PORTS + 1


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(switch: int, src_host: int, dst_host: int) -> bytes:
    """A valid 46-byte IPv4/UDP packet (apps that parse the whole packet must not choke on it)."""
    payload = b"cbench-picloud-xx"[:18].ljust(18, b"\x00")
    udp = struct.pack("!HHHH", 10000 + src_host, 9, 8 + len(payload), 0) + payload
    src = bytes([10, switch & 0xFF, src_host >> 8, src_host & 0xFF])
    dst = bytes([10, switch & 0xFF, dst_host >> 8, dst_host & 0xFF])
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), src_host, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + udp


def packet_in(switch: int, host: int, buffer_id: int) -> bytes:
    """OFPT_PACKET_IN (OF1.3 section 7.4.1): buffered, match {in_port}, a 60-byte IPv4/UDP frame
    from `host` to `host + 1`."""
    dst_host = (host + 1) % HOSTS_PER_SWITCH
    frame = mac(switch, dst_host) + mac(switch, host) + b"\x08\x00" + ipv4_udp(switch, host, dst_host)
    return packet_in_frame(host_port(host), buffer_id, frame)


def packet_in_frame(in_port: int, buffer_id: int, frame: bytes, reason: int = 0) -> bytes:
    """OFPT_PACKET_IN of `frame` received on `in_port` (reason 0 no match, 1 action)."""
    oxm_in_port = struct.pack("!HBBI", 0x8000, 0 << 1, 4, in_port)  # OFPXMC_OPENFLOW_BASIC, IN_PORT
    match = struct.pack("!HH", 1, 4 + len(oxm_in_port)) + oxm_in_port  # OFPMT_OXM, length 12
    match += bytes((8 - len(match) % 8) % 8)  # padded to 16
    body = struct.pack("!IHBBQ", buffer_id, len(frame), reason, 0, 0) + match + b"\x00\x00" + frame
    return header(OFPT_PACKET_IN, 8 + len(body), 0) + body


def features_reply(xid: int, dpid: int) -> bytes:
    body = struct.pack("!QIBB2xII", dpid, 256, 254, 0, 0x4F, 0)
    return header(OFPT_FEATURES_REPLY, 8 + len(body), xid) + body


def port_desc(switch: int, ports: list[int] | None = None) -> bytes:
    """ofp_port records (64 bytes each) for `ports` (default 1..N_PORTS), all up, 1 Gbit/s."""
    out = b""
    for port in ports or range(1, N_PORTS + 1):
        name = f"cb{switch}p{port}".encode().ljust(16, b"\x00")
        out += struct.pack("!I4x6s2x16sIIIIIIII", port, bytes([0x06, 0, 0, switch & 0xFF, 0, port]), name,
                           0, 0x4, 0x20, 0x20, 0x20, 0, 1_000_000, 1_000_000)
    return out


DESC_BODY = b"".join(s.encode().ljust(n, b"\x00") for s, n in
                     (("PiCloud", 256), ("cbench fake switch", 256), ("1", 256), ("0", 32), ("fake", 256)))


@dataclass
class SwitchCounters:
    flow_mods: int = 0
    packet_outs: int = 0
    group_mods: int = 0
    last_mod: float = 0.0  # perf_counter of the last flow-mod or group-mod
    sent: int = 0
    ready: bool = False
    latencies: list[float] = field(default_factory=list)


class FakeSwitch:
    """One OpenFlow 1.3 switch over an asyncio stream: handshake, then packet-ins on demand."""

    def __init__(self, index: int, outstanding: int, dpid: int | None = None, ports: list[int] | None = None,
                 relay: Callable[[FakeSwitch, int, bytes], None] | None = None) -> None:
        self.index = index
        self.dpid = dpid if dpid is not None else 0xCB00_0000_0000 + index + 1
        self.ports = ports
        self.relay = relay  # called with (switch, out_port, frame) for controller-sourced packet-outs
        self.outstanding = outstanding
        self.counters = SwitchCounters()
        self.messages = [packet_in(index, h, 0x100 + h) for h in range(HOSTS_PER_SWITCH)] if outstanding else []
        self.next_host = 0
        self.running = False
        self.sent_at: float = 0.0
        self.writer: asyncio.StreamWriter | None = None

    @property
    def answered(self) -> int:
        return self.counters.flow_mods + self.counters.packet_outs

    def _fill(self) -> None:
        """Send packet-ins until `outstanding` are unanswered (one write for the batch)."""
        missing = self.outstanding - (self.counters.sent - self.answered)
        if missing <= 0 or not self.running or self.writer is None:
            return
        batch = []
        for _ in range(missing):
            batch.append(self.messages[self.next_host])
            self.next_host = (self.next_host + 1) % HOSTS_PER_SWITCH
        self.counters.sent += missing
        self.sent_at = time.perf_counter()
        self.writer.write(b"".join(batch))

    def start_load(self) -> None:
        self.running = True
        self.counters.sent = self.answered  # forget answers to anything sent before the load
        self._fill()

    def stop_load(self) -> None:
        self.running = False

    async def run(self, host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.writer = writer
        writer.write(header(OFPT_HELLO, 8, 1))
        buf = b""
        try:
            while True:
                data = await reader.read(1 << 18)
                if not data:
                    return
                buf += data
                offset, answers = 0, 0
                while len(buf) - offset >= 8:
                    _, msg_type, length, xid = HEADER.unpack_from(buf, offset)
                    if length < 8:
                        raise ConnectionError(f"switch {self.index}: bad OpenFlow length {length}")
                    if len(buf) - offset < length:
                        break
                    if msg_type == OFPT_FLOW_MOD:
                        self.counters.flow_mods += 1
                        self.counters.last_mod = time.perf_counter()
                        answers += 1
                    elif msg_type == OFPT_GROUP_MOD:
                        self.counters.group_mods += 1
                        self.counters.last_mod = time.perf_counter()
                    elif msg_type == OFPT_PACKET_OUT:
                        in_port = struct.unpack_from("!I", buf, offset + 12)[0]
                        if in_port != OFPP_CONTROLLER:
                            self.counters.packet_outs += 1
                            answers += 1
                        elif self.relay is not None:
                            self._relay(buf[offset:offset + length])
                    else:
                        self._control(msg_type, xid, buf[offset + 8:offset + length])
                    offset += length
                buf = buf[offset:]
                if answers and self.running:
                    if self.outstanding == 1:
                        self.counters.latencies.append(time.perf_counter() - self.sent_at)
                    self._fill()
        finally:
            writer.close()

    def _relay(self, msg: bytes) -> None:
        """A controller-sourced packet-out (an LLDP probe): hand its frame to the relay for every
        OUTPUT action, so the peer switch can send it back as a packet-in, as a wire would."""
        assert self.relay is not None
        actions_len = struct.unpack_from("!H", msg, 16)[0]
        offset, end = 24, 24 + actions_len
        frame = msg[end:]
        while offset < end:
            action_type, action_len = struct.unpack_from("!HH", msg, offset)
            if action_type == 0:  # OFPAT_OUTPUT
                self.relay(self, struct.unpack_from("!I", msg, offset + 4)[0], frame)
            offset += max(action_len, 8)

    def send_raw(self, data: bytes) -> None:
        if self.writer is not None:
            self.writer.write(data)

    def _control(self, msg_type: int, xid: int, body: bytes) -> None:
        """Answer what a real switch must answer for the controller to move on."""
        assert self.writer is not None
        if msg_type == OFPT_FEATURES_REQUEST:
            self.writer.write(features_reply(xid, self.dpid))
            self.counters.ready = True
        elif msg_type == OFPT_ECHO_REQUEST:
            self.writer.write(header(OFPT_ECHO_REPLY, 8 + len(body), xid) + body)
        elif msg_type == OFPT_BARRIER_REQUEST:
            self.writer.write(header(OFPT_BARRIER_REPLY, 8, xid))
        elif msg_type == OFPT_GET_CONFIG_REQUEST:
            self.writer.write(header(OFPT_GET_CONFIG_REPLY, 12, xid) + struct.pack("!HH", 0, 0xFFFF))
        elif msg_type == OFPT_ROLE_REQUEST:
            self.writer.write(header(OFPT_ROLE_REPLY, 8 + len(body), xid) + body)
        elif msg_type == OFPT_MULTIPART_REQUEST:
            mp_type = struct.unpack_from("!H", body)[0]
            if mp_type == OFPMP_PORT_DESC:
                payload = port_desc(self.index, self.ports)
            elif mp_type == OFPMP_DESC:
                payload = DESC_BODY
            else:
                payload = b""  # no flows, groups, meters, stats: an empty but well-formed reply
            reply = struct.pack("!HH4x", mp_type, 0) + payload
            self.writer.write(header(OFPT_MULTIPART_REPLY, 8 + len(reply), xid) + reply)


@dataclass
class ModeResult:
    windows: list[float]  # answers/s per measured window

    @property
    def median(self) -> float:
        return statistics.median(self.windows) if self.windows else 0.0


async def measure(host: str, port: int, switches: int, outstanding: int, loops: int, window_ms: int,
                  settle: float) -> ModeResult:
    """Connect the fake switches, wait for their handshakes, then count answers per window."""
    fakes = [FakeSwitch(i, outstanding) for i in range(switches)]
    tasks = [asyncio.create_task(f.run(host, port)) for f in fakes]
    try:
        deadline = time.monotonic() + 20
        while not all(f.counters.ready for f in fakes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {sum(f.counters.ready for f in fakes)} of {switches} switches "
                                   "got a features request (controller not speaking OpenFlow 1.3?)")
            for t in tasks:
                if t.done():
                    t.result()  # re-raise a connection failure
            await asyncio.sleep(0.05)
        await asyncio.sleep(settle)  # let connect-time flow-mods and probes pass
        for f in fakes:
            f.start_load()
        windows = []
        for loop in range(loops + 1):  # the first window warms up (MAC learning, caches)
            before = sum(f.answered for f in fakes)
            t0 = time.perf_counter()
            await asyncio.sleep(window_ms / 1000)
            elapsed = time.perf_counter() - t0
            if loop:
                windows.append((sum(f.answered for f in fakes) - before) / elapsed)
        for f in fakes:
            f.stop_load()
        return ModeResult(windows)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def install_time(spec: str, port: int, quiet: float = 3.0, limit: float = 300.0) -> dict[str, float]:
    """Fake switches wired as topology `spec` (LLDP probes relayed to the peer switch, as a wire
    would); how long after the last switch connected the controller's last flow-mod or group-mod
    came, i.e. discovery plus proactive installation, and how many messages that took."""
    from topology.builders import build

    topo = build(spec)
    names = topo.bridges
    ports_of = {n: topo.ports(n) for n in names}
    by_dpid = {topo.dpid(n): n for n in names}
    fakes: dict[str, FakeSwitch] = {}

    def relay(switch: FakeSwitch, out_port: int, frame: bytes) -> None:
        name = by_dpid[switch.dpid]
        peer = ports_of[name].get(out_port)
        if peer in fakes:
            fakes[peer].send_raw(packet_in_frame(topo.port(peer, name), 0xFFFFFFFF, frame, reason=1))

    for i, name in enumerate(names):
        fakes[name] = FakeSwitch(i, 0, dpid=topo.dpid(name), ports=sorted(ports_of[name]), relay=relay)
    tasks = [asyncio.create_task(f.run("127.0.0.1", port)) for f in fakes.values()]
    try:
        start = time.perf_counter()
        while not all(f.counters.ready for f in fakes.values()):
            if time.perf_counter() - start > limit:
                raise TimeoutError(f"{spec}: only {sum(f.counters.ready for f in fakes.values())} of "
                                   f"{len(fakes)} switches connected")
            await asyncio.sleep(0.01)
        connected = time.perf_counter()
        while True:
            await asyncio.sleep(0.25)
            last = max(f.counters.last_mod for f in fakes.values())
            if last and time.perf_counter() - last > quiet:
                break
            if time.perf_counter() - connected > limit:
                raise TimeoutError(f"{spec}: the controller was still installing rules {limit:.0f} s after "
                                   "the last switch connected")
        return {"bridges": len(fakes), "connect_s": connected - start,
                "install_s": max(0.0, last - connected),
                "flow_mods": sum(f.counters.flow_mods for f in fakes.values()),
                "group_mods": sum(f.counters.group_mods for f in fakes.values()),
                "containers": len(topo.containers)}
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def bench_install(spec: str) -> dict[str, float]:
    """The default pipeline (with --topology) against fake switches wired as `spec`."""
    from topology.builders import build

    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="cbench-topo-") as topo_file:
        json.dump({"topology": build(spec).to_dict()}, topo_file)
        topo_file.flush()
        port = free_port()
        proc = start_controller("pipeline", port, ["--topology", topo_file.name])
        try:
            result = asyncio.run(install_time(spec, port))
        finally:
            stop_controller(proc)
    print(f"  proactive install {spec}: {result['bridges']} bridges, {result['containers']} containers: "
          f"{result['install_s']:.2f} s after the last switch connected, {result['flow_mods']:,} flow-mods, "
          f"{result['group_mods']:,} group-mods", flush=True)
    return result


# --- controllers ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CONTROLLERS = {
    "simple_switch_13": [str(ROOT / "tests" / "fixtures" / "ryu_apps" / "simple_switch_13.py")],
    "l2_learning": ["l2_learning"],
    "pipeline": [],  # the runner's default app set
}
BASELINE = "simple_switch_13"


def pinning(spec: str) -> tuple[int | None, set[int] | None]:
    """(controller CPU, generator CPUs) for --controller-cpu: 'auto' gives the controller the last
    CPU and the fake switches the others (the issue's "controller pinned to one core", without the
    generator competing for it), a number that CPU, 'none' no pinning."""
    cpus = sorted(os.sched_getaffinity(0))
    if spec == "none" or (spec == "auto" and len(cpus) < 2):
        return None, None
    cpu = cpus[-1] if spec == "auto" else int(spec)
    if cpu not in cpus:
        raise SystemExit(f"cbench: --controller-cpu {spec}: CPU {cpu} is not available (have {cpus})")
    others = set(cpus) - {cpu}
    return cpu, others or None


CONTROLLER_CPU: int | None = None  # set by main from --controller-cpu


def start_controller(name: str, port: int, extra: list[str] | None = None) -> subprocess.Popen:
    if name == "ovs-testcontroller":
        exe = shutil.which("ovs-testcontroller")
        if exe is None:
            raise SystemExit("cbench: ovs-testcontroller not found (apt-get install openvswitch-testcontroller)")
        argv = [exe, "-O", "OpenFlow13", "-vconsole:off", "-vsyslog:off", f"ptcp:{port}:127.0.0.1"]
    else:
        argv = [sys.executable, "-m", "controller_apps.runner", *CONTROLLERS[name],
                "--listen", f"127.0.0.1:{port}", "--api", "none", *(extra or [])]
    # The log goes to a file: a pipe nobody reads would fill up and stall a controller that logs
    # every packet-in (simple_switch_13 does).
    log = tempfile.TemporaryFile()  # noqa: SIM115 (the controller process writes it until stopped)
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if CONTROLLER_CPU is not None:
        os.sched_setaffinity(proc.pid, {CONTROLLER_CPU})  # before its interpreter starts any thread
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"cbench: controller {name} exited: {log.read().decode(errors='replace')[-400:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    stop_controller(proc)
    raise SystemExit(f"cbench: controller {name} did not listen on {port}")


def stop_controller(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench_one(name: str, args: argparse.Namespace) -> dict[str, ModeResult]:
    results = {}
    for mode, outstanding in (("throughput", args.outstanding), ("latency", 1)):
        port = free_port()
        proc = start_controller(name, port)  # a fresh controller per mode: no state carried over
        try:
            results[mode] = asyncio.run(measure("127.0.0.1", port, args.switches, outstanding, args.loops,
                                                args.ms, args.settle))
        finally:
            stop_controller(proc)
        print(f"  {name:20} {mode:10} median {results[mode].median:10,.0f} answers/s "
              f"(windows: {', '.join(f'{w:,.0f}' for w in results[mode].windows)})", flush=True)
    return results


def table(results: dict[str, dict[str, ModeResult]], args: argparse.Namespace) -> str:
    base = results.get(BASELINE)
    lines = ["| controller | throughput (answers/s) | ratio | latency mode (answers/s) | ratio | mean RTT |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, modes in results.items():
        thr, lat = modes["throughput"].median, modes["latency"].median
        r_thr = f"{thr / base['throughput'].median:.2f}x" if base and base["throughput"].median else "-"
        r_lat = f"{lat / base['latency'].median:.2f}x" if base and base["latency"].median else "-"
        rtt = f"{args.switches / lat * 1e3:.2f} ms" if lat else "-"
        lines.append(f"| {name} | {thr:,.0f} | {r_thr} | {lat:,.0f} | {r_lat} | {rtt} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
            f"Python {platform.python_version()}")


def record(text: str) -> None:
    """Replace this benchmark's section of bench/RESULTS.md (other sections belong to others)."""
    from bench.run_all import record_section

    record_section(SECTION, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 windows of 1 s per mode (a smoke run)")
    parser.add_argument("--switches", type=int, default=16)
    parser.add_argument("--outstanding", type=int, default=1000, help="packet-ins in flight per switch")
    parser.add_argument("--loops", type=int, default=5, help="measured windows per mode and round")
    parser.add_argument("--ms", type=int, default=1000, help="window length in milliseconds")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the controllers")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between handshake and load")
    parser.add_argument("--controllers", default="simple_switch_13,l2_learning,pipeline,ovs-testcontroller")
    parser.add_argument("--install", metavar="SPEC", default=None,
                        help="also time the default pipeline's proactive install on fake switches wired as SPEC "
                             "(e.g. fattree:8)")
    parser.add_argument("--controller-cpu", default="auto", metavar="CPU|auto|none",
                        help="pin each controller to one CPU (auto: the last one, the fake switches on the others)")
    parser.add_argument("--record", action="store_true", help=f"write the results into {RESULTS}")
    args = parser.parse_args(argv)
    global CONTROLLER_CPU
    if args.controller_cpu not in ("auto", "none") and not args.controller_cpu.isdigit():
        parser.error(f"--controller-cpu {args.controller_cpu!r}: a CPU number, auto or none")
    CONTROLLER_CPU, generator_cpus = pinning(args.controller_cpu)
    if generator_cpus is not None:
        os.sched_setaffinity(0, generator_cpus)
    if args.quick:
        args.loops, args.ms, args.settle, args.rounds = 3, 1000, 1.0, 1
    names = [n.strip() for n in args.controllers.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTROLLERS and n != "ovs-testcontroller"]
    if unknown:
        parser.error(f"unknown controller {unknown[0]!r} (one of {', '.join([*CONTROLLERS, 'ovs-testcontroller'])})")
    pinned = (f"controller pinned to CPU {CONTROLLER_CPU}" if CONTROLLER_CPU is not None else "controller not pinned")
    print(f"cbench: {args.switches} switches, {args.outstanding} outstanding (throughput) / 1 (latency), "
          f"{args.rounds} rounds of {args.loops} x {args.ms} ms windows, {pinned}", flush=True)
    # Rounds interleave the controllers, so a burst of load from elsewhere on the machine hits
    # all of them alike instead of whichever happened to run at that moment.
    results: dict[str, dict[str, ModeResult]] = {}
    for round_no in range(args.rounds if names else 0):
        if args.rounds > 1:
            print(f" round {round_no + 1} of {args.rounds}", flush=True)
        for name in names:
            for mode, result in bench_one(name, args).items():
                results.setdefault(name, {}).setdefault(mode, ModeResult([])).windows.extend(result.windows)
    summary = table(results, args) if results else ""
    if summary:
        print(summary)
    if args.install:
        inst = bench_install(args.install)
        summary += (f"\n\nProactive install, {args.install} ({inst['bridges']:.0f} bridges, "
                    f"{inst['containers']:.0f} containers; fake switches relaying LLDP like wires, default app set "
                    f"with the topology): last rule {inst['install_s']:.2f} s after the last switch connected "
                    f"(LLDP discovery included), {inst['flow_mods']:,.0f} flow-mods and "
                    f"{inst['group_mods']:,.0f} group-mods.")
    load = os.getloadavg()
    if args.record:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = " ".join(["python bench/cbench.py"] + [a for a in (["--quick"] if args.quick else [])
                                                          + ([f"--install {args.install}"] if args.install else [])])
        record(f"Run {stamp} on {machine()}; `{command}`: "
               f"{args.switches} fake OpenFlow 1.3 switches, {args.outstanding} outstanding packet-ins each "
               f"in throughput mode, 1 in latency mode; median of {args.rounds * args.loops} windows of "
               f"{args.ms} ms ({args.rounds} interleaved rounds, each after one warm-up window); "
               f"{pinned}, the fake switches on the other CPUs. "
               f"Ratios are to {BASELINE} (Ryu's sample on plain os-ken). "
               f"Load average when done: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min; the "
               "box is shared, so compare ratios within one run rather than absolute numbers).\n\n"
               + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
