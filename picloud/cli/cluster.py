"""`picloud cluster`: check an inventory of Pis, emulate a cluster here, watch and repair a run."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="real (or emulated) clusters of Pis")
    csub = p.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)

    c = csub.add_parser("check", help="per Pi: reachable, OVS version and datapaths, Docker, controller")
    c.add_argument("inventory", help="inventory YAML (see provisioning/README.md)")
    c.add_argument("--controller", default=None, metavar="tcp:IP:PORT",
                   help="also check that each Pi's OVS can connect to this controller")
    c.add_argument("--timeout", type=float, default=5.0, help="seconds per Pi and check (default 5)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_check)

    e = csub.add_parser("emulate", help="N Pis as namespaces with private OVS instances, on this machine")
    esub = e.add_subparsers(dest="emulate_command", metavar="ACTION", required=True)
    start = esub.add_parser("start", help="start an emulated cluster and write its inventory")
    start.add_argument("name", help="2-8 characters of [a-z0-9], e.g. pce1")
    start.add_argument("--pis", type=int, default=3)
    start.add_argument("--subnet", default="172.29.0.0/24", help="underlay subnet; refused if it overlaps a route")
    start.add_argument("--inventory", default=None, metavar="FILE", help="where to write the inventory")
    start.set_defaults(func=_emulate_start)
    stop = esub.add_parser("stop", help="stop an emulated cluster and remove all it made")
    stop.add_argument("name")
    stop.set_defaults(func=_emulate_stop)

    for action, text in (("health", "what differs from the plan on each Pi"),
                         ("repair", "re-apply the plan to Pis that differ (after an OVS restart)")):
        h = csub.add_parser(action, help=text)
        h.add_argument("--run", default=None, metavar="PREFIX")
        if action == "repair":
            h.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                           help="keep checking every SECONDS and repair what differs, until Ctrl-C")
        h.set_defaults(func=_health, repair=action == "repair")


def _check(args: argparse.Namespace) -> int:
    import yaml

    from picloud.errors import ClusterError
    from topology.backends.cluster.check import check_cluster
    from topology.inventory import inventory_problems, parse_inventory

    try:
        with open(args.inventory) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ClusterError(f"{args.inventory}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ClusterError(f"{args.inventory}: not valid YAML ({str(exc).splitlines()[0]})") from None
    problems = inventory_problems(data, args.inventory)
    if problems:
        for line in problems:
            print(line)
        return 1
    reports = check_cluster(parse_inventory(data, args.inventory), args.controller, args.timeout)
    if args.json:
        print(json.dumps([{"name": r.name, "ok": r.ok, "problems": r.problems, **r.facts} for r in reports],
                         indent=2))
    else:
        for r in reports:
            facts = r.facts
            ovs = (f"OVS {facts['ovs_version']} ({', '.join(facts['datapath_types'])})" if facts.get("reachable")
                   else "OVS -")
            controller = f" controller {facts['controller']}" if "controller" in facts else ""
            print(f"{r.name:<12} {'ok' if r.ok else 'FAIL':<5} {ovs}  docker {facts.get('docker', '-')}{controller}")
            for line in r.problems:
                print(f"  {line}")
    return 0 if all(r.ok for r in reports) else 1


def _emulate_start(args: argparse.Namespace) -> int:
    from topology.backends.cluster.emulated import EmulatedCluster

    emu = EmulatedCluster(args.name, args.pis, args.subnet)
    emu.start()
    path = emu.write_inventory(args.inventory or f"{args.name}-inventory.yaml")
    print(f"emulated cluster {args.name}: {args.pis} pis on {emu.subnet}, inventory {path} "
          f"(stop: picloud cluster emulate stop {args.name})")
    return 0


def _emulate_stop(args: argparse.Namespace) -> int:
    from topology.backends.cluster.emulated import EmulatedCluster

    EmulatedCluster.load(args.name).stop()
    print(f"emulated cluster {args.name}: stopped")
    return 0


def _health(args: argparse.Namespace) -> int:
    from picloud.errors import ClusterError
    from picloud.testbed import Testbed

    tb = Testbed.attach(args.run)
    if tb.backend != "cluster":
        raise ClusterError(f"run {tb.prefix}: backend {tb.backend!r} (health and repair are for cluster runs)")
    from topology.backends.cluster.fabric import ClusterFabric

    fabric = tb.fabric
    assert isinstance(fabric, ClusterFabric)  # what attach() builds for a cluster run
    if args.repair and getattr(args, "watch", None):
        import time

        print(f"watching run {tb.prefix} every {args.watch:g} s (Ctrl-C stops)", flush=True)
        while True:
            repaired = fabric.repair()
            if repaired:
                print(f"{time.strftime('%H:%M:%S')} repaired: {', '.join(repaired)}", flush=True)
            time.sleep(args.watch)
    if args.repair:
        repaired = fabric.repair()
        print(f"repaired: {', '.join(repaired)}" if repaired else "nothing to repair")
    health = fabric.health()
    for pi, problems in health.items():
        print(f"{pi:<12} {'ok' if not problems else 'differs'}")
        for line in problems:
            print(f"  {line}")
    return 0 if not any(health.values()) else 1
