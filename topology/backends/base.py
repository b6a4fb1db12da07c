"""The Fabric interface every backend (local namespaces, Docker, cluster) implements.

One typed interface behind the Testbed facade, as Kathará does for Docker and Kubernetes: the
rest of PiCloud never asks which backend it is talking to.
"""

from __future__ import annotations

import subprocess
from typing import Protocol, runtime_checkable

from picloud.runstate import RunState
from topology.model import Topology


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

    def shape_link(self, a: str, b: str, bw: float | None, **impairments: object) -> object: ...
    # impairments: delay, jitter, loss, queue (see LocalFabric.shape_link)

    def bridge(self, node: str) -> str: ...

    def ofctl_target(self, node: str) -> str: ...
