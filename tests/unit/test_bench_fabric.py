"""The fabric benchmark's pure parts: the graph Mininet builds, the figures, the section it writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is scripts, not an installed package

from bench import fabric_bench as fb  # noqa: E402
from topology.builders import build  # noqa: E402


@pytest.mark.parametrize(("spec", "switches", "hosts", "links"), [
    ("tree:2,4", 5, 16, 20),     # mn --topo tree,2,4: 5 switches, 16 hosts
    ("fattree:4", 20, 16, 48),   # Al-Fares k=4: 20 switches, 16 hosts, 48 links
    ("linear:200", 200, 200, 399),  # mn --topo linear,200
])
def test_classic_graph_is_mininets_own_shape(spec, switches, hosts, links):
    graph = fb.mininet_graph(build(spec).to_dict())
    assert (len(graph["switches"]), len(graph["hosts"]), len(graph["links"])) == (switches, hosts, links)


def test_classic_graph_hangs_each_container_off_its_pis_switch():
    topo = build("single:2")
    graph = fb.mininet_graph(topo.to_dict())
    assert graph["switches"] == ["mnbs1"]
    assert sorted(graph["links"]) == [["mnbh1", "mnbs1"], ["mnbh2", "mnbs1"]]


def test_same_graph_keeps_pis_as_switches():
    topo = build("single:1", containers_per_pi=2)  # s1 - pi1 - two containers
    graph = fb.mininet_graph(topo.to_dict(), same=True)
    assert graph["switches"] == ["mnbs1", "mnbs2"]
    assert graph["links"] == [["mnbs1", "mnbs2"], ["mnbh1", "mnbs2"], ["mnbh2", "mnbs2"]]


def test_every_mininet_name_has_the_prefix_and_root_side_ports_fit_ifnamsiz():
    graph = fb.mininet_graph(build("linear:200").to_dict(), prefix="mnb")
    names = graph["switches"] + graph["hosts"]
    assert all(n.startswith("mnb") for n in names)
    assert len(set(names)) == len(names)
    # Mininet names a switch's port SWITCH-ethN; N is at most the switch's degree.
    degree: dict[str, int] = {}
    for a, b in graph["links"]:
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
    assert max(len(f"{s}-eth{degree[s]}") for s in graph["switches"]) <= 15


def test_controller_spec_is_passed_through_and_names_its_ports():
    spec = fb.controller_spec(6999, 8999)
    graph = fb.mininet_graph(build("tree:2,2").to_dict(), controller=spec)
    assert graph["controller"]["port"] == 6999
    assert "127.0.0.1:6999" in spec["argv"] and "127.0.0.1:8999" in spec["argv"]


def test_ratio_and_seconds_formatting():
    assert fb.ratio(1.0, 4.0) == "0.25x"
    assert fb.ratio(None, 4.0) == "-"
    assert fb.ratio(3.0, 0.0) == "-"
    assert fb.seconds(None) == "-"
    assert fb.seconds(1.234) == "1.23 s"
    assert fb.median([3.0, 1.0, 2.0]) == 2.0
    assert fb.median([]) is None


def test_memory_figures_are_read_from_proc_text():
    meminfo = "MemTotal:       24683108 kB\nMemFree:        19000000 kB\nMemAvailable:   20484812 kB\n"
    assert fb.meminfo_available_kib(meminfo) == 20484812
    assert fb.status_rss_kib("Name:\tovs-vswitchd\nVmRSS:\t 2712996 kB\n") == 2712996
    with pytest.raises(ValueError):
        fb.meminfo_available_kib("MemTotal: 1 kB\n")


def test_replace_section_keeps_other_sections_byte_for_byte():
    doc = ("# Benchmark results\n\nhead\n\n## Controller (cbench)\n\ntheirs\n\n## Fabric\n\nold\n\n"
           "## Web UI\n\nui\n")
    out = fb.replace_section(doc, "## Fabric", "new table")
    assert "old" not in out and "## Fabric\n\nnew table\n\n<!-- written by make bench" in out
    assert out.endswith("## Web UI\n\nui\n")
    assert out.startswith("# Benchmark results\n\nhead\n\n## Controller (cbench)\n\ntheirs\n\n")
    appended = fb.replace_section("# Benchmark results\n", "## Fabric", "first")
    assert appended.startswith("# Benchmark results\n\n## Fabric\n\nfirst\n\n<!-- written by make bench")


def test_markdown_reports_ratios_against_mininet():
    result = {
        "date": "2026-01-01 00:00 UTC", "command": "python -m bench.fabric_bench",
        "load_before": "1.00 / 1.00 / 1.00",
        "load_after": "1.00 / 1.00 / 1.00", "datapath": "netdev", "runs": 3, "iperf_seconds": 5.0,
        "build": [{"spec": "fattree:4", "controller": "default", "errors": ["PiCloud run 2: boom"],
                   "picloud_objects": "36 bridges, 16 containers",
                   "mininet_objects": "20 switches, 16 hosts",
                   "picloud": {"whole": 1.0, "build": 0.5, "down": 0.3},
                   "mininet": {"whole": 4.0, "build": 2.0, "down": 1.5}}],
        "scale": {"spec": "picloud:5,10", "containers_per_pi": 20, "bridges": 57, "containers": 1000,
                  "build_s": 20.0, "down_s": 15.0, "mem_per_container_kib": 300.0,
                  "vswitchd_per_container_kib": 50.0, "vswitchd_rss_before_mib": 2600.0},
        "iperf": [{"path": "1 bridge", "picloud_mbps": 12000.0, "mininet_tcu_mbps": 600.0,
                   "mininet_default_mbps": 6000.0}],
    }
    text = fb.markdown(result)
    assert "| fattree:4 (3 runs) |" in text and "**0.25x**" in text
    assert "| 1000 |" in text and "300 KiB" in text
    assert "**20.00x**" in text and "| 2.00x |" in text
    assert "| fattree:4 (3 runs) | PiCloud's runner |" in text
    assert "- fattree:4: PiCloud run 2: boom" in text  # a failed run is reported, not hidden
    assert "classic graph" in text
    assert "exact graph" in fb.markdown({**result, "mininet_graph": "same"})


def test_markdown_survives_a_scale_run_that_failed_every_time():
    result = {"date": "d", "command": "c", "load_before": "l", "load_after": "l", "datapath": "netdev",
              "runs": 1, "iperf_seconds": 3.0, "build": [],
              "scale": {"spec": "picloud:5,10", "containers_per_pi": 20, "errors": ["run 1: timeout"]},
              "iperf": [{"path": "1 bridge", "picloud_mbps": None, "mininet_tcu_mbps": 600.0,
                         "mininet_default_mbps": None, "errors": ["PiCloud: broke"]}]}
    text = fb.markdown(result)
    assert "- scale picloud:5,10: run 1: timeout" in text
    assert "| 1 bridge | - | 600 Mbit/s | **-** |" in text


def test_markdown_reports_the_5000_container_run_ready_not_ready_or_skipped():
    base = {"date": "d", "command": "c", "load_before": "l", "load_after": "l", "datapath": "netdev",
            "runs": 1, "iperf_seconds": 3.0, "build": [], "iperf": [],
            "scale": {"spec": "picloud:5,10", "containers_per_pi": 20, "errors": []}}
    run = {"spec": "picloud:25,10", "containers_per_pi": 20, "containers": 5000, "bridges": 277, "errors": [],
           "ready": False, "build_s": None, "waited_s": 400.0, "error": "controller: not routed within 240s",
           "timings": {"fabric": 150.0}, "down_s": 350.0, "mem_available_drop_kib": 5000 * 3000,
           "vswitchd_rss_growth_kib": 5000 * 2500, "ovs_main_cores": 0.97, "controller_cores": 0.99}
    text = fb.markdown({**base, "huge": run})
    assert "5,000 containers (277 bridges, target: up in under 90 s" in text
    assert "| 150.00 s | - | **not ready** when the bench stopped waiting, 400.00 s after the start" in text
    assert "| 350.00 s | 3,000 KiB | 2,500 KiB | 0.97 cores | 0.99 cores |" in text
    assert "polls the AF_PACKET socket of every port" in text  # the measured reason, when it was the reason
    ready = {**run, "ready": True, "build_s": 80.0, "error": None, "timings": {"fabric": 60.0, "ready": 20.0},
             "ovs_main_cores": 0.3}
    text = fb.markdown({**base, "huge": ready})
    assert "| 60.00 s | 20.00 s | ready in 80.00 s |" in text and "polls the AF_PACKET" not in text
    skipped = {"spec": "picloud:25,10", "containers_per_pi": 20, "containers": 5000, "errors": [],
               "skipped": "needs about 17.6 GiB of memory (3.6 MiB per container, measured), 7.0 GiB available"}
    assert "5,000 containers: not run, needs about 17.6 GiB" in fb.markdown({**base, "huge": skipped})


def test_loops_are_told_from_counts():
    assert fb.has_loops(build("fattree:4").to_dict())
    assert not fb.has_loops(build("tree:2,4").to_dict())
    assert not fb.has_loops(build("linear:200").to_dict())
