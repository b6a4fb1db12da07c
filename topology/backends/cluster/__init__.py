"""Cluster mode: the topology on a rack of Pis, driven only through their OVSDB endpoints.

Every bridge (switch or Pi of the model) is placed on one inventory Pi (topology.inventory.place);
a link between bridges on one Pi is a pair of OVS patch ports, a link between Pis a pair of VXLAN
ports (one VNI per model link, see topology.inventory.wiring). Bridges and ports are created with
one OVSDB transaction per Pi (topology.effects.ovsdb_remote), so the controller sees the same
datapath ids and port numbers as on the local fabric and its apps run unchanged.

`up` connects to every Pi and checks its OVS before changing any of them: a cluster with one Pi
unreachable is refused whole, never started by half.

Containers: on a Pi with a Docker endpoint, each container is a Docker container made through
that Pi's engine (`network_mode=none`, limits from the Pi's model); its veth is made on the Pi by a
short-lived helper container sharing the Pi's network and PID namespaces, with NET_ADMIN,
SYS_ADMIN and SYS_PTRACE only (the Docker API is the only way in; no SSH), and the host end is
added to the Pi's bridge through OVSDB. On an
emulated Pi without Docker (`docker: none`) each container is a network namespace on this machine
whose veth's other end sits in the Pi's namespace. Run-time containers (tenant members) are
namespaces on emulated Pis only.

Capture (traffic.capture): each point by a short-lived capture container on its Pi's engine, in
the target container's namespace or the Pi's (`ClusterFabric.capture_site`); a patch or VXLAN
port, which has no device, on an OVS mirror of it.

`EmulatedCluster` builds the test bed for all this on one machine: N Pis as network namespaces,
each with its own ovsdb-server and ovs-vswitchd (own database, sockets and pidfiles, userspace
datapath), reachable only over TCP (or TLS) on its underlay address, joined by a Linux bridge in
a hub namespace; Pis may list this machine's Docker engine as theirs.
"""

from topology.backends.cluster.ca import issue_certificate, make_ca
from topology.backends.cluster.check import (
    PiReport,
    check_cluster,
    check_pi,
    controller_address,
    feature_problems,
    load_inventory,
    openflow_tls,
)
from topology.backends.cluster.emulated import EmulatedCluster
from topology.backends.cluster.fabric import ClusterFabric

__all__ = ["ClusterFabric", "EmulatedCluster", "PiReport", "check_cluster", "check_pi", "controller_address",
           "feature_problems", "issue_certificate", "load_inventory", "make_ca", "openflow_tls"]
