"""Topology files: YAML and JSON (read and write), GraphML (read).

YAML and JSON hold exactly `Topology.to_dict()`:

    name: rack
    switches: [{name: tor1, role: tor}]
    pis: [{name: pi1, rack: 1}, {name: pi2, rack: 1}]
    containers: [{name: web1, pi: pi1, ip: 10.0.0.1/8}]   # ip, mac and link optional
    links: [{a: tor1, b: pi1, bw: 100}, {a: tor1, b: pi2, delay: 2ms}]

Duplicate keys are rejected (YAML and JSON would otherwise keep the last one silently).

GraphML (as written by yEd, Gephi or `networkx.write_graphml`): every node needs a `kind` (or
`type`) attribute: `switch`, `pi`, or `container` (`host` is accepted for container). The node's
name is its `name` attribute, else its id. Optional node attributes: `role` (switches), `rack`
(pis), `pi`, `ip`, `mac` (containers; without `pi` a container's one link names its Pi). Edge
attributes `bw`, `delay`, `loss`, `queue` shape links; a container's edge shapes its attachment.
Every other attribute (labels, coordinates) is ignored; directed graphs are read as undirected.

A file is recognised by its extension and its content must agree: a `.json` holding YAML, a
`.graphml` that is not GraphML, a binary file: each is a one-line TopologyError naming the file.
Files without a known extension are recognised by content alone.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

from picloud.errors import TopologyError
from topology.model import LINK_ATTRS, Topology

EXTENSIONS = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".graphml": "graphml", ".py": "python"}
WRITABLE = ("yaml", "json")
MAX_BYTES = 64 * 1024 * 1024  # far above any real topology; stops a mistaken multi-GB read
_PYTHON_RE = re.compile(r"^\s*(from\s+[\w.]+\s+import|import\s+\w|class\s+\w+\s*[(:]|def\s+\w+\s*\()", re.M)
_GRAPHML_NS = "{http://graphml.graphdrawing.org/xmlns}"
_KIND_ALIASES = {"switch": "switch", "pi": "pi", "container": "container", "host": "container"}


# --- detection --------------------------------------------------------------------------------------
def format_by_extension(path: str | Path) -> str | None:
    return EXTENSIONS.get(Path(path).suffix.lower())


def sniff(text: str) -> str:
    """What the content looks like: json, graphml, xml, python or yaml (anything else parses as
    YAML, which the reader then checks is a mapping)."""
    head = text.lstrip("\ufeff \t\r\n")
    if head.startswith(("{", "[")):
        return "json"
    if head.startswith("<"):
        return "graphml" if "<graphml" in head[:4096] else "xml"
    if _PYTHON_RE.search(text[:20000]):
        return "python"
    return "yaml"


def _compatible(claimed: str, seen: str) -> bool:
    # JSON is YAML; everything else must be what it claims.
    return claimed == seen or (claimed == "yaml" and seen == "json")


_NAMES = {"yaml": "YAML", "json": "JSON", "graphml": "GraphML", "xml": "XML (not GraphML)", "python": "Python"}


def read_text(path: str | Path) -> str:
    """The file's text, or a one-line error for a missing, huge, binary or non-UTF-8 file."""
    where = str(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise TopologyError(f"{where}: {size} bytes (topology files are at most {MAX_BYTES} bytes)")
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise TopologyError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise TopologyError(f"{where}: is a directory (expected a topology file)") from None
    except OSError as exc:
        raise TopologyError(f"{where}: cannot read ({exc.strerror})") from None
    if b"\0" in data:
        raise TopologyError(f"{where}: binary content (topology files are text)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TopologyError(f"{where}: not UTF-8 text (byte {exc.start}; topology files are UTF-8)") from None


def detect(path: str | Path, text: str) -> str:
    """The format to parse `text` as: the extension's, checked against the content."""
    where = str(path)
    seen = sniff(text)
    claimed = format_by_extension(path)
    if claimed is None:
        if seen == "xml":
            raise TopologyError(f"{where}: XML but not GraphML (accepted: {', '.join(sorted(EXTENSIONS))})")
        return seen
    if not _compatible(claimed, seen):
        raise TopologyError(
            f"{where}: the extension says {_NAMES[claimed]} but the content is {_NAMES[seen]} "
            "(a file's content must match its extension)"
        )
    return claimed


# --- YAML and JSON ----------------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, list | dict):
            raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a scalar",
                                                    key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, where: str) -> Topology:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TopologyError(f"{where}: {line}{problem} (not valid YAML)") from None
    if not isinstance(data, dict):
        raise TopologyError(f"{where}: top level is {type(data).__name__}, expected a mapping "
                            "with switches, pis, containers, links")
    return Topology.from_dict(data, where=where)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_json(text: str, where: str) -> Topology:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise TopologyError(f"{where}: line {exc.lineno}: {exc.msg} (not valid JSON)") from None
    except ValueError as exc:
        raise TopologyError(f"{where}: {exc} (JSON keys must be unique)") from None
    if not isinstance(data, dict):
        raise TopologyError(f"{where}: top level is a JSON {type(data).__name__}, expected an object "
                            "with switches, pis, containers, links")
    return Topology.from_dict(data, where=where)


def dumps(topo: Topology, fmt: str) -> str:
    """The canonical text of a topology: `to_dict()` as YAML (entries one per line) or JSON."""
    data = topo.to_dict()
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    raise TopologyError(f"format {fmt!r}: cannot write it (writable: {', '.join(WRITABLE)})")


def write_file(topo: Topology, path: str | Path, fmt: str | None = None) -> Path:
    """Write atomically (a temporary file renamed into place), so readers never see half a file."""
    path = Path(path)
    fmt = fmt or format_by_extension(path)
    if fmt not in WRITABLE:
        raise TopologyError(f"{path}: cannot tell the format to write (use .yaml, .yml or .json, or a format)")
    text = dumps(topo, fmt)
    fd, tmp = tempfile.mkstemp(prefix=".topology-", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- GraphML ----------------------------------------------------------------------------------------
def _graphml_root_ok(text: str, where: str) -> None:
    try:
        root = ET.fromstring(text.encode())
    except ET.ParseError as exc:
        raise TopologyError(f"{where}: {exc} (not well-formed XML)") from None
    if root.tag not in (f"{_GRAPHML_NS}graphml", "graphml"):
        raise TopologyError(f"{where}: root element is <{root.tag.split('}')[-1]}>, not <graphml> "
                            "(a .graphml file must hold GraphML)")


def _number_or_text(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_graphml(text: str, where: str) -> Topology:
    _graphml_root_ok(text, where)
    try:
        graph = nx.parse_graphml(text)
    except (nx.NetworkXError, ET.ParseError, KeyError, ValueError, TypeError) as exc:
        raise TopologyError(f"{where}: {exc} (not readable GraphML)") from None
    if graph.is_multigraph() and graph.number_of_edges() != nx.Graph(graph).number_of_edges():
        raise TopologyError(f"{where}: parallel edges (one link per pair of nodes)")
    names: dict[Any, str] = {}
    kinds: dict[str, str] = {}
    attrs: dict[str, dict[str, Any]] = {}
    for node_id, data in graph.nodes(data=True):
        name = data.get("name", node_id)
        raw_kind = data.get("kind", data.get("type"))
        if raw_kind is None:
            raise TopologyError(f"{where}: node {name!r}: no 'kind' or 'type' attribute "
                                "(GraphML nodes need kind=switch, pi or container)")
        kind = _KIND_ALIASES.get(str(raw_kind).strip().lower())
        if kind is None:
            raise TopologyError(f"{where}: node {name!r}: unknown kind {raw_kind!r} (switch, pi or container)")
        if name in kinds:
            raise TopologyError(f"{where}: node {name!r}: duplicate name (node names must be unique)")
        names[node_id], kinds[name], attrs[name] = name, kind, data
    edges = [(names[u], names[v], data) for u, v, data in graph.edges(data=True)]
    topo = Topology(name=str(graph.graph.get("name") or Path(where).stem))
    try:
        for name, kind in kinds.items():
            if kind == "switch":
                topo.add_switch(name, role=attrs[name].get("role", "edge"))
            elif kind == "pi":
                topo.add_pi(name, rack=_number_or_text(attrs[name].get("rack")))
        container_edges: dict[str, list[tuple[str, dict[str, Any]]]] = {n: [] for n, k in kinds.items()
                                                                         if k == "container"}
        for a, b, data in edges:
            shaping = {k: _number_or_text(data[k]) for k in LINK_ATTRS if k in data}
            if a in container_edges or b in container_edges:
                container, other = (a, b) if a in container_edges else (b, a)
                container_edges[container].append((other, shaping))
            else:
                topo.add_link(a, b, **shaping)
        for name, links in container_edges.items():
            if len(links) != 1:
                raise TopologyError(f"container {name!r}: {len(links)} links (a container has exactly one "
                                    "link, to its pi)")
            peer, shaping = links[0]
            pi = attrs[name].get("pi", peer)
            if pi != peer:
                raise TopologyError(f"container {name!r}: attribute pi={pi!r} but its link goes to {peer!r}")
            topo.add_container(name, pi, ip=attrs[name].get("ip"), mac=attrs[name].get("mac"), link=shaping)
    except TopologyError as exc:
        raise TopologyError(f"{where}: {exc}") from None
    return topo


# --- entry point ------------------------------------------------------------------------------------
def read_file(path: str | Path) -> Topology:
    """Read a YAML, JSON or GraphML topology file (Mininet `.py` files: topology.mininet_files)."""
    where = str(path)
    text = read_text(path)
    fmt = detect(path, text)
    if fmt == "python":
        raise TopologyError(f"{where}: Python content (load Mininet topology files with a .py extension)")
    if fmt == "yaml":
        return parse_yaml(text, where)
    if fmt == "json":
        return parse_json(text, where)
    return parse_graphml(text, where)
