"""`picloud up|down|status|exec|ping|clean`: the fabric's life cycle, over the Testbed API."""

from __future__ import annotations

import argparse
import json
import sys
import time

from picloud.errors import FabricError
from topology.backends.base import state_of
from topology.fabric_plan import LINK_MODES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="build a fabric from a topology spec or file and start the controller")
    p.add_argument("topology", help="builder spec (fattree:4, picloud:4,4, ...) or a topology file")
    p.add_argument("--containers-per-pi", type=int, default=1, metavar="N")
    p.add_argument("--controller", default=None,
                   help="tcp:IP:PORT of an external controller, or 'none' for standalone switches "
                        "(loop-free topologies only); default: PiCloud's controller with the default apps")
    p.add_argument("--apps", nargs="+", default=None, metavar="APP",
                   help="controller apps to run instead of the default set (names or .py files)")
    p.add_argument("--tenants", default=None, metavar="FILE", help="tenants YAML file to apply")
    p.add_argument("--api-open", action="store_true",
                   help="controller API without a token for changes, as Ryu's (tutorials that curl it); "
                        "default: changes need the token in the run's state directory")
    p.add_argument("--of-versions", default=None, metavar="V,V",
                   help="OpenFlow versions every bridge offers, e.g. 13,14 (default: 10,11,12,13,14,15; "
                        "each app negotiates the one it declares, PiCloud's own apps 1.3)")
    p.add_argument("--backend", default="local", choices=["local", "docker", "cluster"])
    p.add_argument("--containers", default=None, choices=["namespace", "docker"],
                   help="'docker' makes every container a Docker container (same as --backend docker)")
    p.add_argument("--image", default=None, help="Docker image for --containers docker")
    p.add_argument("--pi-model", default=None,
                   help="Pi model (b, b+, 2, 3, 3b+, 4, 5): its NIC rate shapes every Pi uplink (b..3: 100 "
                        "Mbit/s, 3b+: 300, 4 and 5: 1000; picloud:R,P defaults to b) and, with Docker, "
                        "its CPU/memory set the container limits")
    p.add_argument("--bw", type=float, default=None, metavar="MBIT",
                   help="rate of every switch-to-switch (fabric) link, Mbit/s")
    p.add_argument("--fabric-links", default=None, choices=LINK_MODES,
                   help="local: switch-to-switch links as veth pairs (default) or OVS patch ports (faster "
                        "across bridges and to tear down; no shaping or capture on those links); auto: "
                        "patch ports where a link is unshaped, veth pairs where it is shaped")
    p.add_argument("--cluster", default=None, metavar="INVENTORY", help="run on real Pis listed in INVENTORY")
    p.add_argument("--openflow-tls", action=argparse.BooleanOptionalAction, default=None,
                   help="cluster: OpenFlow between the Pis and our controller over TLS with the cluster's CA "
                        "(default: on when the inventory's OVSDB endpoints are ssl:)")
    p.add_argument("--ui", action="store_true", help="also serve the web UI")
    p.add_argument("--port", type=int, default=8080, help="web UI port (with --ui)")
    p.add_argument("--detach", action="store_true", help="leave the run up and return (stop: picloud down)")
    p.set_defaults(func=_up)

    p = sub.add_parser("down", help="tear a run down")
    p.add_argument("--run", default=None, metavar="PREFIX")
    p.set_defaults(func=_down)

    p = sub.add_parser("status", help="list the runs that are up")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_status)

    p = sub.add_parser("exec", help="run a command in a container: picloud exec C -- CMD ARGS")
    p.add_argument("--run", default=None, metavar="PREFIX")
    p.add_argument("container")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=_exec)

    p = sub.add_parser("ping", help="reachability between containers, over ICMP and TCP")
    p.add_argument("--run", default=None, metavar="PREFIX")
    p.add_argument("--all", action="store_true", help="print the full loss matrices")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_ping)

    p = sub.add_parser("clean", help="remove every object left by PiCloud runs (and nothing else)")
    p.add_argument("--run", default=None, metavar="PREFIX", help="only this run")
    p.add_argument("--force", action="store_true",
                   help="also remove live runs (a running 'picloud up', a detached run whose controller runs)")
    p.set_defaults(func=_clean)


def _backend_options(args: argparse.Namespace) -> tuple[str, dict]:
    backend, options = args.backend, {}
    if args.containers == "docker":
        backend = "docker"
    if args.cluster:
        backend = "cluster"
        options["inventory"] = args.cluster
        if args.openflow_tls is not None:
            options["openflow_tls"] = args.openflow_tls
    elif args.openflow_tls is not None:
        raise FabricError("--openflow-tls: only with --cluster (local runs keep OpenFlow on loopback)")
    if backend != "local":
        if args.image:
            options["image"] = args.image
    elif args.image:
        raise FabricError("--image: only with --containers docker")
    if args.pi_model:
        options["pi_model"] = args.pi_model
    if args.bw is not None:
        options["bw"] = args.bw
    if args.fabric_links is not None:
        if backend != "local":
            raise FabricError("--fabric-links: only with the local backend")
        options["fabric_links"] = args.fabric_links
    return backend, options


