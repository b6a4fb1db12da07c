"""Load Mininet-style Python topology files without Mininet installed.

Researchers keep topologies as Mininet "custom" files (`mn --custom file.py --topo name`): a class
deriving `mininet.topo.Topo` whose `build()` (or `__init__`) calls `addSwitch`, `addHost` and
`addLink(..., bw=, delay=, loss=, max_queue_size=)`, and a dict `topos = {'name': (lambda:
MyTopo())}`. We run such a file with small stand-in modules for `mininet.topo`, `mininet.topolib`,
`mininet.link`, `mininet.node`, `mininet.net`, `mininet.cli`, `mininet.log`, `mininet.util` and
`mininet.clean`, placed in `sys.modules` only while the file loads (and restored afterwards), then
translate the recorded calls. Loading a file executes it, as `mn --custom` does: load only files
you trust. The file runs with `__name__` other than `"__main__"`, so its `Mininet(...)` start-up
block is skipped; building a network at import time is an error.

Mapping (Mininet -> PiCloud):
- a switch with at least one host becomes a `pi` (an OVS bridge hosting containers); its hosts
  become containers on it (`ip=` and `mac=` honoured; unset ips get 10.0.0.N/8 in Mininet's host
  order, as Mininet would give them); switches without hosts stay switches, with the role their
  name suggests (`core*`, `agg*`, `spine*`, `leaf*`, `tor*`, else `edge`);
- `addLink` options `bw` (Mbit/s), `delay`, `jitter`, `loss` (percent) and `max_queue_size` (packets) shape
  the link whatever its `cls` (TCLink or not: a file that states a rate means it); a host's link
  options shape its container's attachment;
- names are lower-cased with `_`, `.` and spaces turned into `-`; a name that still breaks the
  rules, or two names that become one, is an error;
- errors: a host linked to two switches, to another host or to nothing; parallel links.
Options with no PiCloud meaning (`dpid`, `cpu`, explicit port numbers...) are ignored
with a warning; Mininet-only plumbing options (`cls`, `defaultRoute`, `protocols`...) silently.
Port numbers follow PiCloud's rule (uplinks first, containers last), not Mininet's.

Pick among several entries of `topos` with `file.py:name`, and pass arguments the way `mn --topo`
does: `file.py:name,3,fanout=2`.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from picloud.errors import TopologyError
from topology.formats import read_text
from topology.model import NAME_RE, Topology

log = logging.getLogger(__name__)

_MODULE_NAME = "picloud_mininet_topology"  # never "__main__": the file's start-up block stays off
_SHIM_LOCK = threading.Lock()  # sys.modules is process-wide: one load at a time
_LINK_OPTIONS = {"bw": "bw", "delay": "delay", "jitter": "jitter", "loss": "loss", "max_queue_size": "queue"}
_QUIET_OPTIONS = {
    "cls", "defaultRoute", "inNamespace", "protocols", "failMode", "datapath", "inband", "stp",
    "batch", "listenPort", "intfName1", "intfName2", "addr1", "addr2", "use_htb", "use_hfsc",
    "use_tbf", "privateDirs", "isSwitch", "key",
}
_ROLE_HINTS = (("core", "core"), ("agg", "aggregation"), ("spine", "spine"), ("leaf", "leaf"),
               ("tor", "tor"), ("edge", "edge"))


def natural(text: str) -> list[Any]:
    """Mininet's natural sort key (mininet.util.natural): h2 before h10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


