"""The controller process: os-ken apps (ours, os-ken's or unmodified Ryu apps) plus the REST API.

    python -m controller_apps.runner [APP ...] --listen 127.0.0.1:OFPORT --api 127.0.0.1:APIPORT
        [--api-token-file FILE | --api-open] [--api-host NAME ...] [--tls-key K --tls-cert C --tls-ca CA]
        [--topology STATE_JSON] [--tenants TENANTS_YAML] [--config FILE]

Why our own runner instead of `ryu-manager`/`osken-manager`: os-ken 4.2.2 ships no manager CLI,
Ryu apps need the `ryu` import alias installed before they are imported, and the REST API (Ryu's
lived in its WSGI app, gone from os-ken) must run in the same process to reach the datapaths.

APP is a built-in name (see BUILTIN), a dotted module, or a .py file. Every app is imported and
checked before any socket is opened, so a bad name or a broken file costs one line and exit 2.
Then: `cfg.CONF(...)` with the listen address, os-ken's AppManager loads and instantiates the apps
(what `AppManager.run_apps` does, split so the Flask API starts after apps have registered their
blueprints), the API thread starts, and one ready line is logged. Packet-ins reach the apps with
their TCP/UDP checksums finished (see "packet-in checksum repair" below for the OVS behaviour that
needs it). When a loaded app answers packet-ins on the fast path (PiCloud's own do), OpenFlow 1.3
packet-ins reach it from their header bytes instead (controller_apps/fastpath.py); a Ryu app run
alone keeps os-ken's path untouched. SIGTERM or SIGINT closes the apps and the API and exits 0. os-ken's hub runs native
threads here (OSKEN_HUB_TYPE unset), which cannot be killed, so the process ends with `os._exit`
once everything is closed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controller_apps import fastpath, native_hub, ryu_compat, stats_wait, topology_v15
from controller_apps.fastpath import repair_partial_checksum
from picloud.errors import ControllerError, PiCloudError

LOG = logging.getLogger("picloud.controller")

BUILTIN: dict[str, str] = {
    "l2_learning": "controller_apps.l2_learning",
    "discovery": "controller_apps.discovery",
    "routing": "controller_apps.routing",
    "monitor": "controller_apps.monitor",
    "tenancy": "controller_apps.tenancy",
}
DEFAULT_APPS = ["discovery", "routing", "monitor"]
# Ryu REST apps people put on a ryu-manager command line next to their own app: the API already
# serves their endpoints, so `picloud controller ryu.app.ofctl_rest my_app.py` works as it did.
SERVED_BY_API = {
    "ryu.app.ofctl_rest": "/stats/*",
    "os_ken.app.ofctl_rest": "/stats/*",
}
API_APP = "controller_apps.api"
DEFAULT_LISTEN = "127.0.0.1:6653"
DEFAULT_API = "127.0.0.1:8200"  # docs/CONTRACTS.md "Ports per run": 8200+N for run pcN
READY_TIMEOUT = 10.0


@dataclass
class Options:
    """Validated command line: everything the run needs, checked before any side effect."""

    apps: list[str]  # module names, importable (files are already imported under a module name)
    listen: tuple[str, int]
    api: tuple[str, int] | None
    topology: dict[str, Any] | None = None
    topology_file: str | None = None
    tenants_file: str | None = None
    config: str | None = None
    labels: list[str] = field(default_factory=list)  # what the user typed, for the ready line
    api_token_file: str | None = None  # None with api_open, or with the API off
    api_open: bool = False
    api_hosts: tuple[str, ...] = ()
    api_token_created: bool = False  # the runner made the default token file: it removes it at exit
    tls: tuple[str, str, str] | None = None  # (key, cert, ca): OpenFlow over TLS, switches need a CA-signed cert


def parse_endpoint(text: str, option: str) -> tuple[str, int]:
    """'IP:PORT' -> (ip, port); the port must be 1..65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ControllerError(f"{option} {text!r}: expected IP:PORT (for example 127.0.0.1:6653)")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host.strip("[]"))
    except OSError:
        raise ControllerError(f"{option} {text!r}: {host!r} is not an IP address") from None
    return host.strip("[]"), int(port)


