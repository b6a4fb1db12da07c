"""`EmulatedCluster`: a cluster of Pis emulated on one machine, each a network namespace with its
own ovsdb-server and ovs-vswitchd reachable only over TCP (or TLS) on its underlay address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from picloud.errors import ClusterError
from topology.backends.cluster.ca import issue_certificate, make_ca
from topology.effects import ethtool, ip, netns, ovs, proc
from topology.inventory import check_underlay

DEFAULT_UNDERLAY = "172.29.0.0/24"
LOCAL_DOCKER = "unix:///var/run/docker.sock"
OVSDB_PORT = 6640
VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
EMU_NAME_RE = re.compile(r"\A[a-z][a-z0-9]{1,7}\Z")


def _ovs_version() -> str:
    """What ovs-ctl records in the database on a real Pi (ovs-vswitchd itself does not)."""
    out = proc.run(["ovs-vswitchd", "--version"]).stdout.splitlines()[0]
    return out.split()[-1]


class EmulatedCluster:
    """N Pis as network namespaces, each with a private OVS reachable only over TCP.

    Per Pi `NAMEe<i>`: a namespace; a veth to the underlay bridge in the hub namespace `NAMEh`;
    ovsdb-server and ovs-vswitchd with their own database, sockets, pidfiles and run directory
    under WORKDIR (so they never meet the system OVS); the userspace datapath. As on a DPDK host,
    the underlay address lives on an OVS bridge (`underlay`) holding the Pi's NIC, because the
    userspace datapath sends VXLAN only out of its own ports. OVSDB listens on ptcp:6640 on that
    address (a Manager row, as `ovs-vsctl set-manager` makes), nowhere else reachable from outside.
    The underlay subnet is checked against the host's routes and refused when it overlaps one.
    """

    def __init__(self, name: str, count: int = 3, subnet: str = DEFAULT_UNDERLAY,
                 workdir: str | Path | None = None, tls: bool = False, docker_pis: tuple[int, ...] = ()):
        if not EMU_NAME_RE.match(name):
            raise ClusterError(f"emulated cluster {name!r}: invalid name (2-8 of [a-z0-9], starting with a letter)")
        if not 1 <= count <= 16:
            raise ClusterError(f"emulated cluster {name!r}: {count} pis (1 to 16)")
        self.name = name
        self.count = count
        self.subnet = ipaddress.IPv4Network(subnet, strict=False)
        self.workdir = Path(workdir or f"/run/picloud/emu-{name}")
        self.tls = tls
        self.docker_pis = tuple(docker_pis)  # these Pis list this machine's Docker engine as theirs
        self.records: dict[str, dict[str, dict]] = {}

    @classmethod
    def load(cls, name: str, workdir: str | Path | None = None) -> EmulatedCluster:
        """The emulated cluster `name` started earlier (by another process, e.g. the CLI)."""
        probe = cls(name, 1, workdir=workdir)
        meta = probe.workdir / "cluster.json"
        if not meta.exists():
            raise ClusterError(f"emulated cluster {name!r}: not running (no {meta})")
        data = json.loads(meta.read_text())
        return cls(name, int(data["count"]), data["subnet"], workdir=workdir, tls=bool(data.get("tls")))

    # --- names and addresses ------------------------------------------------------------------
    @property
    def hub_netns(self) -> str:
        return f"{self.name}h"

    @property
    def gateway_iface(self) -> str:
        return f"{self.name}g"

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def pi_name(self, i: int) -> str:
        return f"pi{i + 1}"

    def pi_netns(self, i: int) -> str:
        return f"{self.name}e{i}"

    def address(self, i: int) -> str:
        return str(self.subnet.network_address + 11 + i)

    def underlay_mac(self, i: int) -> str:
        """A fixed MAC for the Pi's underlay port: after an OVS restart the neighbours' ARP caches
        still hold the right one (a fresh random MAC would leave the Pi unreachable for minutes)."""
        digest = hashlib.sha256(self.pi_netns(i).encode()).digest()
        return "0a:" + ":".join(f"{b:02x}" for b in digest[:5])

    def ovsdb_endpoint(self, i: int) -> str:
        return f"{'ssl' if self.tls else 'tcp'}:{self.address(i)}:{OVSDB_PORT}"

    @property
    def tls_dir(self) -> Path:
        return self.workdir / "tls"

    def client_tls(self) -> dict[str, str]:
        """The orchestrator's certificate, signed by this cluster's CA (what the inventory lists)."""
        return {"ca": str(self.tls_dir / "ca.pem"), "cert": str(self.tls_dir / "client.pem"),
                "key": str(self.tls_dir / "client-key.pem")}

    def pi_dir(self, i: int) -> Path:
        return self.workdir / f"e{i}"

    def inventory(self) -> dict[str, Any]:
        return {"controller": self.gateway, "pis": [
            {"name": self.pi_name(i), "management": self.address(i), "ovsdb": self.ovsdb_endpoint(i),
             "docker": LOCAL_DOCKER if i in self.docker_pis else "none", "netns": self.pi_netns(i),
             "underlay": self.address(i), "model": "3",
             **({"tls": self.client_tls()} if self.tls else {})}
            for i in range(self.count)]}

    def write_inventory(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.inventory(), sort_keys=False))
        return path

    # --- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> EmulatedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        routes = [str(n) for n in ip.host_routes() if n.version == 4]
        check_underlay(str(self.subnet), routes, where=f"emulated cluster {self.name}: underlay")
        if self.subnet.num_addresses < 16 + self.count:
            raise ClusterError(f"emulated cluster {self.name}: underlay {self.subnet} too small for {self.count} pis")
        for binary in ("ovsdb-server", "ovs-vswitchd", "ovsdb-tool"):
            if shutil.which(binary) is None:
                raise ClusterError(f"emulated cluster: {binary} not installed (run 'make setup')")
        existing = ip.netns_list()
        if (self.gateway_iface in ip.links() or {self.hub_netns, *map(self.pi_netns, range(self.count))} & existing
                or (self.workdir / "pids.json").exists()):
            raise ClusterError(f"emulated cluster {self.name}: already exists (stop it first)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "cluster.json").write_text(json.dumps({"count": self.count, "subnet": str(self.subnet),
                                                               "tls": self.tls}))
        try:
            if self.tls:
                self._certificates()
            self._underlay()
            for i in range(self.count):
                self._start_ovs(i, fresh=True)
            for i in range(self.count):
                self._wait_reachable(i)
        except BaseException:
            self.stop()
            raise

    def _underlay(self) -> None:
        """The underlay switch is a Linux bridge inside its own namespace (`NAMEh`), not in the
        root one: with Docker installed, bridged IPv4 goes through the root namespace's iptables
        FORWARD chain (br_netfilter), whose policy Docker sets to DROP. The root namespace joins
        it through one veth (`NAMEg`) holding the gateway address the Pis reach the controller on."""
        hub = self.hub_netns
        lines = [f"netns add {hub}"] + [f"netns add {self.pi_netns(i)}" for i in range(self.count)]
        lines += [f"link add {self.gateway_iface} type veth peer name gw netns {hub}",
                  f"addr add {self.gateway}/{self.subnet.prefixlen} dev {self.gateway_iface}",
                  f"link set {self.gateway_iface} up"]
        lines += [f"link add nic0 netns {self.pi_netns(i)} type veth peer name e{i} netns {hub}"
                  for i in range(self.count)]
        ip.batch(lines)
        hub_lines = ["link set lo up", "link add br0 type bridge", "link set br0 up", "link set gw master br0",
                     "link set gw up"]
        for i in range(self.count):
            hub_lines += [f"link set e{i} master br0", f"link set e{i} up"]
        ip.batch(hub_lines, netns=hub)
        ip.batch_in_namespaces({self.pi_netns(i): ["link set lo up", "link set nic0 up"] for i in range(self.count)})
        # The userspace datapath reads nic0 through a packet socket, so the Pi's kernel sees every
        # frame too and, by default, answers an ARP request for the underlay address on nic0 with
        # nic0's MAC, racing the right answer from the `underlay` port. A peer OVS that keeps the
        # wrong one sends its VXLAN frames to nic0's MAC, which the underlay bridge never decaps:
        # measured, one Pi cut off in 1 of 3 runs under load. The kernel answers only on the port
        # holding the address.
        for i in range(self.count):
            netns.set_sysctl(self.pi_netns(i), "net.ipv4.conf.nic0.arp_ignore", 1)
        ethtool.tx_offload_off([(None, self.gateway_iface), (hub, "gw")]
                               + [(hub, f"e{i}") for i in range(self.count)])

    def _certificates(self) -> None:
        """A CA, one server certificate per Pi and a client certificate, as provisioning/pi.yml makes."""
        d = self.tls_dir
        d.mkdir(parents=True, exist_ok=True)
        make_ca(d / "ca.pem", d / "ca-key.pem", "PiCloud emulated CA")
        for i in range(self.count):
            issue_certificate(d / "ca.pem", d / "ca-key.pem", d / f"e{i}.pem", d / f"e{i}-key.pem", self.pi_name(i))
        issue_certificate(d / "ca.pem", d / "ca-key.pem", d / "client.pem", d / "client-key.pem", "picloud")

    def _env(self, i: int) -> dict[str, str]:
        d = str(self.pi_dir(i))
        return {**os.environ, "OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d, "OVS_SYSCONFDIR": d}

    def _spawn(self, i: int, role: str, argv: list[str]) -> None:
        log_file = open(self.pi_dir(i) / f"{role}.out", "ab")  # noqa: SIM115 (owned by the child)
        child = subprocess.Popen(netns.exec_argv(self.pi_netns(i), argv), stdout=log_file,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env(i),
                                 start_new_session=True)
        log_file.close()
        self.records.setdefault(self.pi_netns(i), {})[role] = proc.record(child, role).to_dict()
        self._save_records()

    def _save_records(self) -> None:
        (self.workdir / "pids.json").write_text(json.dumps(self.records))

    def _start_ovs(self, i: int, fresh: bool) -> None:
        d = self.pi_dir(i)
        d.mkdir(parents=True, exist_ok=True)
        db, sock = d / "conf.db", d / "db.sock"
        if fresh or not db.exists():
            db.unlink(missing_ok=True)
            proc.run(["ovsdb-tool", "create", str(db), VSWITCH_SCHEMA])
        sock.unlink(missing_ok=True)
        tls = [f"--private-key={self.tls_dir / f'e{i}-key.pem'}", f"--certificate={self.tls_dir / f'e{i}.pem'}",
               f"--ca-cert={self.tls_dir / 'ca.pem'}"] if self.tls else []
        self._spawn(i, "ovsdb-server", [
            "ovsdb-server", str(db), f"--remote=punix:{sock}",
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options", *tls,
            f"--pidfile={d / 'ovsdb-server.pid'}", f"--unixctl={d / 'ovsdb-server.ctl'}",
            f"--log-file={d / 'ovsdb-server.log'}", "-vconsole:off"])
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline:
                raise ClusterError(f"emulated pi {self.pi_netns(i)}: ovsdb-server did not start "
                                   f"(see {d / 'ovsdb-server.log'})")
            time.sleep(0.05)
        db_url = f"unix:{sock}"
        if fresh:
            # Provisioning, as the playbook does on a real Pi: the underlay bridge holding the NIC
            # and the address, and the OVSDB listener on that address only.
            ovs.vsctl("--no-wait", "init", "--", "add-br", "underlay", "--",
                      "set", "Bridge", "underlay", "datapath_type=netdev",
                      f"other_config:hwaddr={self.underlay_mac(i)}", "--",
                      "add-port", "underlay", "nic0", "--",
                      "set-manager", f"{'pssl' if self.tls else 'ptcp'}:{OVSDB_PORT}:{self.address(i)}", "--",
                      "set", "Open_vSwitch", ".", f"ovs_version={_ovs_version()}", db=db_url)
            if self.tls:
                # As the playbook's `ovs-vsctl set-ssl`: ovs-vswitchd's key for ssl: controllers.
                ovs.vsctl("--no-wait", "set-ssl", str(self.tls_dir / f"e{i}-key.pem"),
                          str(self.tls_dir / f"e{i}.pem"), str(self.tls_dir / "ca.pem"), db=db_url)
        self._spawn(i, "ovs-vswitchd", [
            "ovs-vswitchd", db_url, "--disable-system", f"--pidfile={d / 'ovs-vswitchd.pid'}",
            f"--unixctl={d / 'ovs-vswitchd.ctl'}", f"--log-file={d / 'ovs-vswitchd.log'}", "-vconsole:off"])
        deadline = time.monotonic() + 15
        while "underlay" not in ip.links(self.pi_netns(i)):
            if time.monotonic() > deadline:
                raise ClusterError(f"emulated pi {self.pi_netns(i)}: ovs-vswitchd did not start "
                                   f"(see {d / 'ovs-vswitchd.log'})")
            time.sleep(0.05)
        ip.batch([f"addr replace {self.address(i)}/{self.subnet.prefixlen} dev underlay", "link set underlay up"],
                 netns=self.pi_netns(i))
        # Without userspace TSO (it cannot be used with tunnels in OVS 3.1) the userspace datapath
        # forwards checksum-offloaded frames unfinished: every veth and tap it touches sends
        # complete ones instead.
        ethtool.tx_offload_off([(self.pi_netns(i), "nic0"), (self.pi_netns(i), "underlay")])

    def _wait_reachable(self, i: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.address(i), OVSDB_PORT), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise ClusterError(f"emulated pi {self.pi_netns(i)}: OVSDB not reachable on "
                                       f"{self.ovsdb_endpoint(i)}") from None
                time.sleep(0.1)

    def _load_records(self) -> None:
        """PIDs recorded by the process that started the cluster (the CLI may be another one)."""
        pids = self.workdir / "pids.json"
        if not self.records and pids.exists():
            self.records = json.loads(pids.read_text())

    def stop_ovs(self, i: int) -> None:
        self._load_records()
        for role in ("ovs-vswitchd", "ovsdb-server"):
            rec = self.records.get(self.pi_netns(i), {}).pop(role, None)
            if rec:
                proc.terminate(proc.ProcessRecord.from_dict(rec))
        self._save_records()

    def restart_ovs(self, i: int, wipe: bool = False) -> None:
        """Stop and start Pi i's OVS. wipe: with an empty database, as after a re-install; the Pi
        keeps its provisioning (underlay bridge, listener) but loses every run's bridges."""
        self.stop_ovs(i)
        self._start_ovs(i, fresh=wipe)
        self._wait_reachable(i)

    def stop(self) -> None:
        """Idempotent: processes we started (checked by start time), namespaces, bridge, files."""
        self._load_records()
        for ns, roles in list(self.records.items()):
            for role in ("ovs-vswitchd", "ovsdb-server"):
                if role in roles:
                    proc.terminate(proc.ProcessRecord.from_dict(roles.pop(role)))
            self.records.pop(ns, None)
        ip.delete_netns([self.hub_netns] + [self.pi_netns(i) for i in range(self.count)])
        ip.delete_links([self.gateway_iface])
        shutil.rmtree(self.workdir, ignore_errors=True)