# --- the stand-in mininet package ------------------------------------------------------------------
class Topo:
    """The recording part of mininet.topo.Topo: nodes and links with their options, in order."""

    def __init__(self, *args: Any, **params: Any) -> None:
        self._node_opts: dict[str, dict[str, Any]] = {}
        self._link_list: list[tuple[str, str, dict[str, Any]]] = []
        self.hopts = params.pop("hopts", {})
        self.sopts = params.pop("sopts", {})
        self.lopts = params.pop("lopts", {})
        self.build(*args, **params)

    def build(self, *args: Any, **params: Any) -> None:
        """Override me (as in Mininet)."""

    def addNode(self, name: str, **opts: Any) -> str:  # noqa: N802 - Mininet's API names
        self._node_opts[name] = opts
        return name

    def addHost(self, name: str, **opts: Any) -> str:  # noqa: N802
        return self.addNode(name, **(opts or dict(self.hopts)))

    def addSwitch(self, name: str, **opts: Any) -> str:  # noqa: N802
        return self.addNode(name, isSwitch=True, **(opts or dict(self.sopts)))

    def addLink(self, node1: str, node2: str, port1: int | None = None, port2: int | None = None,  # noqa: N802
                key: Any = None, **opts: Any) -> str:
        opts = opts or dict(self.lopts)
        if port1 is not None or port2 is not None:
            opts = {**opts, "port1": port1, "port2": port2}
        self._link_list.append((str(node1), str(node2), opts))
        return key if key is not None else str(len(self._link_list))

    def isSwitch(self, name: str) -> bool:  # noqa: N802
        return bool(self._node_opts.get(name, {}).get("isSwitch"))

    def nodes(self, sort: bool = True) -> list[str]:
        names = list(self._node_opts)
        return sorted(names, key=natural) if sort else names

    def switches(self, sort: bool = True) -> list[str]:
        return [n for n in self.nodes(sort) if self.isSwitch(n)]

    def hosts(self, sort: bool = True) -> list[str]:
        return [n for n in self.nodes(sort) if not self.isSwitch(n)]

    def links(self, sort: bool = False, withKeys: bool = False, withInfo: bool = False) -> list[Any]:  # noqa: N803
        out = []
        for i, (a, b, opts) in enumerate(self._link_list):
            if sort and natural(b) < natural(a):
                a, b = b, a
            item: tuple[Any, ...] = (a, b)
            if withKeys:
                item += (str(i + 1),)
            if withInfo:
                item += (opts,)
            out.append(item)
        return sorted(out, key=lambda t: (natural(t[0]), natural(t[1]))) if sort else out

    def nodeInfo(self, name: str) -> dict[str, Any]:  # noqa: N802
        return self._node_opts[name]

    def setNodeInfo(self, name: str, info: dict[str, Any]) -> None:  # noqa: N802
        self._node_opts[name] = dict(info)

    def linkInfo(self, src: str, dst: str, key: Any = None) -> dict[str, Any]:  # noqa: N802
        for a, b, opts in self._link_list:
            if {a, b} == {src, dst}:
                return opts
        raise KeyError((src, dst))


class SingleSwitchTopo(Topo):
    def build(self, k: int = 2, **_opts: Any) -> None:
        switch = self.addSwitch("s1")
        for h in range(1, k + 1):
            self.addLink(self.addHost(f"h{h}"), switch)


class SingleSwitchReversedTopo(Topo):
    def build(self, k: int = 2) -> None:
        switch = self.addSwitch("s1")
        for h in range(1, k + 1):
            self.addLink(self.addHost(f"h{h}"), switch, port1=0, port2=k - h + 1)


class MinimalTopo(SingleSwitchTopo):
    def build(self) -> None:  # type: ignore[override]  # Mininet's Topo.build(**params): this one takes none
        super().build(k=2)


class LinearTopo(Topo):
    def build(self, k: int = 2, n: int = 1, **_opts: Any) -> None:
        last = None
        for i in range(1, k + 1):
            switch = self.addSwitch(f"s{i}")
            for j in range(1, n + 1):
                host = self.addHost(f"h{i}" if n == 1 else f"h{i}s{j}")
                self.addLink(host, switch)
            if last:
                self.addLink(switch, last)
            last = switch


class TreeTopo(Topo):
    def build(self, depth: int = 1, fanout: int = 2) -> None:
        self.hostNum = 1
        self.switchNum = 1
        self.addTree(depth, fanout)

    def addTree(self, depth: int, fanout: int) -> str:  # noqa: N802
        if depth > 0:
            node = self.addSwitch(f"s{self.switchNum}")
            self.switchNum += 1
            for _ in range(fanout):
                self.addLink(node, self.addTree(depth - 1, fanout))
        else:
            node = self.addHost(f"h{self.hostNum}")
            self.hostNum += 1
        return node