def _check_free(endpoint: tuple[str, int], option: str) -> None:
    family = socket.AF_INET6 if ":" in endpoint[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(endpoint)
        except OSError as exc:
            raise ControllerError(
                f"{option} {endpoint[0]}:{endpoint[1]}: cannot listen ({exc.strerror}; pick a free port)"
            ) from None


def _is_app_class(obj: Any, module: Any) -> bool:
    from os_ken.base.app_manager import OSKenApp

    return inspect.isclass(obj) and issubclass(obj, OSKenApp) and obj.__module__ == module.__name__


def _import_file(path: Path) -> str:
    """Import a .py app file under a module name of its own and return that name."""
    name = "picloud_app_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))  # an app may import a helper module next to it, as in Ryu
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(path.parent))
    return name


def resolve_app(spec: str) -> str:
    """Import one APP argument and return its module name; ControllerError (one line) if it is
    not a loadable app."""
    ryu_compat.install()
    try:
        if spec.endswith(".py") or os.sep in spec:
            path = Path(spec)
            if not path.is_file():
                raise ControllerError(f"app {spec!r}: no such file (APP is a built-in name, a module or a .py file)")
            name = _import_file(path.resolve())
        else:
            name = BUILTIN.get(spec, spec)
            if importlib.util.find_spec(name) is None and spec in BUILTIN:
                raise ControllerError(f"app {spec!r}: built-in module {name} is not installed in this checkout")
            if importlib.util.find_spec(name) is None:
                known = ", ".join(BUILTIN)
                raise ControllerError(f"app {spec!r}: no such built-in app or module (built-ins: {known})")
            importlib.import_module(name)
    except ryu_compat.RyuPartMissing as exc:
        raise ControllerError(f"app {spec!r}: {exc}") from None
    except SyntaxError as exc:
        raise ControllerError(f"app {spec!r}: {exc.filename}:{exc.lineno}: syntax error ({exc.msg})") from None
    except ModuleNotFoundError as exc:
        if spec in BUILTIN and exc.name == BUILTIN[spec]:
            raise ControllerError(f"app {spec!r}: built-in module {exc.name} is not installed") from None
        raise ControllerError(f"app {spec!r}: cannot import {exc.name!r} (install it or fix the import)") from None
    except ImportError as exc:
        raise ControllerError(f"app {spec!r}: import failed ({exc})") from None
    except PiCloudError:
        raise
    except Exception as exc:  # the user's module raised while importing: their bug, one line
        raise ControllerError(f"app {spec!r}: importing it raised {type(exc).__name__}: {exc}") from None
    module = sys.modules[name]
    if not any(_is_app_class(obj, module) for _, obj in inspect.getmembers(module)):
        raise ControllerError(f"app {spec!r}: defines no app class (subclass ryu's RyuApp or os-ken's OSKenApp)")
    ryu_compat.require_api_services(module)
    return name


