"""The Docker fabric: the local fabric with every container a real Docker container.

Bridges, fabric links and addressing are exactly the local backend's; only the namespace behind
each container differs. Each container is started with `network_mode=none`, and its network
namespace is then given the name the local backend would have created (`ip netns attach NAME
PID`, the bind mount `ip netns add` makes too). From there the local backend's veth, address and
OVS port code runs unchanged, which is what `ovs-docker add-port` does by hand. Processes are
started with `docker exec`, so they run inside the container's cgroup (its Pi's CPU and memory)
and filesystem; the `ip netns` name stays for tools that only need the network.

Limits (with `pi_model`, presets in topology.inventory.PI_MODELS; none without): all containers
of one Pi share a cgroup limited to that Pi model's cores and RAM, and each container is also
capped at the whole Pi, so the engine reports the limit on every container.
"""

from __future__ import annotations

import logging
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from picloud.errors import FabricError
from picloud.runstate import RunState
from topology.backends.local import LocalFabric
from topology.effects import docker_engine, ip
from topology.fabric_plan import FabricPlan
from topology.inventory import PiModel, pi_model
from topology.model import Topology

log = logging.getLogger(__name__)


class DockerFabric(LocalFabric):
    def __init__(self, topology: Topology, state: RunState, controllers: list[str] | None = None,
                 image: str = docker_engine.DEFAULT_IMAGE, pi_model: str | None = None,
                 datapath: str | None = None, of_versions: list[str] | None = None):
        super().__init__(topology, state, controllers, datapath=datapath, of_versions=of_versions)
        self.image = image
        self.model: PiModel | None = _model(pi_model)
        self._engine: Any = None

    # --- names --------------------------------------------------------------------------------
    def container_name(self, container: str) -> str:
        """Docker's name for a model container: PREFIX-<container>, readable in `docker ps`."""
        return f"{self.prefix}-{container}"

    def cgroup_parent(self, pi: str) -> str:
        return f"/picloud/{self.prefix}-{self.topology.short_id(pi)}"

    @property
    def engine(self) -> Any:
        if self._engine is None:
            self._engine = docker_engine.client()
        return self._engine

    def limits(self) -> dict[str, int]:
        """Per-container limits handed to Docker (nano_cpus, memory in MB); empty without a model."""
        if self.model is None:
            return {}
        return {"nano_cpus": int(self.model.cpus(os.cpu_count() or 1) * 1e9), "memory_mb": self.model.memory_mb}

    # --- build --------------------------------------------------------------------------------
    def check(self) -> None:
        super().check()
        if not docker_engine.image_exists(self.engine, self.image):
            raise FabricError(f"image {self.image!r}: not found in the local Docker engine "
                              "(run 'picloud image build'; no registry is assumed)")
        if docker_engine.list_run(self.engine, self.prefix):
            raise FabricError(f"run {self.prefix}: Docker containers labelled {docker_engine.LABEL}={self.prefix} "
                              f"already exist (a crashed run's: 'picloud clean --run {self.prefix}')")

    def _make_namespaces(self, plan: FabricPlan) -> None:
        """The plan's namespaces are the containers' own, attached under the planned names."""
        self._start_containers([ns.container for ns in plan.namespaces])

    def _pi_of(self, container: str) -> str:
        """The Pi of a model container or of one added at run time (kept in the run state)."""
        return self.topology.pi_of(container) if container in self.topology else str(self._extra()[container]["pi"])

    def _start_containers(self, containers: list[str], netns_names: dict[str, str] | None = None) -> None:
        """Start the Docker containers and name their network namespaces; intent recorded first."""
        names = {c: (netns_names or {}).get(c) or self.netns(c) for c in containers}
        self.state.intend("containers", [self.container_name(c) for c in containers])
        limits = self.limits()
        pis = sorted({self._pi_of(c) for c in containers})
        parents = {}
        for pi in pis:
            if self.model is not None:
                parents[pi] = self.cgroup_parent(pi)
                self.state.extra.setdefault("cgroups", [])
                if parents[pi] not in self.state.extra["cgroups"]:
                    self.state.extra["cgroups"].append(parents[pi])
                    self.state.save()
                docker_engine.pi_cgroup_create(parents[pi], self.model.cpus(os.cpu_count() or 1),
                                               self.model.memory_mb)

        def start(container: str) -> tuple[str, int]:
            pi = self._pi_of(container)
            docker_engine.run_container(
                self.engine, self.container_name(container), self.image, self.prefix, hostname=container,
                nano_cpus=limits.get("nano_cpus"), mem_limit_mb=limits.get("memory_mb"),
                extra_labels={"picloud.container": container, "picloud.pi": pi},
                cgroup_parent=parents.get(pi),
            )
            return container, docker_engine.container_pid(self.engine, self.container_name(container))

        with ThreadPoolExecutor(max_workers=8) as pool:
            pids = dict(pool.map(start, containers))
        ip.batch([f"netns attach {names[c]} {pids[c]}" for c in containers])

    # --- run-time containers ------------------------------------------------------------------
    def _make_namespace(self, container: str, netns_name: str) -> None:
        """A tenant member as a Docker container: same names, port allocation and state entry as
        the local backend; the namespace is the new container's, attached under that name."""
        self._start_containers([container], {container: netns_name})

    def _remove_extra(self, name: str) -> None:
        super()._remove_extra(name)
        docker_engine.remove(self.engine, self.container_name(name))
        self.state.forget("containers", [self.container_name(name)])

    # --- processes inside containers ----------------------------------------------------------
    def exec(self, container: str, argv: list[str], timeout: float | None = None) -> tuple[int, str]:
        self.netns(container)  # unknown names fail the same way as in the local backend
        return docker_engine.exec_run(self.container_name(container), list(argv), timeout=timeout)

    def popen(self, container: str, argv: list[str], **popen_kwargs) -> subprocess.Popen:
        self.netns(container)
        return docker_engine.popen(self.container_name(container), list(argv), **popen_kwargs)

    # --- tear down ----------------------------------------------------------------------------
    def down(self) -> None:
        """Containers first (by label, so a crashed run's are found too), then the local objects."""
        try:
            docker_engine.remove_run(self.engine, self.prefix)
        except FabricError as exc:
            log.warning("%s (its containers are left; 'picloud clean' retries)", exc)
        else:
            self.state.objects["containers"] = []
        for parent in self.state.extra.pop("cgroups", []):
            docker_engine.pi_cgroup_remove(parent)
        super().down()


def _model(key: str | None) -> PiModel | None:
    if key in (None, "", "none"):
        return None
    try:
        return pi_model(key)
    except Exception as exc:  # ClusterError: same message, but a fabric option was wrong
        raise FabricError(f"--pi-model: {exc}") from None