class _RunsOnlyUnderMininet:
    """Node, link and network classes: fine as `cls=` values, an error when instantiated."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TopologyError(
            f"{type(self).__name__}(...) runs a Mininet network (PiCloud loads only the Topo; "
            "keep network start-up under if __name__ == '__main__')"
        )


def _placeholder(name: str) -> type:
    return type(name, (_RunsOnlyUnderMininet,), {})


def _refuse(what: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise TopologyError(f"{what}() needs a running Mininet network (PiCloud loads only the Topo)")

    return call


def _ip_add(i: int, prefixLen: int = 8, ipBaseNum: int = 0x0A000000) -> str:  # noqa: N803
    """mininet.util.ipAdd: host i in a network, as a dotted quad."""
    return _ip_str(ipBaseNum + i if prefixLen else i)


def _ip_str(ip: int) -> str:
    return ".".join(str((ip >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def _ip_num(*parts: int) -> int:
    value = 0
    for part in parts:
        value = (value << 8) | int(part)
    return value


def _make_numeric(text: str) -> Any:
    """mininet.util.makeNumeric: '3' -> 3, '0.5' -> 0.5, else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _shim_modules() -> dict[str, types.ModuleType]:
    def module(name: str, **members: Any) -> types.ModuleType:
        mod = types.ModuleType(name, f"PiCloud stand-in for {name} (topology loading only)")
        mod.__dict__.update(members)
        return mod

    node_classes = ("Node", "Host", "CPULimitedHost", "Switch", "OVSSwitch", "OVSKernelSwitch", "UserSwitch",
                    "OVSBridge", "IVSSwitch", "Controller", "OVSController", "RemoteController", "NOX",
                    "Ryu", "DefaultController", "NullController")
    link_classes = ("Link", "TCLink", "OVSLink", "Intf", "TCIntf", "TCULink")
    lg = types.SimpleNamespace(setLogLevel=lambda *a: None)
    quiet = {n: (lambda *a, **k: log.debug(" ".join(map(str, a))))
             for n in ("info", "debug", "output", "warn", "warning", "error")}
    package = module("mininet")
    package.__path__ = []  # a package: unknown submodules fail to import with a clear name
    modules = {
        "mininet": package,
        "mininet.topo": module("mininet.topo", Topo=Topo, SingleSwitchTopo=SingleSwitchTopo,
                               SingleSwitchReversedTopo=SingleSwitchReversedTopo, MinimalTopo=MinimalTopo,
                               LinearTopo=LinearTopo),
        "mininet.topolib": module("mininet.topolib", TreeTopo=TreeTopo, TreeNet=_refuse("TreeNet")),
        "mininet.node": module("mininet.node", **{n: _placeholder(n) for n in node_classes}),
        "mininet.link": module("mininet.link", **{n: _placeholder(n) for n in link_classes}),
        "mininet.net": module("mininet.net", Mininet=_placeholder("Mininet")),
        "mininet.cli": module("mininet.cli", CLI=_placeholder("CLI")),
        "mininet.clean": module("mininet.clean", cleanup=_refuse("cleanup"), Cleanup=_placeholder("Cleanup")),
        "mininet.log": module("mininet.log", setLogLevel=lambda *a: None, lg=lg, **quiet),
        "mininet.util": module(
            "mininet.util", natural=natural, naturalSeq=lambda t: [natural(x) for x in t],
            irange=lambda start, end: range(start, end + 1), ipAdd=_ip_add, ipStr=_ip_str, ipNum=_ip_num,
            makeNumeric=_make_numeric, custom=_custom, dumpNodeConnections=_refuse("dumpNodeConnections"),
            quietRun=_refuse("quietRun"), waitListening=_refuse("waitListening"),
        ),
    }
    for name, mod in modules.items():
        if "." in name:
            setattr(package, name.split(".", 1)[1], mod)
    return modules


def _custom(cls: type, **params: Any) -> Any:
    """mininet.util.custom: a constructor with some parameters already given."""

    def make(*args: Any, **kwargs: Any) -> Any:
        return cls(*args, **{**params, **kwargs})

    return make


@contextmanager
def _shims(directory: Path) -> Iterator[None]:
    """The stand-in `mininet` in sys.modules (and the file's folder on sys.path, for its own
    helper imports) only for the duration of the load; whatever was there before comes back."""
    with _SHIM_LOCK:
        shims = _shim_modules()
        saved = {name: sys.modules.get(name) for name in shims}
        sys.modules.update(shims)
        sys.path.insert(0, str(directory))
        try:
            yield
        finally:
            sys.path.remove(str(directory))
            for name, previous in saved.items():
                if previous is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = previous