def load_topology(path: str) -> dict[str, Any]:
    """The intended topology from a RunState JSON (its `topology` key) or a bare topology file."""
    from topology.model import Topology

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ControllerError(f"--topology {path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ControllerError(f"--topology {path}: not JSON or YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("topology"), dict):
        data = data["topology"]
    Topology.from_dict(data, where=f"--topology {path}")  # validate now, before any side effect
    return data


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m controller_apps.runner", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return options_from(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's options; `picloud controller` reuses them."""
    parser.add_argument("apps", nargs="*", metavar="APP",
                        help=f"built-in app ({', '.join(BUILTIN)}), dotted module or .py file "
                             f"(default: {' '.join(DEFAULT_APPS)}, + tenancy with --tenants)")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="IP:PORT", help="OpenFlow listen address")
    parser.add_argument("--api", default=DEFAULT_API, metavar="IP:PORT",
                        help="REST API listen address ('none' to disable)")
    parser.add_argument("--api-token-file", metavar="FILE",
                        help="the API token for state-changing requests (created 0600 if missing; default: "
                             "controller-APIPORT.api-token in the state directory)")
    parser.add_argument("--api-open", action="store_true",
                        help="no token for state-changing API requests, as Ryu's ofctl_rest (warned at start)")
    parser.add_argument("--api-host", action="append", default=[], metavar="NAME",
                        help="another Host name clients use for the API (default: the bound address; "
                             "loopback also answers to localhost)")
    parser.add_argument("--tls-key", metavar="FILE", help="OpenFlow over TLS (ssl:): the controller's private key")
    parser.add_argument("--tls-cert", metavar="FILE", help="OpenFlow over TLS: the controller's certificate")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="OpenFlow over TLS: the CA that signed the switches' certificates (required: "
                             "a switch without one is refused)")
    parser.add_argument("--topology", metavar="STATE_JSON", help="intended topology (run state or topology file)")
    parser.add_argument("--tenants", metavar="TENANTS_YAML", help="tenants file for the tenancy app")
    parser.add_argument("--config", metavar="FILE", help="oslo.config file for the apps (as ryu-manager --config-file)")
    parser.add_argument("--observe-links", action="store_true",
                        help="LLDP link discovery in os-ken's topology app (ryu.topology.switches), as "
                             "ryu-manager --observe-links; the app loads when an app uses ryu.topology.api")


def options_from(args: argparse.Namespace) -> Options:
    """Validate parsed arguments, importing every app (no sockets yet)."""
    listen = parse_endpoint(args.listen, "--listen")
    api = None if args.api == "none" else parse_endpoint(args.api, "--api")
    if args.config and not Path(args.config).is_file():
        raise ControllerError(f"--config {args.config}: no such file")
    if args.tenants and not Path(args.tenants).is_file():
        raise ControllerError(f"--tenants {args.tenants}: no such file")
    topology = load_topology(args.topology) if args.topology else None
    labels = list(args.apps) or DEFAULT_APPS + (["tenancy"] if args.tenants else [])
    served = [s for s in labels if s in SERVED_BY_API and not _ryu_app_file(s)]
    for spec in served:
        LOG.info("app %s: served by PiCloud's controller API already (%s); not loaded", spec, SERVED_BY_API[spec])
    labels = [s for s in labels if s not in served]
    apps = [resolve_app(spec) for spec in labels]
    app_versions(apps, labels)
    _check_free(listen, "--listen")
    if api is not None:
        _check_free(api, "--api")
    # Imports os-ken's topology app, which registers --observe-links: oslo.config refuses a CLI
    # option registered after parsing.
    topology_v15.install()
    _parse_config(args.config)
    if getattr(args, "observe_links", False):
        from os_ken import cfg

        cfg.CONF.set_override("observe_links", True)
    token_file = None
    if args.api_open and args.api_token_file:
        raise ControllerError("--api-open and --api-token-file: choose one (an open API has no token)")
    for name in args.api_host:
        if not name or any(c.isspace() or ord(c) < 32 or c in "/@" for c in name):
            raise ControllerError(f"--api-host {name!r}: not a host name")
    tls_files = (args.tls_key, args.tls_cert, args.tls_ca)
    if any(tls_files) and not all(tls_files):
        raise ControllerError("--tls-key, --tls-cert, --tls-ca: give all three for OpenFlow over TLS")
    for option, path in zip(("--tls-key", "--tls-cert", "--tls-ca"), tls_files, strict=True):
        if path and not Path(path).is_file():
            raise ControllerError(f"{option} {path}: no such file")
    created = False
    if api is not None and not args.api_open:
        from picloud.runstate import state_dir

        token_file = args.api_token_file or str(state_dir() / f"controller-{api[1]}.api-token")
        created = not Path(token_file).exists() and not args.api_token_file
        _token(token_file)  # create or check it now: a bad file is a one-line error, not a crash later
    return Options(apps=apps, listen=listen, api=api, topology=topology, topology_file=args.topology,
                   tenants_file=args.tenants, config=args.config, labels=labels, api_token_file=token_file,
                   api_open=bool(args.api_open), api_hosts=tuple(args.api_host), api_token_created=created,
                   tls=_resolved(*tls_files) if all(tls_files) else None)


