"""Flow arrival processes: when each sender starts its next flow.

Load is defined as in pFabric/PIAS/Homa: the fraction rho of the sender's access link that the
offered flows would occupy on the wire. A flow of S payload bytes puts about S * OVERHEAD bytes on
the wire, where OVERHEAD = 1500/1460 is the pFabric/PIAS convention (a 1460 B payload per 1500 B IP
packet; it leaves out the Ethernet header, preamble and gap, about 2.5% more). Poisson arrivals at
load rho on a link of C bit/s therefore have rate

    lambda = rho * C / (8 * E[S] * OVERHEAD)        flows per second per sender.

All functions are pure: they take a numpy Generator and return arrays of start times in seconds.
"""

from __future__ import annotations

import numpy as np

from picloud.errors import TrafficError

OVERHEAD = 1500 / 1460


def check_load(load: float, where: str = "load") -> float:
    if not (isinstance(load, int | float) and 0.0 < float(load) <= 1.0):
        raise TrafficError(f"{where}: {load!r} outside (0, 1] (load is a fraction of the sender's link)")
    return float(load)


def poisson_rate(load: float, link_bps: float, mean_size: float, overhead: float = OVERHEAD) -> float:
    """Flows per second that offer `load` of a `link_bps` link with flows of mean `mean_size` bytes."""
    check_load(load)
    if link_bps <= 0 or mean_size <= 0:
        raise TrafficError(f"arrivals: link {link_bps} bit/s, mean size {mean_size} B (both must be "
                           "positive)")
    return load * link_bps / (8.0 * mean_size * overhead)


def poisson(rng: np.random.Generator, rate: float, duration: float, start: float = 0.0) -> np.ndarray:
    """Arrival times of a Poisson process of `rate` per second in [start, start + duration)."""
    if rate <= 0 or duration <= 0:
        return np.empty(0)
    # Draw a little more than the expected count, then extend if the tail fell short.
    expected = rate * duration
    n = int(expected + 6 * np.sqrt(expected) + 16)
    gaps = rng.exponential(1.0 / rate, n)
    times = start + np.cumsum(gaps)
    while times[-1] < start + duration:
        more = times[-1] + np.cumsum(rng.exponential(1.0 / rate, n))
        times = np.concatenate([times, more])
    return times[times < start + duration]


def on_off(
    rng: np.random.Generator, rate: float, duration: float, on_mean: float = 1.0, off_mean: float = 1.0,
    sigma: float = 1.0,
) -> np.ndarray:
    """Poisson arrivals during ON periods only; ON and OFF lengths are lognormal (Benson et al., IMC 2010
    found lognormal ON/OFF periods at the edge). The rate inside ON periods is raised by
    (on_mean + off_mean) / on_mean so the long-run rate, hence the load, stays `rate`."""
    if on_mean <= 0 or off_mean <= 0 or sigma <= 0:
        raise TrafficError(f"on/off: on_mean {on_mean}, off_mean {off_mean}, sigma {sigma} (all must be "
                           "positive)")
    burst_rate = rate * (on_mean + off_mean) / on_mean
    # Lognormal with the requested mean: mu = ln(mean) - sigma^2 / 2.
    mu_on, mu_off = np.log(on_mean) - sigma**2 / 2, np.log(off_mean) - sigma**2 / 2
    out: list[np.ndarray] = []
    t = -rng.uniform(0, on_mean + off_mean)  # random phase, so senders do not burst in lockstep
    while t < duration:
        on = float(rng.lognormal(mu_on, sigma))
        lo, hi = max(t, 0.0), min(t + on, duration)
        if hi > lo:
            out.append(poisson(rng, burst_rate, hi - lo, start=lo))
        t += on + float(rng.lognormal(mu_off, sigma))
    return np.concatenate(out) if out else np.empty(0)