# --- running the file -------------------------------------------------------------------------------
def split_args(selector: str) -> tuple[str, list[Any], dict[str, Any]]:
    """`name,3,fanout=2` -> ('name', [3], {'fanout': 2}), as mininet.util.splitArgs."""
    name, *rest = [part.strip() for part in selector.split(",")]
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for part in rest:
        if "=" in part:
            key, value = part.split("=", 1)
            kwargs[key.strip()] = _make_numeric(value.strip())
        else:
            args.append(_make_numeric(part))
    return name, args, kwargs


def _user_error(where: str, path: Path, exc: BaseException) -> TopologyError:
    """One line for an exception raised by the user's file: the file's own line and the error."""
    if isinstance(exc, TopologyError):
        return TopologyError(f"{where}: {exc}")
    line = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == str(path):
            line = f"line {frame.lineno}: "
            break
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("mininet"):
        return TopologyError(f"{where}: {line}imports {exc.name}, which PiCloud's Mininet stand-in lacks "
                             "(topology files may use mininet.topo, topolib, node, link, net, cli, log, util)")
    if isinstance(exc, SystemExit):
        return TopologyError(f"{where}: {line}the file called exit() while loading")
    text = str(exc).splitlines()[0] if str(exc) else ""
    return TopologyError(f"{where}: {line}{type(exc).__name__}{': ' + text if text else ''} "
                         "(raised by the topology file)")


def _choose(module: types.ModuleType, where: str, selector: str | None) -> tuple[str, Any]:
    """The factory to call: `topos[name]`, the only entry of `topos`, or the file's only Topo class."""
    topos = module.__dict__.get("topos")
    if topos is not None and not isinstance(topos, dict):
        raise TopologyError(f"{where}: 'topos' is a {type(topos).__name__} (Mininet files map names to "
                            "topology constructors: topos = {'name': (lambda: MyTopo())})")
    classes = {name: value for name, value in vars(module).items()
               if isinstance(value, type) and issubclass(value, Topo) and value.__module__ == _MODULE_NAME}
    if selector:
        if topos and selector in topos:
            return selector, topos[selector]
        if selector in classes:
            return selector, classes[selector]
        known = sorted(topos or {}) or sorted(classes)
        raise TopologyError(f"{where}: no topology {selector!r} (the file defines: {', '.join(known) or 'none'})")
    if topos:
        if len(topos) > 1:
            raise TopologyError(f"{where}: several topologies ({', '.join(sorted(topos))}); "
                                f"pick one with {where}:NAME")
        return next(iter(topos.items()))
    if len(classes) == 1:
        return next(iter(classes.items()))
    if classes:
        raise TopologyError(f"{where}: several Topo classes ({', '.join(sorted(classes))}) and no 'topos' "
                            f"dict; pick one with {where}:NAME")
    raise TopologyError(f"{where}: no Topo subclass and no 'topos' dict (not a Mininet topology file)")


def load_file(path: str | Path, selector: str | None = None) -> Topology:
    """Run a Mininet topology file under the stand-in modules and translate what it built.

    `selector` is `name` or `name,ARG,KEY=VALUE` (as `mn --topo`); None picks the only one.
    """
    path = Path(path)
    where = str(path)
    text = read_text(path)
    try:
        code = compile(text, str(path), "exec")
    except SyntaxError as exc:
        raise TopologyError(f"{where}: line {exc.lineno}: {exc.msg} (not valid Python)") from None
    name, args, kwargs = split_args(selector) if selector else (None, [], {})
    module = types.ModuleType(_MODULE_NAME)
    module.__file__ = str(path)
    with _shims(path.resolve().parent):
        try:
            exec(code, module.__dict__)  # noqa: S102 - loading a Mininet file means running it
        except (Exception, SystemExit) as exc:  # the user's code: any error is theirs, one line
            raise _user_error(where, path, exc) from None
        chosen, factory = _choose(module, where, name)
        try:
            built = factory(*args, **kwargs)
        except (Exception, SystemExit) as exc:
            raise _user_error(where, path, exc) from None
    if not isinstance(built, Topo):
        raise TopologyError(f"{where}: topology {chosen!r} built a {type(built).__name__}, not a mininet Topo")
    return from_mininet(built, where, name=chosen)


# --- translation ------------------------------------------------------------------------------------
def sanitise(name: str, what: str, where: str) -> str:
    """A Mininet name as a PiCloud name: lower case, `_`/`.`/space -> `-`; else an error."""
    clean = re.sub(r"[_. ]", "-", str(name).strip().lower())
    if not NAME_RE.match(clean):
        raise TopologyError(f"{where}: {what} {name!r}: cannot become a PiCloud name (names are 1-32 "
                            "characters of [a-z0-9-], starting with a letter or digit)")
    return clean


