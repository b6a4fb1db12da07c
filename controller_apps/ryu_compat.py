"""Run unmodified Ryu apps on os-ken: `import ryu...` resolves to the matching `os_ken...` module.

Why an import hook and not a copy of Ryu: os-ken *is* Ryu, renamed (Ryu 4.34 stopped at Python
3.9). An app that says `from ryu.controller import ofp_event` must get the very module object the
controller dispatches from, or its `@set_ev_cls(ofp_event.EventOFPPacketIn)` would register for a
different class and never fire. So `ryu.X` is made an alias of `os_ken.X` (same object in
`sys.modules` under both names), and the few names os-ken renamed get their Ryu spelling back
(`RyuApp`, `RyuException`).

Parts of Ryu that os-ken dropped (the WSGI framework and the REST apps built on it, the sample
apps, `ryu-manager`) raise `RyuPartMissing` (both an ImportError, so `try: import` fallbacks in apps
still work, and a ControllerError, so the runner prints one line) naming the part and PiCloud's
replacement.

`install()` is idempotent; the runner calls it before loading apps.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

from picloud.errors import ControllerError

ALIAS = "ryu"
TARGET = "os_ken"

# Ryu parts os-ken 4.2.2 does not ship, with what to use instead. Prefix match on module names.
MISSING: dict[str, str] = {
    "ryu.app.wsgi": "a Flask Blueprint passed to controller_apps.api.register_blueprint(bp), "
                    "served by PiCloud's controller API",
    "ryu.app.ofctl_rest": "PiCloud's controller API already serves /stats/* with ofctl_rest's JSON shapes",
    "ryu.app.rest_topology": "GET /state on PiCloud's controller API (the discovery app)",
    "ryu.app.rest_conf_switch": "PiCloud's controller API (/stats/*, /state)",
    "ryu.app.rest_firewall": "PiCloud's tenancy app (isolation per tenant)",
    "ryu.app.rest_router": "PiCloud's routing app",
    "ryu.app.rest_qos": "per-tenant meters in PiCloud's tenancy app",
    "ryu.app.rest_vtep": "PiCloud's tenancy app",
    "ryu.app.gui_topology": "the PiCloud web UI ('picloud ui')",
    "ryu.app.simple_switch_13": "PiCloud's built-in app 'l2_learning'",
    "ryu.app.simple_switch_14": "PiCloud's built-in app 'l2_learning'",
    "ryu.app.simple_switch_15": "PiCloud's built-in app 'l2_learning'",
    "ryu.app.simple_switch_12": "PiCloud's built-in app 'l2_learning'",
    "ryu.app.simple_switch": "PiCloud's built-in app 'l2_learning'",
    "ryu.app.simple_monitor_13": "PiCloud's built-in app 'monitor'",
    "ryu.app.simple_switch_stp_13": "PiCloud's built-in app 'routing' (loop-free without STP)",
    "ryu.cmd": "'picloud controller APP' or 'python -m controller_apps.runner APP' (for ryu-manager)",
}

# Ryu names os-ken renamed: (module, Ryu name, os-ken name).
RENAMED: list[tuple[str, str, str]] = [
    ("os_ken.base.app_manager", "RyuApp", "OSKenApp"),
    ("os_ken.exception", "RyuException", "OSKenException"),
]


class RyuPartMissing(ControllerError, ImportError):
    """A Ryu module an app imports has no os-ken counterpart; the message names the replacement."""


def missing_message(fullname: str) -> str | None:
    """The one-line error for a Ryu module os-ken lacks, or None when os-ken has it."""
    for prefix, replacement in MISSING.items():
        if fullname == prefix or fullname.startswith(prefix + "."):
            return f"{fullname}: not in os-ken 4.2.2 (instead: {replacement})"
    return None


class _AliasLoader(importlib.abc.Loader):
    """Hands back the already-imported os-ken module, unchanged, for a `ryu.*` name."""

    def __init__(self, target: types.ModuleType) -> None:
        self.target = target
        self._saved: dict[str, Any] = {}

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        # The import system stamps the ryu spec onto the module between create and exec; keep
        # the os-ken module's own identity so os-ken's relative machinery is undisturbed.
        self._saved = {k: getattr(self.target, k) for k in ("__spec__", "__path__", "__file__")
                       if hasattr(self.target, k)}
        return self.target

    def exec_module(self, module: types.ModuleType) -> None:
        for key, value in self._saved.items():
            setattr(module, key, value)


class RyuAliasFinder(importlib.abc.MetaPathFinder):
    """sys.meta_path finder mapping `ryu` and `ryu.*` onto `os_ken` and `os_ken.*`."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        message = missing_message(fullname)
        if message:
            raise RyuPartMissing(message, name=fullname)
        real = TARGET + fullname[len(ALIAS):]
        try:
            module = importlib.import_module(real)
        except ModuleNotFoundError as exc:
            if exc.name != real and not real.startswith(str(exc.name) + "."):
                raise  # os-ken itself failed to import a dependency: that is a real error
            raise RyuPartMissing(
                f"{fullname}: not in os-ken 4.2.2 (no {real}; PiCloud runs Ryu apps on os-ken's modules, "
                "this one has no replacement)",
                name=fullname,
            ) from None
        _add_ryu_names(module)
        is_package = hasattr(module, "__path__")
        spec = importlib.machinery.ModuleSpec(fullname, _AliasLoader(module), is_package=is_package)
        if is_package:
            spec.submodule_search_locations = list(module.__path__)
        return spec


def _add_ryu_names(module: types.ModuleType) -> None:
    for module_name, ryu_name, osken_name in RENAMED:
        if module.__name__ == module_name and not hasattr(module, ryu_name):
            setattr(module, ryu_name, getattr(module, osken_name))


_FINDER = RyuAliasFinder()


def install() -> None:
    """Make `import ryu...` work in this process (idempotent)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    for module_name, _, _ in RENAMED:
        _add_ryu_names(importlib.import_module(module_name))


def uninstall() -> None:
    """Remove the alias and any `ryu.*` entries it put in sys.modules (tests)."""
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    for name in [n for n in sys.modules if n == ALIAS or n.startswith(ALIAS + ".")]:
        del sys.modules[name]
