"""Workload tables: sampling reproduces each published CDF, means match, bad CDF files are rejected."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from picloud.errors import TrafficError
from traffic import workloads

# The published CDFs, copied into the repository with their provenance (see its README.md).
REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "workloads"
# Our workload name -> the reference copy it must reproduce.
REFERENCE_FILES = {
    "websearch": "websearch_dctcp.txt", "datamining": "datamining_vl2.txt",
    "fb_hadoop": "homa_w4_fb_hadoop.txt",
    "fb_webserver": "fb_webserver_intracluster.txt", "fb_cachefollower": "fb_cachefollower_intracluster.txt",
    "homa_w1": "homa_w1_fb_keyvalue.txt", "homa_w2": "homa_w2_google_search.txt",
    "homa_w3": "homa_w3_google_allrpc.txt", "homa_w4": "homa_w4_fb_hadoop.txt",
    "homa_w5": "homa_w5_dctcp_websearch.txt", "benson": "imc10_benson.txt",
}
N = 100_000


def _reference(name: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [line.split() for line in (REFERENCE / REFERENCE_FILES[name]).read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    return np.array([float(r[0]) for r in rows]), np.array([float(r[1]) for r in rows])


def test_fixture_files_match_their_recorded_checksums() -> None:
    """The reference data is what its README says it is: byte-exact, every file listed."""
    sums = dict(reversed(line.split()) for line in (REFERENCE / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == set(REFERENCE_FILES.values())
    for name, digest in sums.items():
        assert hashlib.sha256((REFERENCE / name).read_bytes()).hexdigest() == digest, name


def test_every_required_workload_is_catalogued() -> None:
    assert set(REFERENCE_FILES) <= set(workloads.names())


@pytest.mark.parametrize("name", sorted(REFERENCE_FILES))
def test_sampled_sizes_match_the_reference_cdf(name: str) -> None:
    """Kolmogorov-Smirnov distance at the reference's own points, 100,000 samples, under 0.02."""
    sizes, cdf = _reference(name)
    # A repeated size is a jump: the CDF there is the value after it (right-continuous).
    last = np.r_[sizes[1:] != sizes[:-1], True]
    sizes, cdf = sizes[last], cdf[last]
    sample = np.sort(workloads.get(name).sample(np.random.default_rng(7), N))
    empirical = np.searchsorted(sample, sizes, side="right") / N
    assert np.max(np.abs(empirical - cdf)) < 0.02


@pytest.mark.parametrize("name", sorted(REFERENCE_FILES))
def test_sampled_mean_matches_the_table_mean(name: str) -> None:
    """Within 4 standard errors (heavy tails make a fixed percentage meaningless for W2 or VL2)."""
    w = workloads.get(name)
    sample = w.sample(np.random.default_rng(11), N).astype(float)
    stderr = sample.std() / np.sqrt(N)
    assert abs(sample.mean() - w.mean) < 4 * stderr + 1.0  # + 1: whole-byte rounding


@pytest.mark.parametrize("name", sorted(REFERENCE_FILES))
def test_table_mean_matches_the_published_mean(name: str) -> None:
    """pFabric/PIAS tools interpolate (exact up to their rounding of 1138/5117 packets); Homa's step
    sampling puts its published means up to 5% above the interpolated one (W4: 127,797 vs 121,849)."""
    w = workloads.get(name)
    published = w.info.published_mean  # type: ignore[union-attr]
    tolerance = 0.005 if name in ("websearch", "datamining", "benson") else 0.05
    assert abs(w.mean - published) / published < tolerance
    assert w.mean <= published * 1.003  # interpolation never exceeds the step (upper-value) mean


def test_table_means_equal_the_reference_folder_figures() -> None:
    expected = {"websearch": 1_665_831, "datamining": 7_470_236, "benson": 195_357, "homa_w1": 185,
                "fb_webserver": 62_229, "homa_w5": 2_510_778}
    for name, mean in expected.items():
        assert round(workloads.get(name).mean) == pytest.approx(mean, abs=1)


def test_sampling_is_seeded_and_in_whole_bytes() -> None:
    w = workloads.get("websearch")
    a = w.sample(np.random.default_rng(3), 1000)
    b = w.sample(np.random.default_rng(3), 1000)
    assert a.dtype == np.int64 and np.array_equal(a, b)
    assert a.min() >= 8760 and a.max() <= 29_200_000


def test_first_point_is_a_point_mass() -> None:
    """websearch: 15% of flows are exactly 8760 B (6 packets), the table's first jump."""
    sample = workloads.get("websearch").sample(np.random.default_rng(5), N)
    assert np.mean(sample == 8760) == pytest.approx(0.15, abs=0.005)


def test_linear_interpolation_between_points(tmp_path: Path) -> None:
    path = tmp_path / "two.cdf"
    path.write_text("# uniform on [1000, 2000]\n1000 0\n2000 1\n")
    w = workloads.get(str(path))
    assert w.quantile(0.25) == pytest.approx(1250)
    assert w.mean == pytest.approx(1500)
    sample = w.sample(np.random.default_rng(1), N)
    assert np.mean(sample <= 1500) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(("text", "message"), [
    ("100 0\n200 50\n300 100\n", "t.cdf:2: CDF 50 outside [0, 1] (the CDF is a fraction; percent? "
                                 "divide by 100)"),
    ("100 0\n50 1\n", "t.cdf:2: size 50 below the previous 100 (sizes non-decreasing)"),
    ("100 0.5\n200 0.4\n300 1\n", "t.cdf:2: CDF 0.4 below the previous 0.5 (the CDF is non-decreasing)"),
    ("# header\n100 0\n\n200 0.9\n", "t.cdf:4: last CDF value 0.9 (the CDF must end at 1)"),
    ("100 0\nabc 1\n", "t.cdf:2: 'abc 1' is not two numbers (SIZE_BYTES CDF_FRACTION per line)"),
    ("100 0 7\n200 1\n", "t.cdf:1: expected 2 columns, got 3 (SIZE_BYTES CDF_FRACTION per line)"),
    ("0 0\n200 1\n", "t.cdf:1: size 0 (sizes are positive bytes)"),
    ("200 1\n", "t.cdf: 1 points (a CDF table needs at least 2)"),
])
def test_malformed_cdf_files_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.cdf"
    path.write_text(text)
    with pytest.raises(TrafficError) as err:
        workloads.get(str(path))
    assert str(err.value) == f"{tmp_path}/{message}"
    assert "\n" not in str(err.value)


def test_unknown_workload_lists_the_known_ones() -> None:
    with pytest.raises(TrafficError, match=r"workload 'websurch': unknown \(one of websearch, datamining"):
        workloads.get("websurch")


def test_describe_lists_citations_and_means() -> None:
    rows = {r["name"]: r for r in workloads.describe()}
    assert "SIGCOMM 2010" in str(rows["websearch"]["citation"])
    assert "VL2" in str(rows["datamining"]["citation"]) and "IMC 2010" in str(rows["benson"]["citation"])
    assert rows["homa_w1"]["published_mean_bytes"] == 188