def _shaping(opts: dict[str, Any]) -> dict[str, Any]:
    return {ours: opts[theirs] for theirs, ours in _LINK_OPTIONS.items() if opts.get(theirs) is not None}


def _ignored(opts: dict[str, Any], used: set[str]) -> list[str]:
    return sorted(k for k, v in opts.items() if k not in used and k not in _QUIET_OPTIONS and v is not None)


def from_mininet(mn: Topo, where: str, name: str | None = None) -> Topology:
    """Translate a recorded Topo (see the module docstring for the mapping)."""
    switches = mn.switches(sort=True)
    hosts = mn.hosts(sort=True)
    ignored: list[str] = []
    attached: dict[str, tuple[str, dict[str, Any]]] = {}
    fabric: list[tuple[str, str, dict[str, Any]]] = []
    seen_pairs: set[frozenset[str]] = set()
    declared = set(mn.nodes(sort=False))
    for a, b, opts in mn.links(sort=False, withInfo=True):
        for end in (a, b):
            if end not in declared:
                raise TopologyError(f"{where}: link {a!r}-{b!r}: unknown node {end!r} (links must join declared nodes)")
        if a == b:
            raise TopologyError(f"{where}: link {a!r}-{b!r}: self-loop (a link must join two different nodes)")
        pair = frozenset((a, b))
        if pair in seen_pairs:
            raise TopologyError(f"{where}: link {a!r}-{b!r}: parallel link (PiCloud has one link per pair of nodes)")
        seen_pairs.add(pair)
        ignored += [f"{k} (link {a}-{b})" for k in _ignored(opts, set(_LINK_OPTIONS))]
        a_host, b_host = not mn.isSwitch(a), not mn.isSwitch(b)
        if a_host and b_host:
            raise TopologyError(f"{where}: link {a!r}-{b!r}: joins two hosts (a host becomes a container, "
                                "linked to exactly one switch)")
        if a_host or b_host:
            host, switch = (a, b) if a_host else (b, a)
            if host in attached:
                raise TopologyError(f"{where}: host {host!r}: linked to {attached[host][0]!r} and {switch!r} "
                                    "(a host becomes a container, linked to exactly one switch)")
            attached[host] = (switch, _shaping(opts))
        else:
            fabric.append((a, b, _shaping(opts)))
    for host in hosts:
        if host not in attached:
            raise TopologyError(f"{where}: host {host!r}: not linked to any switch (a host becomes a container, "
                                "linked to exactly one switch)")
    renamed: dict[str, str] = {}
    owners: dict[str, str] = {}
    for original in switches + hosts:
        clean = sanitise(original, "switch" if mn.isSwitch(original) else "host", where)
        if clean in owners:
            raise TopologyError(f"{where}: {owners[clean]!r} and {original!r} both become {clean!r} "
                                "(node names must be unique)")
        owners[clean], renamed[original] = original, clean
    pis = {switch for switch, _ in attached.values()}
    topo = Topology(name=name or Path(where).stem)  # display only: any text will do
    try:
        for switch in switches:
            opts = mn.nodeInfo(switch)
            ignored += [f"{k} (switch {switch})" for k in _ignored(opts, set())]
            if switch not in pis:
                new = renamed[switch]
                role = next((r for hint, r in _ROLE_HINTS if new.startswith(hint)), "edge")
                topo.add_switch(new, role=role)
        for switch in switches:
            if switch in pis:
                topo.add_pi(renamed[switch])
        for a, b, shaping in fabric:
            topo.add_link(renamed[a], renamed[b], **shaping)
        for host in hosts:
            opts = mn.nodeInfo(host)
            ignored += [f"{k} (host {host})" for k in _ignored(opts, {"ip", "mac"})]
            switch, shaping = attached[host]
            topo.add_container(renamed[host], renamed[switch], ip=opts.get("ip"), mac=opts.get("mac"),
                               link=shaping)
    except TopologyError as exc:
        raise TopologyError(f"{where}: {exc}") from None
    if ignored:
        log.warning("%s: ignored Mininet options without a PiCloud meaning: %s", where, ", ".join(ignored))
    return topo
