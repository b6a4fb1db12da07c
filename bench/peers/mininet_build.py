"""Mininet 2.3.0 as a benchmark peer: build a given graph on the userspace datapath, time it, stop it.

    /usr/bin/python3 bench/peers/mininet_build.py GRAPH.json [--iperf SECONDS --rounds N]

Run by bench/fabric_bench.py with Debian's python3 (Mininet lives in its dist-packages, not in our
venv), in its own process so Mininet's module-level state and its signal handling never touch the
benchmark. GRAPH.json is {"prefix", "switches": [names], "hosts": [names], "links": [[a, b], ...],
"controller": {"argv", "cwd", "port"} | null} with every name already carrying the run's prefix
(fabric_bench picks one that nothing on the machine uses), so Mininet's bridges and root-side
interfaces (PREFIXs3-eth1) never collide with anyone else's.

Safety on a shared machine: this never calls mininet.clean.cleanup() (`mn -c`), which deletes every
OVS bridge and kills processes by name. The network is stopped with net.stop() in a finally, and
anything left with our prefix afterwards is deleted by name.

The controller, when given, is started here (PiCloud's own runner: Mininet's default controller,
ovs-testcontroller, serves at most 16 switches) and Mininet's switches reach it as a RemoteController.

Prints one JSON line: build_s (controller start, Mininet() with build, start, wait for every switch),
down_s (net.stop()), and with --iperf the goodput of each round between the first and last host.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from functools import partial


def leftovers(prefix: str) -> tuple[list[str], list[str]]:
    """Bridges and root-namespace interfaces whose name starts with our prefix."""
    vsctl = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True, check=True)
    bridges = vsctl.stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    ifaces = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if ":" in line]
    return [b for b in bridges if b.startswith(prefix)], [i for i in ifaces if i.startswith(prefix)]


def remove_leftovers(prefix: str) -> list[str]:
    """Delete exactly the objects named with our prefix (a net.stop() that failed half way)."""
    bridges, ifaces = leftovers(prefix)
    for bridge in bridges:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False)
    for iface in ifaces:
        subprocess.run(["ip", "link", "del", iface], capture_output=True, check=False)
    return bridges + ifaces


def iperf(net, src: str, dst: str, seconds: float) -> float:
    """One iperf3 TCP run src -> dst; goodput in Mbit/s as the receiver counted it."""
    server_host, client_host = net.get(dst), net.get(src)
    server = server_host.popen(["iperf3", "-s", "-1", "-B", server_host.IP()], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # iperf3 has no ready signal; a refused connect would fail the round
        out = client_host.popen(["iperf3", "-c", server_host.IP(), "-t", str(seconds), "-J"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, _ = out.communicate(timeout=seconds + 30)
        return json.loads(stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        server.kill()
        server.wait()


def stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (fabric_bench's timeout) unwinds through main's finally like Ctrl-C does; a second one
    is ignored so it cannot cut net.stop() short and leave half a network behind."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph")
    parser.add_argument("--iperf", type=float, default=0.0, help="seconds per iperf3 round (0: none)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--link", choices=["tcu", "default"], default="tcu",
                        help="tcu: TCULink, TX/RX checksum offload off, as `mn` does for user-space switches")
    args = parser.parse_args()
    with open(args.graph) as f:
        graph = json.load(f)
    prefix = graph["prefix"]
    if any(leftovers(prefix)):
        print(json.dumps({"error": f"objects named {prefix}* already exist; refusing to start"}))
        return 2

    from mininet.link import Link, TCULink
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import OVSSwitch, RemoteController
    from mininet.topo import Topo

    setLogLevel("error")
    signal.signal(signal.SIGTERM, stop_on_sigterm)

    topo = Topo()
    for i, name in enumerate(graph["switches"], start=1):
        topo.addSwitch(name, dpid=f"{i:016x}")
    for name in graph["hosts"]:
        topo.addHost(name)
    for a, b in graph["links"]:
        topo.addLink(a, b)
    ctl = graph.get("controller")  # {"argv": [...], "cwd": ..., "port": P} or None: standalone bridges
    controller = partial(RemoteController, ip="127.0.0.1", port=ctl["port"]) if ctl else None
    switch = partial(OVSSwitch, datapath="user", protocols="OpenFlow13",
                     failMode="secure" if ctl else "standalone")
    link = TCULink if args.link == "tcu" else Link
    result: dict = {"switches": len(graph["switches"]), "hosts": len(graph["hosts"]),
                    "links": len(graph["links"]), "link": args.link}
    net = None
    ctl_proc = None
    t0 = time.monotonic()
    try:
        if ctl:
            # The controller is part of what Mininet has to start, so its start is inside the timing.
            ctl_proc = subprocess.Popen(ctl["argv"], cwd=ctl["cwd"], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        net = Mininet(topo=topo, switch=switch, link=link, controller=controller, build=True,
                      autoSetMacs=True, waitConnected=False)
        net.start()
        if ctl and not net.waitConnected(timeout=120):
            raise RuntimeError("not every switch connected to the controller within 120 s")
        result["build_s"] = time.monotonic() - t0
        if args.iperf:
            src, dst = graph["hosts"][0], graph["hosts"][-1]
            result["iperf_mbps"] = [iperf(net, src, dst, args.iperf) for _ in range(args.rounds)]
    finally:
        t1 = time.monotonic()
        try:
            if net is not None:
                net.stop()
        finally:
            if ctl_proc is not None:
                ctl_proc.terminate()
                ctl_proc.wait(timeout=10)
            result["down_s"] = time.monotonic() - t1
            result["leftovers_removed"] = remove_leftovers(prefix)
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
