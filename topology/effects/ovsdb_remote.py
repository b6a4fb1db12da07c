"""OVSDB over the network (RFC 7047): the only place PiCloud talks to a remote Pi's Open vSwitch.

Uses the `ovs` library's IDL, the client ovs-vsctl itself is built on, instead of shell over SSH:
a Pi then needs nothing but `ovsdb-server --remote=ptcp:6640` (or `pssl:` with certificates).
All of a Pi's bridges, ports and tunnels go into one transaction, so a Pi is either configured or
untouched, and a second `up` of the same run changes nothing (idempotent, like ovsdbapp's
may_exist).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from picloud.errors import ClusterError
from topology.openflow import DEFAULT, ovs_protocols

log = logging.getLogger(__name__)

RUN_LABEL = "picloud-run"  # the same external_ids key the local backend puts on its bridges
TABLES = ("Open_vSwitch", "Bridge", "Port", "Interface", "Controller", "Mirror")


@dataclass
class PortSpec:
    """An OVS port with one interface. type: "" (a system device), patch, vxlan, internal."""

    name: str
    ofport: int | None = None
    type: str = ""
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class BridgeSpec:
    name: str
    dpid: str  # 16 hex digits
    datapath_type: str = "netdev"
    controllers: list[str] = field(default_factory=list)  # active targets: fail_mode secure
    listeners: list[str] = field(default_factory=list)  # passive ptcp: targets, for ovs-ofctl
    ports: list[PortSpec] = field(default_factory=list)
    external_ids: dict[str, str] = field(default_factory=dict)
    protocols: list[str] = field(default_factory=lambda: ovs_protocols(DEFAULT))  # OVS spelling


def _quiet_imports() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ovs library warns about eventlet on import
        import ovs.db.idl
        import ovs.jsonrpc
        import ovs.poller
        import ovs.stream
    return ovs


def _configure_ssl(ovs_mod: Any, tls: dict[str, str] | None) -> None:
    if tls:
        ovs_mod.stream.Stream.ssl_set_private_key_file(tls["key"])
        ovs_mod.stream.Stream.ssl_set_certificate_file(tls["cert"])
        ovs_mod.stream.Stream.ssl_set_ca_cert_file(tls["ca"])


def fetch_schema(endpoint: str, timeout: float = 5.0, tls: dict[str, str] | None = None) -> dict:
    """The server's Open_vSwitch schema (get_schema), so we never ship a schema copy that drifts."""
    ovs_mod = _quiet_imports()
    _configure_ssl(ovs_mod, tls)
    error, stream = ovs_mod.stream.Stream.open_block(ovs_mod.stream.Stream.open(endpoint), int(timeout * 1000))
    if error:
        raise ClusterError(f"{endpoint}: OVSDB not reachable ({_os_error(error)})")
    rpc = ovs_mod.jsonrpc.Connection(stream)
    try:
        request = ovs_mod.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"])
        error, reply = rpc.transact_block(request)
        if error or reply is None:
            hint = "; TLS refused: are tls cert and key signed by the CA the Pi trusts?" if endpoint.startswith(
                "ssl:") else ""
            raise ClusterError(f"{endpoint}: OVSDB connection failed ({_os_error(error)}{hint})")
        if reply.error:
            raise ClusterError(f"{endpoint}: get_schema failed ({reply.error})")
        return reply.result
    finally:
        rpc.close()


def _os_error(code: int) -> str:
    import os

    return os.strerror(code) if isinstance(code, int) and code > 0 else str(code)