def _resolved(key: str, cert: str, ca: str) -> tuple[str, str, str]:
    """The TLS files (key, cert, CA), resolved to absolute paths."""
    return str(Path(key).resolve()), str(Path(cert).resolve()), str(Path(ca).resolve())


def _token(path: str) -> str:
    from picloud.secrets_files import ensure_token

    try:
        return ensure_token(Path(path))
    except PiCloudError as exc:
        raise ControllerError(f"--api-token-file: {exc}") from None
    except OSError as exc:
        raise ControllerError(f"--api-token-file {path}: cannot create ({exc.strerror})") from None


def _ryu_app_file(spec: str) -> bool:
    """Ryu's own file for module name `spec` is in RYU_APP_PATH (then it runs, not our stand-in)."""
    base = os.environ.get(ryu_compat.RYU_APP_PATH_ENV)
    if not base or not spec.startswith("ryu.app."):
        return False
    return (Path(base) / f"{spec.rsplit('.', 1)[1]}.py").is_file()


def _parse_config(path: str | None) -> None:
    """Load os-ken's configuration (and the apps' options) from `path`, as ryu-manager's
    --config-file did; after the apps are imported, since they may register options."""
    from os_ken import cfg
    from os_ken.controller import controller  # noqa: F401  (registers the ofp-listen options)
    from oslo_config import cfg as oslo_cfg

    try:
        cfg.CONF(args=[], project="os_ken", default_config_files=[path] if path else [])
    except oslo_cfg.Error as exc:
        message = str(exc).replace("\n", " ")
        raise ControllerError(f"--config {path}: {message} (an oslo.config INI file)") from None


# --- packet-in checksum repair -------------------------------------------------------------------
# OVS 3.1's userspace datapath with userspace TSO sends packet-ins of TCP/UDP packets whose
# checksum the sending veth left to offload: the field holds only the pseudo-header sum. Any app
# that packets such data out again (a hub, the first packet of every flow in a learning switch)
# delivers a segment the receiver drops, so TCP through a reactive app loses its first SYN or
# never connects. The runner finishes those checksums before any app sees the packet-in.

def install_checksum_repair() -> None:
    """Wrap os-ken's packet-in parsers (every OpenFlow version) so every app gets finished checksums."""
    from os_ken.ofproto import (
        ofproto_v1_0,
        ofproto_v1_0_parser,
        ofproto_v1_2,
        ofproto_v1_2_parser,
        ofproto_v1_3,
        ofproto_v1_3_parser,
        ofproto_v1_4,
        ofproto_v1_4_parser,
        ofproto_v1_5,
        ofproto_v1_5_parser,
    )

    for ofproto, parser in [(ofproto_v1_0, ofproto_v1_0_parser), (ofproto_v1_2, ofproto_v1_2_parser),
                            (ofproto_v1_3, ofproto_v1_3_parser), (ofproto_v1_4, ofproto_v1_4_parser),
                            (ofproto_v1_5, ofproto_v1_5_parser)]:
        _wrap_packet_in(parser._MSG_PARSERS, ofproto.OFPT_PACKET_IN)
        _wrap_features_reply(parser._MSG_PARSERS, ofproto.OFPT_FEATURES_REPLY)


def _wrap_features_reply(table: dict[int, Any], msg_type: int) -> None:
    """Set `datapath.id` when the features reply is parsed, before any app sees the event.

    os-ken's own features handler sets it, but with native threads every app's handler runs on its
    own thread, so a Ryu app reading `datapath.id` in its `EventOFPSwitchFeatures` handler (the
    Ryu book's simple_switch_rest_13 keys its tables by it there) could read None; under Ryu's
    eventlet it never did."""
    original = table[msg_type]
    if getattr(original, "picloud_dpid", False):
        return

    def parse(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: bytes) -> Any:
        msg = original(datapath, version, msg_type, msg_len, xid, buf)
        if getattr(datapath, "id", None) is None:
            datapath.id = msg.datapath_id
        return msg

    parse.picloud_dpid = True  # type: ignore[attr-defined]  # a marker on the function: installed once
    table[msg_type] = parse


