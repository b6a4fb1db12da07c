"""The Containers-and-clusters section of RESULTS.md is rendered from the bench's result dict."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is scripts, not an installed package

from bench.pi_capacity import SECTION, markdown  # noqa: E402


def test_markdown_has_one_table_per_part_and_states_the_load():
    result = {
        "capacity": {"pi_model": "Raspberry Pi 1 Model B+ (2014)", "memory_mb": 512, "cpus": 0.233, "servers": 80,
                     "answered": 79, "oom_killed": 1, "per_container_kb_in_cgroup": 805.2,
                     "per_container_kb_with_shim": 14295.0, "fit_in_cgroup": 651, "fit_with_shim": 36},
        "overhead": {"bare process": {"replies_per_s": 4832.4, "server_cpu_ms_per_reply": 0.042,
                                      "client_cpu_ms_per_reply": 0.07, "ovs_cpu_ms_per_reply": None,
                                      "load_average": 18.5}},
    }
    text = markdown(result)
    assert "| 80 | 79 | 1 | 805 KiB | 14295 KiB | 651 / 36 |" in text
    assert "| bare process | 4832 | 0.042 ms | 0.07 ms | - (loopback) | 18.5 |" in text
    assert "Cluster:" not in text  # parts not run are not reported
    assert SECTION == "## Containers and clusters"
