"""The Fabric interface every backend (local namespaces, Docker, cluster) implements.

One typed interface behind the Testbed facade, as Kathará does for Docker and Kubernetes: the
rest of PiCloud never asks which backend it is talking to.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from picloud.errors import FabricError
from picloud.runstate import RunState
from topology.model import Link, Topology

if TYPE_CHECKING:
    from picloud.controller_client import ControllerClient


@runtime_checkable
class Fabric(Protocol):
    topology: Topology
    prefix: str
    state: RunState

    def up(self) -> None:
        """Build everything; on failure raise FabricError after rolling back what was made."""

    def down(self) -> None:
        """Remove everything this run made; idempotent."""

    def netns(self, container: str) -> str: ...

    def exec(self, container: str, argv: list[str], timeout: float | None = None) -> tuple[int, str]: ...

    def popen(self, container: str, argv: list[str], **popen_kwargs) -> subprocess.Popen: ...

    def add_container(self, name: str, pi: str, ip: str, mac: str, prefixlen: int,
                      gateway: str | None) -> int:
        """Attach a new container to `pi`'s bridge at run time; returns its port number there."""

    def remove_container(self, name: str) -> None: ...

    def set_link(self, a: str, b: str, up: bool) -> None: ...

    def link_devices(self, a: str, b: str) -> list[tuple[str, str | None]] | None: ...
    # The kernel devices (name, netns) whose IFF_UP is the link's state on this machine, so a
    # scenario can cut it from another process; None where there are none (patch ports, remote Pis).

    def shape_link(self, a: str, b: str, bw: Any = ..., *, delay: Any = ..., jitter: Any = ..., loss: Any = ...,
                   queue: Any = ...) -> Link | None:
        """Replace the given attributes of link a-b (None removes one; one left out stays, see
        LocalFabric.shape_link); the link as it now is, or None where the backend cannot shape."""

    def bridge(self, node: str) -> str: ...

    def ofctl_target(self, node: str) -> str: ...


class LinkEnd(Protocol):
    """One end of a link as the system sees it (`topology.backends.local.End`)."""

    @property
    def iface(self) -> str: ...

    @property
    def netns(self) -> str | None: ...  # None: the root namespace

    @property
    def bridge(self) -> str | None: ...  # the OVS bridge it is a port of, if any

    @property
    def port(self) -> int: ...


@runtime_checkable
class KernelLinks(Protocol):
    """A fabric whose link ends are kernel devices on this machine (local and Docker backends), so
    tc, counters and captures can reach them; the cluster's links are on other machines."""

    def end(self, node: str, link: Link) -> LinkEnd: ...


class Run(Protocol):
    """What domain code (tenants, traffic, the UI's data source) may use of a running testbed.

    `picloud.Testbed` is one; a test may pass its own. Declared here, beside `Fabric`, so that the
    domain packages type their `testbed` parameters without importing the facade. Read-only: the
    run's topology, prefix and state, its fabric, the client of its controller's API, and the few
    facade operations experiments run through (exec, flows, links, tenants, ping_all, a controller
    crash and restart)."""

    @property
    def topology(self) -> Topology: ...

    @property
    def prefix(self) -> str: ...

    @property
    def state(self) -> RunState | None: ...  # None until the run is up: see `state_of`

    @property
    def fabric(self) -> Fabric | None: ...  # likewise: see `fabric_of`

    @property
    def controller_client(self) -> ControllerClient | None: ...

    @property
    def controller_api(self) -> str | None: ...

    @property
    def containers(self) -> list[str]: ...

    def container_ip(self, container: str) -> str: ...

    def exec(self, container: str, cmd: str | list[str], timeout: float | None = None) -> tuple[int, str]: ...

    def popen(self, container: str, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen: ...

    def flows(self, switch: str) -> list[dict]: ...

    def port_stats(self, switch: str) -> list[dict]: ...

    def link(self, a: str, b: str) -> Any:
        """A handle with .down(), .up(), .shape(bw, ...) for the link a-b."""
        ...

    def tenant(self, name: str, subnet: str | None = None, rate: float | None = None) -> Any: ...

    def verify_isolation(self) -> Any: ...

    def kill_controller(self) -> int:
        """SIGKILL the run's controller (a crash) and reap it; its PID."""
        ...

    def restart_controller(self) -> int:
        """Start the killed controller again with its command line; the new PID."""
        ...

    def ping_all(self, tcp: bool = False, containers: list[str] | None = None,
                 timeout: float = 3.0) -> dict[str, dict[str, float]]:
        """{src: {dst: loss 0..1}} between the run's containers (tenants.verify's reachability)."""
        ...


def fabric_of(run: Run) -> Fabric:
    """The fabric of a run that is up. A `Testbed` has none before `up()` and after `down()`;
    domain code given such a run fails here with one line instead of on `None` further down."""
    fabric = run.fabric
    if fabric is None:
        raise FabricError(_NOT_UP)
    return fabric


def state_of(run: Run) -> RunState:
    """The run state of a run that is up (see `fabric_of`)."""
    state = run.state
    if state is None:
        raise FabricError(_NOT_UP)
    return state


_NOT_UP = "testbed is not up (use 'with Testbed(...) as tb:' or tb.up())"