def _wrap_packet_in(table: dict[int, Any], msg_type: int) -> None:
    original = table[msg_type]
    if getattr(original, "picloud_repair", False):
        return

    def parse(datapath: Any, version: int, msg_type: int, msg_len: int, xid: int, buf: bytes) -> Any:
        msg = original(datapath, version, msg_type, msg_len, xid, buf)
        fixed = repair_partial_checksum(msg.data) if msg.data else None
        if fixed is not None:
            msg.data = fixed
        return msg

    parse.picloud_repair = True  # type: ignore[attr-defined]  # a marker on the function: installed once
    table[msg_type] = parse


def app_versions(apps: list[str], labels: list[str]) -> list[int]:
    """The OpenFlow wire versions every app accepts (os-ken intersects the apps' OFP_VERSIONS);
    ControllerError naming the apps when they share none, which os-ken would only assert."""
    from os_ken.ofproto import ofproto_protocol

    from topology import openflow

    common = set(ofproto_protocol._versions)
    declared: list[tuple[str, list[int]]] = []
    for name, label in zip(apps, labels, strict=True):
        module = sys.modules[name]
        for _, cls in inspect.getmembers(module):
            if not _is_app_class(cls, module):
                continue
            versions = getattr(cls, "OFP_VERSIONS", None)
            if versions:
                declared.append((f"{label} ({cls.__name__})", list(versions)))
                common &= set(versions)
    if not common:
        said = "; ".join(f"{who} wants OpenFlow {openflow.labels(v)}" for who, v in declared)
        raise ControllerError(f"apps share no OpenFlow version: {said} (run them in separate controllers)")
    return sorted(common)


def install_handshake_record() -> None:
    """Make a refused OpenFlow hello a controller event too, so `picloud up` can say why a switch
    never connected (os-ken only logs it)."""
    from os_ken.controller import ofp_handler

    from controller_apps.state import STATE

    original = ofp_handler.OFPHandler._hello_failed
    if getattr(original, "picloud_record", False):
        return

    def hello_failed(self: Any, datapath: Any, error_desc: str) -> None:
        STATE.event("openflow", f"handshake from {datapath.address} refused: {error_desc}")
        original(self, datapath, error_desc)

    hello_failed.picloud_record = True  # type: ignore[attr-defined]  # a marker: installed once
    ofp_handler.OFPHandler._hello_failed = hello_failed


