"""One door for every way of naming a topology: a builder spec, a file, or a Topology object.

`load_topology("fattree:4")`, `load_topology("racks.yaml")`, `load_topology("dc.py:dc,racks=3")`
and `load_topology(topo)` all return a validated Topology, so the CLI, the Testbed and the web UI
accept the same things and reject bad input the same way, before anything is created.
"""

from __future__ import annotations

import re
from pathlib import Path

from picloud.errors import TopologyError
from topology.builders import FAMILIES, build, check_containers_per_pi
from topology.formats import EXTENSIONS, read_file
from topology.mininet_files import load_file as load_mininet_file
from topology.model import Topology
from topology.validate import validate

_PY_SELECTOR_RE = re.compile(r"\A(?P<path>.+\.py):(?P<selector>[^/\\]+)\Z")


_warned: set[str] = set()


def python_file(source: object) -> Path | None:
    """The Mininet `.py` file a topology source names (`file.py` or `file.py:NAME,ARGS`), if any."""
    if not isinstance(source, str | Path):
        return None
    text = str(source).strip()
    selected = _PY_SELECTOR_RE.match(text)
    path = Path(selected["path"]) if selected else Path(text)
    return path if path.suffix.lower() == ".py" and path.is_file() else None


def code_warning(source: object) -> str | None:
    """The one-time warning for a topology that is Python code (None for data files, or when
    already given for this file in this process): loading it runs it with this process's rights,
    root's under `picloud up`, exactly as `mn --custom` does."""
    path = python_file(source)
    if path is None or str(path.resolve()) in _warned:
        return None
    _warned.add(str(path.resolve()))
    return (f"picloud: warning: {path} is a Mininet Python file: loading it RUNS it as code with this "
            "user's rights (root for 'picloud up'); load only files you trust")


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or Path(text.split(":")[0]).suffix.lower() in EXTENSIONS


def fill_containers(topo: Topology, containers_per_pi: int, where: str) -> Topology:
    """A file that describes Pis but no containers at all gets `containers_per_pi` on each Pi,
    named `PI-c1`, `PI-c2`, ... (a file with any container is taken as complete)."""
    if topo.containers:
        return topo
    try:
        for pi in topo.pis:
            for j in range(1, containers_per_pi + 1):
                topo.add_container(f"{pi}-c{j}", pi)
    except TopologyError as exc:
        raise TopologyError(f"{where}: {exc} (while adding {containers_per_pi} container(s) per Pi)") from None
    return topo


def load_topology(source: str | Path | Topology, containers_per_pi: int = 1, pi_model: str | None = None,
                  bw: float | None = None) -> Topology:
    """A validated Topology from a spec (`fattree:4`), a file (YAML, JSON, GraphML, Mininet `.py`,
    optionally `file.py:name,ARGS`) or a Topology (validated, not changed unless a Pi model or
    fabric rate is asked for). `pi_model`/`bw`: see `topology.rates.apply`."""
    from topology import rates

    if isinstance(source, Topology):
        return validate(rates.apply(source, pi_model, bw), source.name)
    if not isinstance(source, str | Path):
        raise TopologyError(f"topology {source!r}: expected a spec, a file path or a Topology")
    text = str(source).strip()
    per_pi = check_containers_per_pi(containers_per_pi, f"topology {text!r}")
    path = Path(text)
    selected = _PY_SELECTOR_RE.match(text)
    if path.is_file() or path.is_dir():
        topo = load_mininet_file(path) if path.suffix.lower() == ".py" else read_file(path)
        return validate(rates.apply(fill_containers(topo, per_pi, text), pi_model, bw), text)
    if selected and Path(selected["path"]).is_file():
        topo = load_mininet_file(selected["path"], selected["selector"])
        return validate(rates.apply(fill_containers(topo, per_pi, text), pi_model, bw), text)
    family = text.split(":")[0].lower()
    if family not in FAMILIES and _looks_like_path(text):
        raise TopologyError(f"{text}: no such file (give a topology file or a spec like fattree:4)")
    return validate(build(text, containers_per_pi=per_pi, pi_model=pi_model, bw=bw), text)
