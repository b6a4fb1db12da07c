"""The Raspberry Pi Cloud web experiment: web servers in containers under httperf-style load.

The Glasgow Raspberry Pi Cloud (Tso et al., 2013) measured each Pi's web serving with httperf: an
open-loop client opens new connections at a fixed rate, one request per connection, and reports
replies per second, response times and errors, while the servers' CPU is watched. This module does
the same on a PiCloud fabric:

- `python -m traffic.web serve --port P --size N`: a minimal HTTP/1.0 server (asyncio) answering
  every GET with N bytes, then closing, as a static page served by lighttpd would;
- `python -m traffic.web client --targets IP:PORT,... --rate R --duration D --timeout T`: the
  httperf-style client. Connection i starts at t0 + i / R (httperf's --rate is deterministic),
  round-robin over the targets; a reply is complete when all N body bytes arrived; a request still
  open after T seconds counts as a timeout error. Prints one JSON summary line;
- `run(testbed, ...)`: starts the servers and the client through `testbed.fabric.popen`, samples
  each server process's CPU time from /proc every 0.5 s, and returns (and saves) the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from picloud.errors import TrafficError
from topology.backends.base import fabric_of

if TYPE_CHECKING:
    from topology.backends.base import Run

WEB_PORT = 8081
REPO_ROOT = Path(__file__).resolve().parent.parent


# --- in the containers ---------------------------------------------------------------------------
async def _serve(port: int, size: int) -> None:
    body = b"x" * size
    head = f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {size}\r\n\r\n".encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "0.0.0.0", port, backlog=4096, reuse_address=True)
    print(json.dumps({"ev": "ready", "port": port, "pid": os.getpid()}), flush=True)
    async with server:
        await server.serve_forever()


async def _client(targets: list[tuple[str, int]], rate: float, duration: float, timeout: float,
                  size: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.1
    total = int(rate * duration)
    response_ms: list[float] = []
    connect_ms: list[float] = []
    lateness_ms: list[float] = []
    errors: dict[str, int] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int, scheduled: float) -> None:
        host, port = targets[i % len(targets)]
        start = loop.time()
        lateness_ms.append((start - scheduled) * 1e3)
        writer = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
                connect_ms.append((loop.time() - start) * 1e3)
                writer.write(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                await writer.drain()
                data = await reader.read()
                if len(data) < size or b" 200 " not in data[:16]:
                    errors["incomplete"] = errors.get("incomplete", 0) + 1
                    return
                response_ms.append((loop.time() - start) * 1e3)
        except TimeoutError:
            errors["timeout"] = errors.get("timeout", 0) + 1
        except ConnectionRefusedError:
            errors["refused"] = errors.get("refused", 0) + 1
        except ConnectionResetError:
            errors["reset"] = errors.get("reset", 0) + 1
        except OSError as exc:
            key = type(exc).__name__
            errors[key] = errors.get(key, 0) + 1
        finally:
            if writer is not None:
                writer.close()

    for i in range(total):
        scheduled = t0 + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(one(i, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = loop.time() - t0

    def stats(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"mean": None, "p50": None, "p99": None, "max": None}
        arr = np.asarray(values)
        return {"mean": float(arr.mean()), "p50": float(np.percentile(arr, 50)),
                "p99": float(np.percentile(arr, 99)), "max": float(arr.max())}

    return {"ev": "result", "requests": total, "replies": len(response_ms), "errors": errors,
            "error_count": sum(errors.values()), "request_rate": total / duration,
            "reply_rate": len(response_ms) / max(elapsed, duration), "elapsed_s": elapsed,
            "response_ms": stats(response_ms), "connect_ms": stats(connect_ms),
            "lateness_ms": stats(lateness_ms)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m traffic.web")
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=WEB_PORT)
    s.add_argument("--size", type=int, default=1024)
    c = sub.add_parser("client")
    c.add_argument("--targets", required=True, help="IP:PORT,IP:PORT,...")
    c.add_argument("--rate", type=float, required=True)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--timeout", type=float, default=2.0)
    c.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        asyncio.run(_serve(args.port, args.size))
        return 0
    targets = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in args.targets.split(",")]
    result = asyncio.run(_client(targets, args.rate, args.duration, args.timeout, args.size))
    print(json.dumps(result), flush=True)
    return 0


# --- orchestration (host side) -------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, from /proc/PID/stat (fields 14 and 15, in clock ticks)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def run(testbed: Run, servers: int | None = None, client: str | None = None, rate: float = 100.0,
        duration: float = 10.0, size: int = 1024, timeout: float = 2.0, out: str | Path | None = None,
        port: int = WEB_PORT) -> dict[str, Any]:
    """N web servers, one httperf-style client; returns replies/s, response times, errors, server CPU."""
    containers = list(testbed.containers)
    client = client or (containers[-1] if containers else None)
    if client not in containers:
        raise TrafficError(f"web: client {client!r} is not a container of the run")
    candidates = [c for c in containers if c != client]
    servers = len(candidates) if servers is None else servers
    if not 1 <= servers <= len(candidates):
        raise TrafficError(f"web: {servers} server(s) with {len(candidates)} other container(s) "
                           f"(needs 1..{len(candidates)})")
    if not (rate > 0 and duration > 0 and size >= 0 and timeout > 0):
        raise TrafficError(f"web: rate {rate}/s, duration {duration} s, size {size} B, timeout {timeout} s "
                           "(all positive)")
    chosen = candidates[:servers]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    procs: dict[str, subprocess.Popen] = {}
    pids: dict[str, int] = {}
    client_proc = None
    try:
        for c in chosen:
            procs[c] = fabric_of(testbed).popen(
                c, [sys.executable, "-m", "traffic.web", "serve", "--port", str(port), "--size", str(size)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=str(REPO_ROOT))
        for c, proc in procs.items():
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                raise TrafficError(f"web: server in {c} did not start")
            pids[c] = int(json.loads(line)["pid"])
        targets = ",".join(f"{testbed.container_ip(c)}:{port}" for c in chosen)
        before = {c: _cpu_seconds(p) or 0.0 for c, p in pids.items()}
        t_start = time.monotonic()
        client_proc = fabric_of(testbed).popen(
            client, [sys.executable, "-m", "traffic.web", "client", "--targets", targets, "--rate", str(rate),
                     "--duration", str(duration), "--timeout", str(timeout), "--size", str(size)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO_ROOT))
        from traffic.monitor import Monitor  # the fidelity monitor, as on every traffic run

        monitor = Monitor(testbed, {**pids, client: client_proc.pid}).start()
        samples: dict[str, list[float]] = {c: [] for c in pids}
        last = dict(before)
        last_t = t_start
        while client_proc.poll() is None:
            time.sleep(0.5)
            now_t = time.monotonic()
            for c, p in pids.items():
                now = _cpu_seconds(p)
                if now is not None:
                    samples[c].append((now - last[c]) / (now_t - last_t))
                    last[c] = now
            last_t = now_t
        counters = monitor.stop()
        stdout, stderr = client_proc.communicate(timeout=30)
        wall = time.monotonic() - t_start
        lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        if client_proc.returncode != 0 or not lines:
            raise TrafficError(f"web: client in {client} failed "
                               f"({stderr.strip().splitlines()[-1:] or 'no output'})")
        result = json.loads(lines[-1])
        result.pop("ev", None)
        cpu = {c: {"mean": float(np.mean(v)) if v else None, "max": float(np.max(v)) if v else None,
                   "total_s": (last[c] - before[c]), "share_of_run": (last[c] - before[c]) / wall}
               for c, v in samples.items()}
        result.update(servers=chosen, client=client, size=size, timeout_s=timeout, duration_s=duration,
                      server_cpu=cpu, run_prefix=getattr(testbed.state, "prefix", None))
        from traffic import fidelity

        # Host-side checks only: requests are not a flow-size workload, so KS, load and the FCT bound are n/a.
        verdict = fidelity.assess(counters, [], {}, None, {})
        result["fidelity"] = {k: verdict[k] for k in ("verdict", "reasons", "checks", "numbers")}
    finally:
        if client_proc is not None:
            _stop(client_proc)
        for proc in procs.values():
            _stop(proc)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "web.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def render(result: dict[str, Any]) -> str:
    from traffic.fidelity import line as fidelity_line

    r, c = result["response_ms"], result["connect_ms"]
    cpu = [v["mean"] for v in result["server_cpu"].values() if v["mean"] is not None]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} ms"

    return "\n".join([
        f"servers            {len(result['servers'])} ({', '.join(result['servers'])}), client "
        f"{result['client']}",
        f"requests           {result['requests']} at {result['request_rate']:.1f}/s, {result['size']} B "
        "replies",
        f"replies/s          {result['reply_rate']:.1f}",
        f"response time      mean {ms(r['mean'])}  p50 {ms(r['p50'])}  p99 {ms(r['p99'])}",
        f"connect time       mean {ms(c['mean'])}  p99 {ms(c['p99'])}",
        f"errors             {result['error_count']} {result['errors'] or ''}".rstrip(),
        f"server CPU         mean {100 * float(np.mean(cpu)):.1f}% of a core per server" if cpu else
        "server CPU         -",
        fidelity_line(result.get("fidelity")),
    ])


if __name__ == "__main__":
    sys.exit(main())
