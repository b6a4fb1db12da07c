"""Expedited RCU grace periods while a run is torn down: the one kernel tunable PiCloud touches.

Tearing a fabric down is mostly waiting. ovs-vswitchd closes one AF_PACKET socket per port it
removes, one after another, and each close waits for an RCU grace period (packet_release() ->
synchronize_net()): measured here, 12-16 ms per port, so a 1,000-container run spent about 17 s
asleep in the kernel (bench/teardown_bench.py, "Teardown floor"). Namespaces and veths wait for
grace periods the same way. `/sys/kernel/rcu_expedited` makes every grace period an expedited one
(IPIs to the other CPUs instead of waiting for each to pass a quiescent state): the same close took
7 us. The cost is a few IPIs per grace period to every CPU, for the seconds the teardown lasts.

So `expedited()` sets it for the length of a teardown and puts the old value back. It leaves the
knob alone when it is already on (an administrator's choice, or another run's teardown in progress)
and when it cannot be written (no such file, a read-only /sys in a container). The value to restore
is written to SAVED first, so a teardown killed in the middle (kill -9) is finished by
`picloud clean`, which calls `restore_leftover()`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

KNOB = Path("/sys/kernel/rcu_expedited")
SAVED_NAME = "rcu_expedited.saved"  # in the runs' state directory (picloud.runstate.state_dir)


@contextlib.contextmanager
def expedited(saved: Path, knob: Path = KNOB) -> Iterator[bool]:
    """Expedited grace periods inside the block; yields whether this call turned them on. `saved`
    holds the value to restore while the block runs."""
    try:
        before = knob.read_text().strip()
    except OSError:
        yield False
        return
    if before != "0":
        yield False
        return
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(before + "\n")
        knob.write_text("1")
    except OSError as exc:
        with contextlib.suppress(OSError):
            saved.unlink(missing_ok=True)
        log.debug("rcu_expedited not set: %s", exc)
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            knob.write_text(before)
            saved.unlink(missing_ok=True)


def restore_leftover(saved: Path, knob: Path = KNOB) -> bool:
    """Put back the value a killed teardown left in `saved`; True when there was one to restore."""
    try:
        value = saved.read_text().strip()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        knob.write_text(value)
        saved.unlink(missing_ok=True)
        return True
    return False
