"""How long the shared ovs-vswitchd may stall: the one bound every wait on OVS is argued from.

Userspace datapath (no openvswitch kernel module): ovs-vswitchd's main thread answers OpenFlow
(stats, barriers, flow-mods) and also forwards the packets of every non-PMD port, so when its main
loop stalls, the control channel and the data plane both stop, and resume (queued packets and
requests included) when it returns.

Measured on the shared two-core host (ovs-vswitchd.log "Unreasonably long N ms poll interval",
2026-12-06 21:14-22:46, other engineers' 1,000-container runs and teardowns among the load): 1,000
stalls of 1 s or more in 92 minutes, 326 of 3 s or more, 135 of 5 s or more, 29 of 10 s or more,
the longest 24.1 s. The bridges' controller inactivity probe is set to this bound (a stall longer
than that drops the controller, which is a broken run), so a check that waits for OVS waits up to
this long before calling the fabric broken: a shorter timeout fails on a healthy, loaded host.
"""

from __future__ import annotations

OVS_STALL_S = 30.0
