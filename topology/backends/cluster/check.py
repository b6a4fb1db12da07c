"""The cluster check (`picloud cluster check`), loading an inventory file, and what a run's
controller needs from it (its listen address, OpenFlow TLS files).

Every Pi is asked through its OVSDB endpoint only: is it reachable, does its OVS have what PiCloud
needs (vxlan and patch ports, a datapath), does it reach the controller, and its Docker engine
when it lists one. Problems are one line each, naming the Pi.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from picloud.errors import ClusterError, FabricError
from topology.effects.ovsdb_remote import BridgeSpec, Remote
from topology.inventory import Inventory, parse_inventory
from topology.model import dpid_str

REQUIRED_IFACE_TYPES = ("vxlan", "patch")


def load_inventory(source: str | Path | Inventory) -> Inventory:
    if isinstance(source, Inventory):
        return source
    path = Path(source)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ClusterError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ClusterError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_inventory(data, str(path))


# --- cluster check -----------------------------------------------------------------------------
@dataclass
class PiReport:
    name: str
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_pi(pi: Any, controller: str | None = None, timeout: float = 5.0) -> PiReport:
    """What `picloud cluster check` reports for one Pi. Every problem is one line naming the Pi.

    The controller check runs on the Pi itself, through OVSDB only: a short-lived probe bridge
    gets the controller as target, and the Pi's own OVS reports whether it connected."""
    report = PiReport(pi.name)
    where = f"pi {pi.name!r}"
    try:
        with Remote(pi.ovsdb.raw, tls=pi.tls or None, timeout=timeout) as remote:
            info = remote.info()
            report.facts.update(info, reachable=True)
            report.problems += feature_problems(pi.name, info)
            if controller:
                connected = _probe_controller(remote, controller, info["datapath_types"], timeout)
                report.facts["controller"] = "connected" if connected else "unreachable"
                if not connected:
                    report.problems.append(f"{where}: controller {controller} not reachable from the Pi "
                                           "(check its listen address and the Pi's route to it)")
    except ClusterError as exc:
        report.facts["reachable"] = False
        report.problems.append(f"{where}: {exc}")
    if pi.docker.scheme == "none":
        report.facts["docker"] = "none (emulated Pi: containers are namespaces)"
    else:
        try:
            from topology.effects import docker_engine

            engine = docker_engine.client(pi.docker.raw, tls=pi.tls or None, timeout=int(timeout))
            report.facts["docker"] = docker_engine.engine_version(engine)
        except FabricError as exc:
            report.problems.append(f"{where}: {exc}")
    return report


def feature_problems(pi: str, info: dict[str, Any]) -> list[str]:
    """What a Pi's OVS lacks for PiCloud, one line each: vxlan tunnels, patch ports, a datapath."""
    problems = []
    missing = [t for t in REQUIRED_IFACE_TYPES if t not in info["iface_types"]]
    if missing:
        problems.append(f"pi {pi!r}: OVS {info['ovs_version']} lacks interface types {', '.join(missing)} "
                        "(PiCloud needs vxlan tunnels and patch ports)")
    if not {"system", "netdev"} & set(info["datapath_types"]):
        problems.append(f"pi {pi!r}: OVS offers no system or netdev datapath "
                        f"({', '.join(info['datapath_types']) or 'none'})")
    return problems


def _probe_controller(remote: Remote, target: str, datapath_types: list[str], timeout: float) -> bool:
    prefix = "probe"
    bridge = BridgeSpec("pcprobe", dpid_str(0xFFFF00000001), "netdev" if "netdev" in datapath_types else "system",
                        controllers=[target])
    remote.apply(prefix, [bridge])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            remote.refresh()
            row = remote.bridges(prefix).get("pcprobe")
            if row is not None and any(c.is_connected for c in row.controller):
                return True
            time.sleep(0.2)
        return False
    finally:
        remote.remove_run(prefix)


def check_cluster(inventory: Inventory, controller: str | None = None, timeout: float = 5.0) -> list[PiReport]:
    """One Pi after the other: the `ovs` library keeps process-wide state (poller, SSL settings)
    and is not safe to drive from several threads."""
    return [check_pi(p, controller, timeout) for p in inventory.pis]



def openflow_tls(backend_options: dict[str, Any]) -> dict[str, str] | None:
    """The TLS files (key, cert, ca; absolute paths) for our controller's OpenFlow listener, or None
    for plain TCP. `openflow_tls` option: True, False, or None (the default) for "wherever OVSDB
    already uses TLS": every Pi's ovsdb endpoint is ssl:. The controller presents the orchestrator's
    certificate, signed by the cluster's CA, and accepts only switches whose certificate that CA
    signed (each Pi's OVS uses its own key, set with `ovs-vsctl set-ssl` by provisioning)."""
    source = backend_options.get("inventory")
    wanted = backend_options.get("openflow_tls")
    if source is None or wanted is False:
        return None
    inventory = load_inventory(source)
    on_tls = [p for p in inventory.pis if p.ovsdb.scheme == "ssl"]
    if wanted is None and (not on_tls or len(on_tls) != len(inventory.pis)):
        return None
    files = next((p.tls for p in inventory.pis if p.tls and all(p.tls.get(k) for k in ("key", "cert", "ca"))), None)
    if files is None:
        raise FabricError(f"{inventory.source}: OpenFlow over TLS needs tls: ca, cert, key in the inventory "
                          "(the cluster's CA and the orchestrator's certificate)")
    return {k: str(Path(files[k]).resolve()) for k in ("key", "cert", "ca")}


def controller_address(backend_options: dict[str, Any]) -> str | None:
    """Where a cluster run's controller must listen so the Pis reach it: the inventory's
    `controller` address (Testbed starts the controller on 127.0.0.1 otherwise)."""
    source = backend_options.get("inventory")
    return load_inventory(source).controller if source is not None else None