class Remote:
    """One IDL session with one Pi's ovsdb-server."""

    def __init__(self, endpoint: str, tls: dict[str, str] | None = None, timeout: float = 10.0):
        self.endpoint = endpoint
        self.timeout = timeout
        self._ovs = _quiet_imports()
        schema = fetch_schema(endpoint, timeout=timeout, tls=tls)
        helper = self._ovs.db.idl.SchemaHelper(schema_json=schema)
        for table in TABLES:
            helper.register_table(table)
        self.idl = self._ovs.db.idl.Idl(endpoint, helper, leader_only=False)
        self._wait(lambda: self.idl.change_seqno != 0 and self._root() is not None, "initial contents")

    def close(self) -> None:
        self.idl.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------------
    def _wait(self, done: Any, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            self.idl.run()
            if done():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"{self.endpoint}: no {what} from OVSDB within {self.timeout:.0f} s")
            poller = self._ovs.poller.Poller()
            self.idl.wait(poller)
            poller.timer_wait(100)
            poller.block()

    def _root(self) -> Any:
        rows = list(self.idl.tables["Open_vSwitch"].rows.values())
        return rows[0] if rows else None

    def refresh(self) -> None:
        """Process whatever the server has sent (the IDL is a replica kept current by updates)."""
        self.idl.run()

    def _commit(self, build: Any, what: str) -> None:
        """Run `build(txn)` and commit; on TRY_AGAIN (someone changed a row we verified) the
        replica is refreshed and the whole transaction rebuilt, as ovs-vsctl does."""
        idl_mod = self._ovs.db.idl
        deadline = time.monotonic() + self.timeout
        while True:
            self.idl.run()
            txn = idl_mod.Transaction(self.idl)
            build(txn)
            status = txn.commit_block()
            if status in (idl_mod.Transaction.SUCCESS, idl_mod.Transaction.UNCHANGED):
                return
            if status == idl_mod.Transaction.TRY_AGAIN and time.monotonic() < deadline:
                self._wait(lambda: True, "update")
                continue
            raise ClusterError(f"{self.endpoint}: {what} failed ({status}: {txn.get_error() or 'no detail'})")

    # --- reading ------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """OVS version, datapath and interface types this Pi supports (what `cluster check` prints)."""
        root = self._root()

        def optional(value: Any) -> str:  # optional string columns come back as [] or [value]
            value = value[0] if isinstance(value, list) and value else value
            return str(value) if value else "unknown"

        return {
            "ovs_version": optional(root.ovs_version),
            "db_version": optional(root.db_version),
            "datapath_types": sorted(root.datapath_types),
            "iface_types": sorted(root.iface_types),
        }

    def bridges(self, prefix: str | None = None) -> dict[str, Any]:
        out = {}
        for row in self.idl.tables["Bridge"].rows.values():
            label = row.external_ids.get(RUN_LABEL)
            if (prefix is None and label) or (prefix is not None and label == prefix):
                out[row.name] = row
        return out

    def ofports(self, bridge: str) -> dict[str, int]:
        """Interface name -> OpenFlow port number (-1 while vswitchd has not attached it yet)."""
        rows = self.bridges().get(bridge)
        if rows is None:
            return {}
        out = {}
        for port in rows.ports:
            for iface in port.interfaces:
                ofport = iface.ofport[0] if isinstance(iface.ofport, list) and iface.ofport else iface.ofport
                out[iface.name] = int(ofport) if ofport not in (None, []) else -1
        return out

    # --- writing ------------------------------------------------------------------------------
    def apply(self, prefix: str, bridges: list[BridgeSpec]) -> None:
        """Make this Pi's bridges of run `prefix` exactly `bridges`, in one transaction: missing
        bridges and ports are created, ports no longer wanted removed, the rest left alone."""

        def build(txn: Any) -> None:
            root = self._root()
            root.verify("bridges")
            existing = {row.name: row for row in root.bridges}
            keep = [row for name, row in existing.items() if row.external_ids.get(RUN_LABEL) != prefix]
            for spec in bridges:
                row = existing.get(spec.name)
                if row is None:
                    row = self._new_bridge(txn, spec, prefix)
                else:
                    self._update_bridge(txn, row, spec, prefix)
                keep.append(row)
            root.bridges = keep

        self._commit(build, f"configuring {len(bridges)} bridge(s) of run {prefix}")

    def remove_run(self, prefix: str) -> list[str]:
        """Delete every bridge labelled with this run (their ports and interfaces go with them)."""
        gone: list[str] = []

        def build(txn: Any) -> None:
            root = self._root()
            root.verify("bridges")
            gone[:] = [r.name for r in root.bridges if r.external_ids.get(RUN_LABEL) == prefix]
            root.bridges = [r for r in root.bridges if r.external_ids.get(RUN_LABEL) != prefix]

        self._commit(build, f"removing the bridges of run {prefix}")
        return gone

    def set_port(self, bridge: str, port: PortSpec, present: bool) -> None:
        """Add or remove one port at run time (link up/down on a tunnel or patch)."""

        def build(txn: Any) -> None:
            row = self.bridges().get(bridge)
            if row is None:
                raise ClusterError(f"{self.endpoint}: bridge {bridge!r} does not exist")
            row.verify("ports")
            ports = [p for p in row.ports if p.name != port.name]
            if present:
                ports.append(self._new_port(txn, port))
            row.ports = ports

        self._commit(build, f"{'adding' if present else 'removing'} port {port.name}")

    def add_mirror(self, bridge: str, name: str, port: str, output: str, external_ids: dict[str, str]) -> None:
        """Copy every frame that enters or leaves `port` of `bridge` to a new internal port `output`
        (an OVS Mirror): how a patch or VXLAN port, which has no kernel device, can be captured.
        A mirror's output port takes no part in forwarding, and what it sends is dropped."""

        def build(txn: Any) -> None:
            row = self.bridges().get(bridge)
            if row is None:
                raise ClusterError(f"{self.endpoint}: bridge {bridge!r} does not exist")
            row.verify("ports")
            row.verify("mirrors")
            selected = next((p for p in row.ports if p.name == port), None)
            if selected is None:
                raise ClusterError(f"{self.endpoint}: bridge {bridge!r} has no port {port!r} (is the link down?)")
            out = self._new_port(txn, PortSpec(output, type="internal"))
            row.ports = [*row.ports, out]
            mirror = txn.insert(self.idl.tables["Mirror"])
            mirror.name = name
            mirror.select_src_port = [selected]
            mirror.select_dst_port = [selected]
            mirror.output_port = [out]
            mirror.external_ids = dict(external_ids)
            row.mirrors = [*row.mirrors, mirror]

        self._commit(build, f"mirroring port {port} of {bridge} to {output}")

    def remove_mirror(self, bridge: str, name: str) -> None:
        """Remove mirror `name` and its output port; idempotent (a bridge that is gone took both)."""

        def build(txn: Any) -> None:
            row = self.bridges().get(bridge)
            if row is None:
                return
            row.verify("ports")
            row.verify("mirrors")
            outputs = {p.name for m in row.mirrors if m.name == name for p in m.output_port}
            row.mirrors = [m for m in row.mirrors if m.name != name]
            row.ports = [p for p in row.ports if p.name not in outputs]

        self._commit(build, f"removing mirror {name} of {bridge}")

    def _new_port(self, txn: Any, spec: PortSpec) -> Any:
        iface = txn.insert(self.idl.tables["Interface"])
        iface.name = spec.name
        if spec.type:
            iface.type = spec.type
        if spec.options:
            iface.options = dict(spec.options)
        if spec.ofport is not None:
            iface.ofport_request = [spec.ofport]
        port = txn.insert(self.idl.tables["Port"])
        port.name = spec.name
        port.interfaces = [iface]
        return port

    def _new_bridge(self, txn: Any, spec: BridgeSpec, prefix: str) -> Any:
        row = txn.insert(self.idl.tables["Bridge"])
        row.name = spec.name
        local = self._new_port(txn, PortSpec(spec.name, type="internal"))  # the bridge's own port
        row.ports = [local] + [self._new_port(txn, p) for p in spec.ports]
        self._set_bridge_columns(txn, row, spec, prefix)
        return row

    def _update_bridge(self, txn: Any, row: Any, spec: BridgeSpec, prefix: str) -> None:
        row.verify("ports")
        wanted = {p.name: p for p in spec.ports}
        ports = []
        for port in row.ports:
            if port.name == spec.name or (port.name in wanted and self._port_matches(port, wanted[port.name])):
                ports.append(port)
                wanted.pop(port.name, None)
        ports += [self._new_port(txn, p) for p in wanted.values()]
        row.ports = ports
        self._set_bridge_columns(txn, row, spec, prefix)

    @staticmethod
    def _port_matches(port: Any, spec: PortSpec) -> bool:
        iface = port.interfaces[0] if port.interfaces else None
        return iface is not None and iface.type == spec.type and dict(iface.options) == spec.options

    def _set_bridge_columns(self, txn: Any, row: Any, spec: BridgeSpec, prefix: str) -> None:
        row.datapath_type = spec.datapath_type
        row.protocols = list(spec.protocols)
        row.fail_mode = ["secure"] if spec.controllers else ["standalone"]
        row.other_config = {"datapath-id": spec.dpid, "disable-in-band": "true"}
        row.external_ids = {RUN_LABEL: prefix, **spec.external_ids}
        wanted = sorted(spec.controllers + spec.listeners)
        current = sorted(c.target for c in row.controller) if not _is_new(row) else []
        if current != wanted:
            controllers = []
            for target in wanted:
                ctl = txn.insert(self.idl.tables["Controller"])
                ctl.target = target
                controllers.append(ctl)
            row.controller = controllers


def _is_new(row: Any) -> bool:
    return getattr(row, "_data", None) is None
