"""Run unmodified Ryu apps on os-ken: `import ryu...` resolves to the matching `os_ken...` module.

Why an import hook and not a copy of Ryu: os-ken *is* Ryu, renamed (Ryu 4.34 stopped at Python
3.9). An app that says `from ryu.controller import ofp_event` must get the very module object the
controller dispatches from, or its `@set_ev_cls(ofp_event.EventOFPPacketIn)` would register for a
different class and never fire. So `ryu.X` is made an alias of `os_ken.X` (same object in
`sys.modules` under both names), and the few names os-ken renamed get their Ryu spelling back
(`RyuApp`, `RyuException`).

Parts of Ryu that os-ken dropped and users' code builds on are PiCloud's own modules under their
Ryu names (`OURS`: the sample switches, `ryu.app.wsgi` on the controller's API server); Ryu's REST
apps then run as they are, from their files, or as `ryu.app.ofctl_rest`... when RYU_APP_PATH names
a directory holding them. What remains missing raises `RyuPartMissing` (both an ImportError, so
`try: import` fallbacks in apps still work, and a ControllerError, so the runner prints one line)
naming the part and what to use instead.

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

# Ryu modules os-ken dropped that PiCloud provides itself, written from Ryu's documentation.
OURS: dict[str, str] = {
    "ryu.app.simple_switch": "controller_apps.ryu_apps.simple_switch",
    "ryu.app.simple_switch_12": "controller_apps.ryu_apps.simple_switch_12",
    "ryu.app.simple_switch_13": "controller_apps.ryu_apps.simple_switch_13",
    "ryu.app.simple_switch_14": "controller_apps.ryu_apps.simple_switch_14",
    "ryu.app.simple_switch_15": "controller_apps.ryu_apps.simple_switch_15",
    "ryu.app.wsgi": "controller_apps.ryu_apps.wsgi",
    "ryu.app.conf_switch_key": "controller_apps.ryu_apps.conf_switch_key",
}

# Ryu's REST and sample apps that are not ours: they run unmodified from the user's copy of Ryu's
# file (`picloud controller ofctl_rest.py`). As module names they load from RYU_APP_PATH (a
# directory holding Ryu's ryu/app/*.py files) when it is set.
RYU_APP_PATH_ENV = "RYU_APP_PATH"

# Ryu parts neither os-ken nor PiCloud has, with what to use instead. Prefix match on module names.
MISSING: dict[str, str] = {
    "ryu.app.gui_topology": "the PiCloud web UI ('picloud ui')",
    "ryu.app.ws_topology": "the PiCloud web UI's live state ('picloud ui'), or GET /state",
    "ryu.app.simple_switch_websocket_13": "ryu.app.wsgi's websocket part is not provided; "
                                           "use a ControllerBase REST route",
    "ryu.cmd": "the 'ryu-manager' command PiCloud installs, or 'picloud controller APP'",
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
        real = OURS.get(fullname) or _user_ryu_app(fullname) or TARGET + fullname[len(ALIAS):]
        try:
            module = importlib.import_module(real)
        except ModuleNotFoundError as exc:
            if exc.name != real and not real.startswith(str(exc.name) + "."):
                raise  # os-ken itself failed to import a dependency: that is a real error
            raise RyuPartMissing(_absent_message(fullname, real), name=fullname) from None
        _add_ryu_names(module)
        is_package = hasattr(module, "__path__")
        spec = importlib.machinery.ModuleSpec(fullname, _AliasLoader(module), is_package=is_package)
        if is_package:
            spec.submodule_search_locations = list(module.__path__)
        return spec


def _user_ryu_app(fullname: str) -> str | None:
    """`ryu.app.X` from the directory RYU_APP_PATH names (Ryu's own app files, unmodified), imported
    under a module name of its own; None when it is not there."""
    import os
    from pathlib import Path

    base = os.environ.get(RYU_APP_PATH_ENV)
    if not base or not fullname.startswith("ryu.app.") or fullname.count(".") != 2:
        return None
    path = Path(base) / (fullname.rsplit(".", 1)[1] + ".py")
    if not path.is_file():
        return None
    name = "picloud_ryu_app_" + path.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return name


def _absent_message(fullname: str, real: str) -> str:
    if fullname.startswith("ryu.app."):
        stem = fullname.rsplit(".", 1)[1]
        return (f"{fullname}: Ryu's app, not part of os-ken or PiCloud; run it from its file "
                f"('picloud controller {stem}.py', unmodified) or set {RYU_APP_PATH_ENV} to a directory "
                "holding Ryu's ryu/app/*.py files")
    return (f"{fullname}: not in os-ken 4.2.2 (no {real}; PiCloud runs Ryu apps on os-ken's modules, "
            "this one has no replacement)")


def _add_ryu_names(module: types.ModuleType) -> None:
    for module_name, ryu_name, osken_name in RENAMED:
        if module.__name__ == module_name and not hasattr(module, ryu_name):
            setattr(module, ryu_name, getattr(module, osken_name))


_FINDER = RyuAliasFinder()


def _app_package_getattr(name: str) -> types.ModuleType:
    """`from ryu.app import simple_switch_13`: `ryu.app` *is* `os_ken.app`, so Python looks the name
    up as `os_ken.app.simple_switch_13`, past our finder. This module `__getattr__` of os_ken.app
    (PEP 562) answers with what `import ryu.app.NAME` gives, including its one-line errors."""
    if name.startswith("__"):
        raise AttributeError(name)
    fullname = f"{ALIAS}.app.{name}"
    if fullname in OURS or _user_ryu_app(fullname) or missing_message(fullname):
        return importlib.import_module(fullname)
    try:
        return importlib.import_module(f"{TARGET}.app.{name}")
    except ModuleNotFoundError:
        raise RyuPartMissing(_absent_message(fullname, f"{TARGET}.app.{name}"), name=fullname) from None


# Frames of the import machinery between an "api"-style module and the app that imported it.
_IMPORT_FRAMES = ("importlib", "_frozen_importlib", __name__)


def require_app(app_name: str, api_style: bool = False) -> None:
    """os-ken's `app_manager.require_app`, counting frames past the import machinery.

    An "api" module (`ryu.topology.api`, `ryu.app.ofctl.api`) calls it at import to have its
    service app loaded (`ryu.topology.switches`): os-ken files the requirement under the module two
    frames up, the app that imported the api. Imported through the `ryu` alias, two frames up is
    this module's finder, so the requirement was filed there and the service never loaded: Ryu's
    rest_topology then waited for ever for a `switches` app that did not exist."""
    frame: types.FrameType | None = sys._getframe(1)
    callers: list[types.ModuleType] = []
    while frame is not None and len(callers) < 2:
        name = frame.f_globals.get("__name__", "")
        module = sys.modules.get(name)
        if module is not None and not name.startswith(_IMPORT_FRAMES):
            callers.append(module)
        frame = frame.f_back
    owner = callers[1] if api_style and len(callers) > 1 else callers[0]
    required = owner.__dict__.setdefault("_REQUIRED_APP", [])
    if app_name not in required:
        required.append(app_name)


# os-ken's "api" modules and the service app each needs loaded.
API_SERVICES: dict[str, str] = {
    "os_ken.topology.api": "os_ken.topology.switches",
    "os_ken.app.ofctl.api": "os_ken.app.ofctl.service",
    "os_ken.services.protocols.vrrp.api": "os_ken.services.protocols.vrrp.manager",
}


def require_api_services(module: types.ModuleType) -> None:
    """File the service apps of the api modules an app module uses under that module. An api
    module calls require_app only when first imported; when something imported it earlier (another
    app, an earlier run in this process), the app importing it now would get no service."""
    used = set()
    for value in list(vars(module).values()):
        name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
        if name in API_SERVICES:
            used.add(API_SERVICES[name])
    required = module.__dict__.setdefault("_REQUIRED_APP", []) if used else []
    for service in sorted(used - set(required)):
        required.append(service)


def install() -> None:
    """Make `import ryu...` work in this process (idempotent)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    from os_ken.base import app_manager

    app_manager.require_app = require_app
    app_package = importlib.import_module(f"{TARGET}.app")
    # PEP 562: a module's own __getattr__ answers names it lacks; typeshed sees a method of ModuleType
    app_package.__getattr__ = _app_package_getattr  # type: ignore[method-assign]
    for module_name, _, _ in RENAMED:
        _add_ryu_names(importlib.import_module(module_name))


def uninstall() -> None:
    """Remove the alias and any `ryu.*` entries it put in sys.modules (tests)."""
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    for name in [n for n in sys.modules if n == ALIAS or n.startswith(ALIAS + ".")]:
        del sys.modules[name]
    app_package = sys.modules.get(f"{TARGET}.app")
    if app_package is not None and getattr(app_package, "__getattr__", None) is _app_package_getattr:
        del app_package.__getattr__
