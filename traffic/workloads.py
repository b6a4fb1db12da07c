"""Flow-size distributions from the data-centre literature, in bytes, and how we sample them.

Every table ships in `traffic/data/NAME.cdf` (copied, with its provenance header, from the reference
set the project checks against; nothing is read from outside the package at run time).

CDF file format (also for a user's own file, `--workload path/to/file.cdf`):

    # comment lines start with '#', blank lines are ignored
    SIZE_BYTES  CDF_FRACTION        one point per line, whitespace or comma separated

Rules: sizes are positive bytes and non-decreasing; the CDF is a fraction in [0, 1] (not percent),
non-decreasing, and the last point is exactly 1. Packet-count tables must be converted first
(the literature multiplies by 1460 B; see the headers of the shipped files).

Sampling is inverse-CDF with linear interpolation between points, as ns-2's
`EmpiricalRandomVariable` (used by the pFabric and PIAS generators), HKUST's TrafficGenerator and
HPCC's `traffic_gen.py` do: draw u ~ U(0, 1), find the first point i with F_i >= u and return
x_{i-1} + (x_i - x_{i-1}) (u - F_{i-1}) / (F_i - F_{i-1}); u below the first point's CDF returns
the first size (a point mass). Sizes are rounded up to whole bytes, which keeps P(S <= x) = F(x) at
every integer table point. Homa's simulator uses step sampling instead (each increment takes the
upper size), so its published means are a little higher than ours; both are listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from picloud.errors import TrafficError

DATA_DIR = Path(__file__).with_name("data")


@dataclass(frozen=True)
class WorkloadInfo:
    """A named published workload: which table, which paper, which mean the paper's tools use."""

    name: str
    table: str  # file name in traffic/data
    title: str
    citation: str
    published_mean: float  # bytes, as the originating tool computes it
    published_mean_note: str


CATALOGUE: dict[str, WorkloadInfo] = {
    w.name: w
    for w in [
        WorkloadInfo(
            "websearch", "websearch.cdf", "Web search (DCTCP)",
            "Alizadeh et al., Data Center TCP (DCTCP), SIGCOMM 2010; table as used by pFabric (SIGCOMM 2013) "
            "and PIAS (NSDI 2015)",
            1138 * 1460, "pFabric/PIAS meanFlowSize = 1138 x 1460 B (interpolated)"),
        WorkloadInfo(
            "datamining", "datamining.cdf", "Data mining (VL2)",
            "Greenberg et al., VL2: A Scalable and Flexible Data Center Network, SIGCOMM 2009; table as used "
            "by pFabric and PIAS",
            5117 * 1460, "pFabric/PIAS meanFlowSize = 5117 x 1460 B (interpolated)"),
        WorkloadInfo(
            "fb_hadoop", "fb_hadoop.cdf", "Facebook Hadoop",
            "Roy et al., Inside the Social Network's (Datacenter) Network, SIGCOMM 2015; digitised by "
            "the Homa authors (same table as homa_w4)",
            127797, "HomaSimulation Facebook_HadoopDist_All.txt (step)"),
        WorkloadInfo(
            "fb_webserver", "fb_webserver.cdf", "Facebook web server, intra-cluster",
            "Roy et al., Inside the Social Network's (Datacenter) Network, SIGCOMM 2015; digitised by "
            "the Homa authors",
            62874, "HomaSimulation Facebook_WebServerDist_IntraCluster.txt (step)"),
        WorkloadInfo(
            "fb_cachefollower", "fb_cachefollower.cdf", "Facebook cache follower, intra-cluster",
            "Roy et al., Inside the Social Network's (Datacenter) Network, SIGCOMM 2015; digitised by "
            "the Homa authors",
            692976, "HomaSimulation Facebook_CacheFollowerDist_IntraCluster.txt (step)"),
        WorkloadInfo(
            "homa_w1", "homa_w1.cdf", "Homa W1: Facebook memcached",
            "Montazeri et al., Homa, SIGCOMM 2018 (W1); data from Atikoglu et al., SIGMETRICS 2012",
            188, "HomaSimulation FacebookKeyValue_Sampled.txt (step; header 187.77)"),
        WorkloadInfo(
            "homa_w2", "homa_w2.cdf", "Homa W2: Google search RPC",
            "Montazeri et al., Homa, SIGCOMM 2018 (W2)", 441, "HomaSimulation Google_SearchRPC.txt (step)"),
        WorkloadInfo(
            "homa_w3", "homa_w3.cdf", "Homa W3: all Google RPC",
            "Montazeri et al., Homa, SIGCOMM 2018 (W3)", 2927, "HomaSimulation Google_AllRPC.txt (step)"),
        WorkloadInfo(
            "homa_w4", "fb_hadoop.cdf", "Homa W4: Facebook Hadoop",
            "Montazeri et al., Homa, SIGCOMM 2018 (W4); data from Roy et al., SIGCOMM 2015",
            127797, "HomaSimulation Facebook_HadoopDist_All.txt (step)"),
        WorkloadInfo(
            "homa_w5", "homa_w5.cdf", "Homa W5: DCTCP web search, 400-point smoothed",
            "Montazeri et al., Homa, SIGCOMM 2018 (W5); data from Alizadeh et al., SIGCOMM 2010",
            1744.70 * 1460, "HomaSimulation DCTCP_MsgSizeDist.txt header 1744.70 pkts x 1460 B (step)"),
        WorkloadInfo(
            "benson", "benson.cdf", "Benson et al. (IMC10)",
            "Benson, Akella, Maltz, Network Traffic Characteristics of Data Centers in the Wild, IMC 2010; "
            "table as used by pHost (CoNEXT 2015)",
            195357, "mean of the table with linear interpolation (pHost/YAPS files carry none)"),
    ]
}


