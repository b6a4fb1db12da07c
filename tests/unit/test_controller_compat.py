"""The ryu -> os_ken import alias: Ryu's names resolve to os-ken's very modules; missing parts
fail with one line naming the replacement."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from controller_apps import ryu_compat
from picloud.errors import ControllerError


@pytest.fixture
def alias():
    ryu_compat.install()
    yield
    ryu_compat.uninstall()


RYU_MODULES = [
    ("ryu", "os_ken"),
    ("ryu.base.app_manager", "os_ken.base.app_manager"),
    ("ryu.controller.ofp_event", "os_ken.controller.ofp_event"),
    ("ryu.controller.handler", "os_ken.controller.handler"),
    ("ryu.controller.controller", "os_ken.controller.controller"),
    ("ryu.controller.dpset", "os_ken.controller.dpset"),
    ("ryu.ofproto.ofproto_v1_3", "os_ken.ofproto.ofproto_v1_3"),
    ("ryu.ofproto.ofproto_v1_3_parser", "os_ken.ofproto.ofproto_v1_3_parser"),
    ("ryu.ofproto.ether", "os_ken.ofproto.ether"),
    ("ryu.lib.packet.ethernet", "os_ken.lib.packet.ethernet"),
    ("ryu.lib.packet.arp", "os_ken.lib.packet.arp"),
    ("ryu.lib.hub", "os_ken.lib.hub"),
    ("ryu.lib.mac", "os_ken.lib.mac"),
    ("ryu.lib.dpid", "os_ken.lib.dpid"),
    ("ryu.topology.api", "os_ken.topology.api"),
    ("ryu.topology.event", "os_ken.topology.event"),
    ("ryu.app.ofctl.api", "os_ken.app.ofctl.api"),
]


@pytest.mark.parametrize(("ryu_name", "osken_name"), RYU_MODULES)
def test_ryu_module_is_the_osken_module(alias, ryu_name, osken_name):
    # The same object, not a copy: an app's @set_ev_cls(ofp_event.X) must match os-ken's class.
    assert importlib.import_module(ryu_name) is importlib.import_module(osken_name)
    assert importlib.import_module(osken_name).__name__ == osken_name


def test_renamed_names_have_their_ryu_spelling(alias):
    from os_ken.base.app_manager import OSKenApp
    from os_ken.exception import OSKenException
    from ryu.base.app_manager import RyuApp  # type: ignore[import-not-found]
    from ryu.exception import RyuException  # type: ignore[import-not-found]

    assert RyuApp is OSKenApp
    assert RyuException is OSKenException


def test_from_import_of_submodules_and_attribute_access(alias):
    import ryu  # type: ignore[import-not-found]
    from ryu.controller.handler import MAIN_DISPATCHER, set_ev_cls  # type: ignore[import-not-found]
    from ryu.lib.packet import ethernet, packet  # type: ignore[import-not-found]

    assert callable(set_ev_cls) and MAIN_DISPATCHER == "main"
    assert ryu.lib.packet.ethernet is ethernet and packet.Packet


@pytest.mark.parametrize(("module", "part", "replacement"), [
    ("ryu.app.gui_topology", "ryu.app.gui_topology", "picloud ui"),
    ("ryu.cmd.manager", "ryu.cmd", "ryu-manager"),  # the parent package is what is missing
])
def test_missing_part_is_one_line_naming_the_replacement(alias, module, part, replacement):
    with pytest.raises(ImportError) as info:
        importlib.import_module(module)
    assert isinstance(info.value, ControllerError)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{part}: not in os-ken 4.2.2")
    assert replacement in message


@pytest.mark.parametrize("name", ["simple_switch", "simple_switch_12", "simple_switch_13", "simple_switch_14",
                                  "simple_switch_15", "wsgi", "conf_switch_key"])
def test_parts_os_ken_dropped_are_ours_under_ryu_names(alias, name):
    module = importlib.import_module(f"ryu.app.{name}")
    assert module.__name__ == f"controller_apps.ryu_apps.{name}"
    # `from ryu.app import X` looks X up on the package, which is os_ken.app: it must agree.
    assert getattr(importlib.import_module("ryu.app"), name) is module


def test_ryu_app_not_ours_names_how_to_run_it(alias, monkeypatch):
    monkeypatch.delenv(ryu_compat.RYU_APP_PATH_ENV, raising=False)
    with pytest.raises(ryu_compat.RyuPartMissing) as info:
        importlib.import_module("ryu.app.rest_firewall")
    assert "rest_firewall.py" in str(info.value) and "RYU_APP_PATH" in str(info.value)
    with pytest.raises(ImportError, match="RYU_APP_PATH"):
        from ryu.app import rest_router  # type: ignore[import-not-found]  # noqa: F401


def test_ryu_app_path_serves_the_users_copy_of_a_ryu_app(alias, monkeypatch, tmp_path):
    (tmp_path / "my_rest.py").write_text("from ryu.app.wsgi import ControllerBase\nMARK = 42\n")
    monkeypatch.setenv(ryu_compat.RYU_APP_PATH_ENV, str(tmp_path))
    module = importlib.import_module("ryu.app.my_rest")
    assert module.MARK == 42


def test_unknown_ryu_module_is_missing_not_a_crash(alias):
    with pytest.raises(ryu_compat.RyuPartMissing, match=r"^ryu\.nothing_here: .*no os_ken\.nothing_here"):
        importlib.import_module("ryu.nothing_here")


def test_try_import_fallback_in_apps_still_works(alias):
    try:
        from ryu.app.wsgi import websocket  # type: ignore[import-not-found]  # noqa: F401
        fell_back = False
    except ImportError:
        fell_back = True
    assert fell_back


def test_without_install_ryu_is_not_importable():
    # A fresh interpreter: nothing in PiCloud installs the alias as a side effect of importing.
    code = "import controller_apps.state, controller_apps.pipeline\nimport ryu\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "No module named 'ryu'" in result.stderr