def _wait_listening(endpoint: tuple[str, int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(endpoint, timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def run(options: Options, stop: threading.Event | None = None) -> int:
    """Run the controller until `stop` is set (SIGTERM/SIGINT set it when run from main)."""
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    from controller_apps import api
    from controller_apps.state import STATE

    stop = stop or threading.Event()
    install_checksum_repair()
    install_handshake_record()
    stats_wait.install()  # before any app runs: their ofctl calls wait through it
    native_hub.install()  # eventlet's timeouts on native threads: stplib's timers, topology's probes
    cfg.CONF.set_override("ofp_listen_host", options.listen[0])
    cfg.CONF.set_override("ofp_tcp_listen_port", options.listen[1])
    scheme = "tcp"
    if options.tls is not None:
        # os-ken listens with TLS only (no plain port) once a key and certificate are set, and with
        # ca_certs it requires each switch's certificate to be signed by that CA.
        key, cert, ca = options.tls
        cfg.CONF.set_override("ofp_ssl_listen_port", options.listen[1])
        cfg.CONF.set_override("ctl_privkey", key)
        cfg.CONF.set_override("ctl_cert", cert)
        cfg.CONF.set_override("ca_certs", ca)
        scheme = "ssl"
    if options.topology is not None:
        STATE.set_intended(options.topology)
    STATE.options.update(topology_file=options.topology_file, tenants_file=options.tenants_file,
                         listen=f"{scheme}:{options.listen[0]}:{options.listen[1]}")

    manager = AppManager.get_instance()
    manager.load_apps(options.apps + [API_APP])
    if fastpath.wants_fast_path(manager.applications_cls.values()):
        fastpath.install()  # our apps answer packet-ins from the header bytes (controller_apps/fastpath.py)
    contexts = manager.create_contexts()
    manager.instantiate_apps(**contexts)
    from os_ken.ofproto import ofproto_protocol

    STATE.options["of_versions"] = sorted(ofproto_protocol._supported_versions)
    server = None
    if options.api is not None:
        token = None if options.api_open else _token(str(options.api_token_file))
        server = api.ApiServer(*options.api, token=token, names=options.api_hosts).start()
        STATE.options["api"] = server.url
        if options.api_open:
            LOG.warning("controller API %s is OPEN (--api-open): anyone who can reach it can change every "
                        "flow table, including the tenancy rules that isolate tenants", server.url)
    if not _wait_listening(options.listen, READY_TIMEOUT):
        LOG.error("controller: OpenFlow server did not start listening on %s:%d", *options.listen)
        _shutdown(manager, server)
        if options.api_token_created and options.api_token_file:
            Path(options.api_token_file).unlink(missing_ok=True)
        return 1
    auth = "open" if options.api_open else f"token in {options.api_token_file}"
    LOG.info("picloud controller ready: openflow %s:%s:%d, api %s, apps %s", scheme, options.listen[0],
             options.listen[1], f"{server.url} ({auth})" if server else "off", " ".join(options.labels))
    stop.wait()
    LOG.info("picloud controller stopping")
    _shutdown(manager, server)
    if options.api_token_created and options.api_token_file:
        Path(options.api_token_file).unlink(missing_ok=True)  # ours alone: leave no stray secret behind
    return 0


SHUTDOWN_TIMEOUT = 10.0  # s: closing the apps; after that the process exits without them


def _shutdown(manager: Any, server: Any) -> None:
    """Stop the API, then every app's `close()`, then os-ken's `AppManager.close()`, bounded.

    os-ken's AppManager.close calls `close()` only on contexts and then joins each app's threads;
    the topology app (loaded by Ryu's rest_topology) ends its LLDP thread only in its close(), so
    with `--observe-links` and no switch left to probe that join never returned and SIGTERM hung
    the controller. Here every app's event loop is told to stop, then every app's close() ends its
    own threads (the topology app's joins its event loop too, hence the order), then os-ken's
    close. A thread blocked outside the hub cannot be interrupted, so the whole close is bounded:
    the caller exits with os._exit."""
    done = threading.Event()

    def close() -> None:
        try:
            if server is not None:
                server.stop()
            fastpath.CLOSING.set()  # no more switch messages in: the apps' queues can drain
            apps = list(manager.applications.values())
            for app in apps:  # end each event loop first: an app's close() may join it (the topology app's does)
                app.is_active = False
                app._send_event(app._event_stop, None)
            for app in apps:
                app_close = getattr(app, "close", None)
                if callable(app_close):
                    app_close()
            manager.close()
        except Exception:  # closing is best effort: we are exiting anyway
            LOG.exception("closing apps failed")
        finally:
            done.set()

    threading.Thread(target=close, name="picloud-shutdown", daemon=True).start()
    if not done.wait(SHUTDOWN_TIMEOUT):
        LOG.warning("controller: the apps did not close within %.0f s; exiting without them", SHUTDOWN_TIMEOUT)


def main(argv: list[str] | None = None) -> int:
    # PICLOUD_DEBUG=1: every app's debug log (port descriptions and status, probes, host learning).
    level = logging.DEBUG if os.environ.get("PICLOUD_DEBUG") else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        options = parse_args(argv)
    except ControllerError as exc:
        print(f"picloud controller: error: {exc}", file=sys.stderr)
        return 2
    return serve(options)


def serve(options: Options) -> int:
    """Run in the foreground with signal handling, then end the process (see the module docstring
    on native threads)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = run(options, stop)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