@dataclass(frozen=True)
class Workload:
    """A flow-size distribution: points (size in bytes, cumulative fraction) and where it came from."""

    name: str
    sizes: tuple[float, ...]
    cdf: tuple[float, ...]
    source: str = ""
    info: WorkloadInfo | None = None

    @property
    def mean(self) -> float:
        """Exact mean of the interpolated distribution (what `sample` converges to, minus rounding)."""
        x, f = np.asarray(self.sizes), np.asarray(self.cdf)
        return float(f[0] * x[0] + np.sum(np.diff(f) * (x[1:] + x[:-1]) / 2.0))

    @property
    def max_size(self) -> int:
        return int(np.ceil(self.sizes[-1]))

    def quantile(self, q: float) -> float:
        """Size at cumulative fraction q, with the same interpolation as `sample`."""
        return float(_inverse(np.asarray(self.sizes), np.asarray(self.cdf), np.array([q]))[0])

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n sizes in whole bytes (int64), drawn by inverse CDF with linear interpolation."""
        u = rng.random(n)
        values = _inverse(np.asarray(self.sizes), np.asarray(self.cdf), u)
        return np.maximum(1, np.ceil(values)).astype(np.int64)


def _inverse(x: np.ndarray, f: np.ndarray, u: np.ndarray) -> np.ndarray:
    # side="left": the first point with F_i >= u, so F_{i-1} < u strictly and the division is safe.
    i = np.searchsorted(f, u, side="left")
    i = np.clip(i, 0, len(f) - 1)
    prev = np.maximum(i - 1, 0)
    span = f[i] - f[prev]
    frac = np.where(span > 0, (u - f[prev]) / np.where(span > 0, span, 1.0), 1.0)
    return np.where(i == 0, x[0], x[prev] + (x[i] - x[prev]) * frac)


def parse_cdf(text: str, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Parse and validate a CDF table; errors name the file and line (`where:LINE`)."""
    sizes: list[float] = []
    cdf: list[float] = []
    last_line = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        last_line = number
        fields = line.replace(",", " ").split()
        at = f"{where}:{number}"
        if len(fields) != 2:
            raise TrafficError(f"{at}: expected 2 columns, got {len(fields)} (SIZE_BYTES CDF_FRACTION "
                               "per line)")
        try:
            size, frac = float(fields[0]), float(fields[1])
        except ValueError:
            raise TrafficError(f"{at}: {line!r} is not two numbers (SIZE_BYTES CDF_FRACTION per "
                               "line)") from None
        if not (np.isfinite(size) and size > 0):
            raise TrafficError(f"{at}: size {fields[0]} (sizes are positive bytes)")
        if not 0.0 <= frac <= 1.0:
            hint = "; percent? divide by 100" if frac <= 100 else ""
            raise TrafficError(f"{at}: CDF {fields[1]} outside [0, 1] (the CDF is a fraction{hint})")
        if sizes and size < sizes[-1]:
            raise TrafficError(f"{at}: size {fields[0]} below the previous {sizes[-1]:g} (sizes "
                               "non-decreasing)")
        if cdf and frac < cdf[-1]:
            raise TrafficError(f"{at}: CDF {fields[1]} below the previous {cdf[-1]:g} (the CDF is "
                               "non-decreasing)")
        sizes.append(size)
        cdf.append(frac)
    if len(sizes) < 2:
        raise TrafficError(f"{where}: {len(sizes)} points (a CDF table needs at least 2)")
    if abs(cdf[-1] - 1.0) > 1e-9:
        raise TrafficError(f"{where}:{last_line}: last CDF value {cdf[-1]:g} (the CDF must end at 1)")
    cdf[-1] = 1.0
    return tuple(sizes), tuple(cdf)


def load_file(path: str | Path, name: str | None = None) -> Workload:
    """A user's CDF file, validated (see the module docstring for the format)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TrafficError(f"{path}: cannot read ({exc.strerror or exc})") from None
    sizes, cdf = parse_cdf(text, str(path))
    return Workload(name or path.stem, sizes, cdf, source=str(path))


@cache
def _builtin(name: str) -> Workload:
    info = CATALOGUE[name]
    path = DATA_DIR / info.table
    sizes, cdf = parse_cdf(path.read_text(), str(path))
    return Workload(name, sizes, cdf, source=str(path), info=info)


def get(name_or_path: str | Path) -> Workload:
    """A built-in workload by name, or a user's CDF file by path (anything with a '/' or '.cdf')."""
    text = str(name_or_path)
    if text in CATALOGUE:
        return _builtin(text)
    if "/" in text or text.endswith((".cdf", ".txt", ".csv")) or Path(text).is_file():
        return load_file(text)
    raise TrafficError(
        f"workload {text!r}: unknown (one of {', '.join(CATALOGUE)}, or a path to a CDF file)"
    )


def names() -> list[str]:
    return list(CATALOGUE)


def describe() -> list[dict[str, object]]:
    """One row per built-in workload for `picloud traffic workloads`."""
    rows = []
    for name, info in CATALOGUE.items():
        w = _builtin(name)
        rows.append({
            "name": name, "title": info.title, "mean_bytes": round(w.mean),
            "published_mean_bytes": round(info.published_mean), "median_bytes": round(w.quantile(0.5)),
            "p99_bytes": round(w.quantile(0.99)), "max_bytes": w.max_size, "points": len(w.sizes),
            "citation": info.citation, "published_mean_note": info.published_mean_note,
        })
    return rows