def _up(args: argparse.Namespace) -> int:
    from picloud.progress import BringUpProgress
    from picloud.testbed import Testbed

    backend, options = _backend_options(args)
    controller = args.controller if args.controller else args.apps
    if args.controller and args.apps:
        raise FabricError("--controller and --apps: choose one (an external controller runs its own apps)")
    from topology.loader import code_warning

    warning = code_warning(args.topology)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    bar = BringUpProgress()  # drawn only on a terminal, and only once the bring-up passes ~3 s
    tb = Testbed(args.topology, containers_per_pi=args.containers_per_pi, controller=controller,
                 tenants=args.tenants, backend=backend, api_open=args.api_open, progress=bar,
                 of_versions=args.of_versions, **options)
    if args.api_open:
        print("picloud: warning: --api-open: anyone who can reach the controller API can change every flow "
              "table, including the rules that isolate tenants", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    try:
        tb.up()
    finally:
        bar.close()
    try:
        ui = tb.ui(port=args.port) if args.ui else None
        c = tb.topology.counts()
        datapath = getattr(tb.fabric, "datapath", backend)
        print(f"picloud: run {tb.prefix} up: {c['switches']} switches, {c['pis']} Pis, "
              f"{len(tb.containers)} containers, {c['links']} links, datapath {datapath}, "
              f"controller {state_of(tb).controller.get('target', 'none')}{_handshake(tb.handshake)}, "
              f"{time.monotonic() - t0:.1f}s"
              + (f", UI {ui.url} token {ui.token_hint()}" if ui else ""), flush=True)
        if args.detach:
            tb.detach()  # leave it up (and its UI, in its own process); `picloud down` attaches to it
            return 0
        print("picloud: Ctrl-C tears it down", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\npicloud: tearing down", flush=True)
        return 0
    finally:
        if tb.state is not None:
            if args.ui and "ui" in locals() and ui is not None:
                ui.stop()
            tb.down()


def _handshake(done: dict) -> str:
    """' (3 of 3 switches connected, OpenFlow 1.4)' for the ready line; '' without a controller."""
    if not done:
        return ""
    versions = done.get("versions") or {}
    if not versions:
        return f" ({done['switches']} of {done['switches']} bridges connected, version chosen by the controller)"
    at = ", ".join(f"{n} at OpenFlow {v}" if len(versions) > 1 else f"OpenFlow {v}"
                   for v, n in sorted(versions.items()))
    return f" ({sum(versions.values())} of {done['switches']} bridges connected, {at})"


def _down(args: argparse.Namespace) -> int:
    from picloud.testbed import Testbed

    tb = Testbed.attach(args.run)
    prefix = tb.prefix
    tb.down()
    print(f"picloud: run {prefix} torn down")
    return 0


def _status(args: argparse.Namespace) -> int:
    from picloud.runstate import RunState, list_runs
    from topology.effects import proc

    rows = []
    for prefix in list_runs():
        state = RunState.load(prefix)
        pids = [proc.ProcessRecord.from_dict(r) for r in state.objects.get("pids", [])]
        topo = state.topology or {}
        rows.append({
            "prefix": prefix, "created": state.created, "backend": state.backend,
            "topology": topo.get("name"), "switches": len(topo.get("switches", [])),
            "pis": len(topo.get("pis", [])),
            "containers": len(topo.get("containers", [])) + len(state.extra.get("containers", {})),
            "controller": state.controller.get("target", "none"),
            "processes_alive": sum(proc.is_ours(r) for r in pids), "processes": len(pids),
        })
    if args.json:
        print(json.dumps(rows, indent=1))
    elif not rows:
        print("no PiCloud runs are up")
    else:
        for r in rows:
            print(f"{r['prefix']}: {r['topology']} ({r['backend']}) {r['switches']} switches, {r['pis']} Pis, "
                  f"{r['containers']} containers; controller {r['controller']}; "
                  f"{r['processes_alive']}/{r['processes']} processes alive; since {r['created']}")
    return 0


def _exec(args: argparse.Namespace) -> int:
    from picloud.testbed import Testbed

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise FabricError("exec: no command given (picloud exec CONTAINER -- CMD ARGS)")
    tb = Testbed.attach(args.run)
    proc = tb.popen(args.container, cmd)
    return proc.wait()


def _ping(args: argparse.Namespace) -> int:
    from picloud.testbed import Testbed

    tb = Testbed.attach(args.run)
    results = {"icmp": tb.ping_all(), "tcp": tb.ping_all(tcp=True)}
    bad = 0
    for kind, matrix in results.items():
        pairs = [(s, d, loss) for s, row in matrix.items() for d, loss in row.items()]
        lost = [p for p in pairs if p[2] > 0]
        bad += len(lost)
        if not args.json:
            print(f"{kind}: {len(pairs) - len(lost)}/{len(pairs)} ordered pairs reachable"
                  + (f"; unreachable e.g. {lost[0][0]} -> {lost[0][1]}" if lost else ""))
            if args.all:
                _print_matrix(matrix)
    if args.json:
        print(json.dumps(results, indent=1))
    return 1 if bad else 0


def _print_matrix(matrix: dict[str, dict[str, float]]) -> None:
    names = list(matrix)
    width = max([len(n) for n in names] + [4])
    print(" " * width + " " + " ".join(f"{i:>3}" for i in range(len(names))))
    for i, s in enumerate(names):
        cells = " ".join("  -" if s == d else f"{matrix[s].get(d, 1.0) * 100:3.0f}" for d in names)
        print(f"{s:>{width}} {cells}   ({i})")
    sys.stdout.flush()


def _clean(args: argparse.Namespace) -> int:
    from picloud.clean import clean

    cleaned = clean([args.run] if args.run else None, force=args.force)
    print("picloud: cleaned " + (", ".join(cleaned) if cleaned else "nothing (no PiCloud objects found)"))
    return 0
