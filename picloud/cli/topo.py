"""`picloud topo show|export`: look at a topology, or turn any source into a YAML/JSON file.

Both take what `picloud up` takes (a builder spec or a file) and validate it the same way, so
`picloud topo show my.yaml` is the quick check before building anything.
"""

from __future__ import annotations

import argparse
import json
import sys

SOURCE_HELP = ("a builder spec (single[:PIS], linear:N, tree:DEPTH,FANOUT, fattree:K, "
               "leafspine:SPINES,LEAVES,PIS, picloud:RACKS,PIS) or a file (.yaml, .json, .graphml, "
               "Mininet .py[:NAME])")


def register(sub: argparse._SubParsersAction) -> None:
    topo = sub.add_parser("topo", help="show or export a topology (no root needed)")
    actions = topo.add_subparsers(dest="topo_command", metavar="ACTION")
    topo.set_defaults(func=lambda args: (topo.print_help(), 2)[1])

    show = actions.add_parser("show", help="counts, diameter between Pis and bisection width")
    show.add_argument("source", metavar="SPEC|FILE", help=SOURCE_HELP)
    show.add_argument("--containers-per-pi", type=int, default=1, metavar="N",
                      help="containers on each Pi (builders, and files without containers)")
    show.add_argument("--pi-model", default=None, help="shape every Pi uplink to this model's NIC rate")
    show.add_argument("--bw", type=float, default=None, metavar="MBIT", help="rate of every fabric link")
    show.add_argument("--json", action="store_true", help="print the numbers as JSON")
    show.set_defaults(func=_show)

    export = actions.add_parser("export", help="write a topology as YAML or JSON")
    export.add_argument("source", metavar="SPEC|FILE", help=SOURCE_HELP)
    export.add_argument("--format", choices=("yaml", "json"), default=None,
                        help="output format (default: from the -o extension, else yaml)")
    export.add_argument("-o", "--output", metavar="FILE", default=None, help="write here instead of stdout")
    export.add_argument("--containers-per-pi", type=int, default=1, metavar="N",
                      help="containers on each Pi (builders, and files without containers)")
    export.add_argument("--pi-model", default=None, help="shape every Pi uplink to this model's NIC rate")
    export.add_argument("--bw", type=float, default=None, metavar="MBIT", help="rate of every fabric link")
    export.set_defaults(func=_export)


def _warn_code(source: str) -> None:
    from topology.loader import code_warning

    warning = code_warning(source)
    if warning:
        print(warning, file=sys.stderr, flush=True)


def _is_spec(source: str) -> bool:
    from topology.builders import FAMILIES

    return source.strip().split(":")[0].lower() in FAMILIES


def _show(args: argparse.Namespace) -> int:
    from topology.loader import load_topology
    from topology.metrics import summary

    _warn_code(args.source)
    topo = load_topology(args.source, containers_per_pi=args.containers_per_pi, pi_model=args.pi_model, bw=args.bw)
    data = summary(topo, spec=args.source if _is_spec(args.source) else None)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(render(data))
    return 0


def render(data: dict) -> str:
    """The human summary: one line per quantity, the sub-counts in brackets."""
    roles = ", ".join(f"{role} {n}" for role, n in data["switch_roles"].items())
    spread = data["containers_per_pi"]
    per_pi = (f"{next(iter(spread))} per Pi" if len(spread) == 1
              else ", ".join(f"{n} Pis with {k}" for k, n in spread.items()))
    cut = data["bisection"]
    diameter = data["diameter"]
    lines = [
        f"topology     {data['name']}",
        f"switches     {data['switches']}" + (f"  ({roles})" if roles else ""),
        f"pis          {data['pis']}" + (f"  (in {data['racks']} racks)" if data["racks"] else ""),
        f"containers   {data['containers']}" + (f"  ({per_pi})" if per_pi else ""),
        f"links        {data['fabric_links']} fabric + {data['container_links']} container attachments",
        f"diameter     {'unreachable Pis' if diameter is None else _links(diameter)} (longest shortest "
        "path between two Pis)",
        f"bisection    {_links(cut['links'])} ({cut['method']})",
    ]
    return "\n".join(lines)


def _links(n: int) -> str:
    return f"{n} link" if n == 1 else f"{n} links"


def _export(args: argparse.Namespace) -> int:
    from topology.formats import dumps, format_by_extension, write_file
    from topology.loader import load_topology

    fmt = args.format or (format_by_extension(args.output) if args.output else "yaml")
    if fmt not in ("yaml", "json"):
        from picloud.errors import TopologyError

        raise TopologyError(f"{args.output}: cannot tell the format to write (use --format yaml|json)")
    _warn_code(args.source)
    topo = load_topology(args.source, containers_per_pi=args.containers_per_pi, pi_model=args.pi_model, bw=args.bw)
    if args.output:
        write_file(topo, args.output, fmt)
        print(f"wrote {args.output} ({fmt}, {len(topo.bridges)} bridges, {len(topo.containers)} containers)",
              file=sys.stderr)
    else:
        sys.stdout.write(dumps(topo, fmt))
    return 0
