"""The import layers, read from the source with `ast` (no module is imported):

    shared kernel (picloud.errors, runstate, ...) <- pure model <- effects <- backends
        <- domain run-time code <- facade (picloud.testbed, ...) <- CLI and UI

Why a test: each break is one convenient import away (a constant, a helper), and once one domain
module reaches for the facade the packages can no longer be used or tested on their own. Every
import counts, also those inside functions and under TYPE_CHECKING: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("picloud", "topology", "tenants", "traffic", "controller_apps", "webui")
DOMAIN = ("topology", "tenants", "traffic", "controller_apps", "webui")
# picloud's shared kernel: errors, run state and small helpers every layer may use.
KERNEL = ("picloud.errors", "picloud.runstate", "picloud.secrets_files", "picloud.httpguard", "picloud.progress",
          "picloud.controller_client")
CLI = ("picloud.cli", "picloud.__main__")
EFFECTS = ("topology.effects",)
BACKENDS = ("topology.backends",)
# Domain modules that drive a live run (processes, qdiscs, OVS counters) through the effects; every
# other module of topology, tenants, traffic and controller_apps is pure model as far as the
# project's layers go: it imports only the kernel and other pure modules. A new module that needs
# effects belongs here, named, so the choice is visible in review.
RUNTIME = ("traffic.capture", "traffic.engine", "traffic.fidelity", "traffic.link_timer", "traffic.monitor",
           "traffic.report", "traffic.results", "traffic.scenario_cost", "traffic.scenario_run", "traffic.web",
           # code that works on a live run (typed with topology.backends.base.Run)
           "tenants.handle", "tenants.verify", "traffic.calibrate", "traffic.iperf")


def facade() -> tuple[str, ...]:
    """The rest of picloud: `Testbed` and what it uses to run experiments (demo, clean, the UI process)."""
    return tuple(m for m in modules() if _in(m, ("picloud",)) and not _in(m, KERNEL + CLI))



def _in(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts)] = path  # a package is `name.__init__`: `picloud` is not all of picloud
    return found


def _resolve(name: str) -> str | None:
    """The project module `name` (or `package.name` of a from-import) refers to, if any."""
    known = modules()
    while name:
        for candidate in (name, name + ".__init__"):
            if candidate in known:
                return candidate
        name = name.rpartition(".")[0]
    return None


@cache
def imports() -> dict[str, frozenset[str]]:
    """module -> the project modules it imports anywhere in its body."""
    graph = {}
    for module, path in modules().items():
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out.update(filter(None, (_resolve(a.name) for a in node.names)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level-1 more
                    package = module.split(".")[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join(package + ([base] if base else []))
                out.update(filter(None, (_resolve(f"{base}.{a.name}") for a in node.names)))
        out.discard(module)
        graph[module] = frozenset(out)
    return graph


def _breaks(sources: Iterable[str], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(f"{m} imports {t}" for m in sources for t in imports()[m]
                  if _in(t, forbidden) and not _in(t, allowed))


def _layer(prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in imports() if _in(m, prefixes)]


def pure_modules() -> list[str]:
    return [m for m in imports() if _in(m, DOMAIN) and not _in(m, ("webui",) + EFFECTS + BACKENDS + RUNTIME)]


def test_the_graph_is_read() -> None:
    """The layers below are checked on the real tree: these edges exist today."""
    graph = imports()
    assert "topology.effects.ip" in graph["topology.backends.local"]
    assert "picloud.testbed" in graph["picloud.cli.fabric"]
    assert "webui.server" in graph["picloud.testbed"]  # the facade starts the UI: UI is above it
    assert set(KERNEL) <= set(graph) and len(pure_modules()) > 30
    assert {"picloud.__init__", "picloud.testbed", "picloud.uiprocess"} <= set(facade())


def test_domain_packages_never_import_the_facade_or_the_cli() -> None:
    assert _breaks(_layer(DOMAIN), facade() + CLI, allowed=KERNEL) == []


def test_the_kernel_imports_only_the_kernel() -> None:
    assert _breaks(KERNEL, PACKAGES, allowed=KERNEL) == []


def test_the_facade_never_imports_the_cli() -> None:
    assert _breaks(list(facade()), CLI) == []


def test_effects_import_neither_backends_nor_run_time_code() -> None:
    """An effect module owns one tool (ip, tc, OVSDB, Docker); it may take pure model values."""
    above = BACKENDS + RUNTIME + ("tenants", "controller_apps", "webui") + facade() + CLI
    assert _breaks(_layer(EFFECTS), above, allowed=KERNEL) == []


def test_backends_realise_topologies_and_nothing_above() -> None:
    above = RUNTIME + ("tenants", "controller_apps", "webui") + facade() + CLI
    assert _breaks(_layer(BACKENDS), above, allowed=KERNEL) == []


def test_pure_model_imports_only_the_kernel_and_pure_model() -> None:
    pure = pure_modules()
    assert _breaks(pure, PACKAGES, allowed=KERNEL + tuple(pure)) == []


def test_tenants_and_traffic_reach_the_controller_only_over_its_api() -> None:
    """Controller apps run in the controller's process: a constant imported from them is a
    contract that the API does not show (tenants counted drops by the tenancy app's cookies)."""
    assert _breaks(_layer(("tenants", "traffic")), ("controller_apps",)) == []


def test_no_import_cycle_between_packages() -> None:
    """A cycle between two packages (webui -> picloud.testbed -> webui.server was one) means
    neither can be understood, or loaded, without the other. Cycles inside one package are that
    package's business."""
    def package(m: str) -> str:
        if _in(m, CLI):
            return "cli"
        if _in(m, KERNEL):
            return "kernel"
        return m.split(".")[0]  # the facade is the rest of picloud

    edges: dict[str, set[str]] = {}
    for m, targets in imports().items():
        for t in targets:
            if package(m) != package(t):
                edges.setdefault(package(m), set()).add(package(t))

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        return any(n == b or (n not in seen and not seen.add(n) and reaches(n, b, seen)) for n in edges.get(a, ()))

    cycles = sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if a < b and reaches(b, a, set()))
    assert cycles == []


def test_the_facade_is_a_run() -> None:
    """Every member of the `Run` protocol domain code is typed against exists on `Testbed`."""
    from picloud.testbed import Testbed
    from topology.backends.base import Run

    members = [n for n in vars(Run) if not n.startswith("_")]
    tb = Testbed("single:1")
    assert {"topology", "prefix", "state", "fabric", "controller_client", "ping_all"} <= set(members)
    assert [n for n in members if not (hasattr(Testbed, n) or n in vars(tb))] == []
