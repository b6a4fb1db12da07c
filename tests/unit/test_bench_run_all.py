"""`make bench`'s runner: what it passes each script, what it takes from their output, how it writes
RESULTS.md."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/ is scripts, not an installed package

from bench import run_all  # noqa: E402

CBENCH_HELP = """usage: cbench.py [-h] [--quick] [--switches SWITCHES] [--record]
options:
  --quick               3 windows of 1 s per mode (a smoke run)
  --record              write the results into bench/RESULTS.md
"""
TRAFFIC_HELP = """usage: traffic_bench.py [-h] [--rounds ROUNDS] [--seconds SECONDS] [--rates RATES]
                        [--rate-seconds RATE_SECONDS]
"""


def bench(name: str) -> run_all.Bench:
    return next(b for b in run_all.BENCHES if b.name == name)


def test_options_are_read_from_help_text():
    assert run_all.options_in_help(CBENCH_HELP) == {"--quick", "--switches", "--record"}
    assert "--rate-seconds" in run_all.options_in_help(TRAFFIC_HELP)


def test_a_script_with_quick_and_record_gets_both():
    opts = run_all.options_in_help(CBENCH_HELP)
    assert run_all.script_args(bench("cbench"), opts, quick=True) == ["--quick", "--record"]
    assert run_all.script_args(bench("cbench"), opts, quick=False) == ["--record"]


def test_a_script_without_quick_gets_the_smaller_settings_it_understands():
    opts = run_all.options_in_help(TRAFFIC_HELP)
    args = run_all.script_args(bench("traffic"), opts, quick=True)
    assert args == ["--rounds", "1", "--seconds", "2", "--rates", "500,2000", "--rate-seconds", "2"]
    assert run_all.script_args(bench("traffic"), opts, quick=False) == []
    # an option the script dropped is not passed (it would fail on it)
    assert run_all.script_args(bench("traffic"), opts - {"--rates"}, quick=True) == [
        "--rounds", "1", "--seconds", "2", "--rate-seconds", "2"]


def test_markdown_tables_are_taken_from_stdout_and_json_is_not():
    stdout = '{\n "bulk": 1\n}\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\nprogress\n'
    assert run_all.markdown_from_output(stdout) == "| a | b |\n| --- | --- |\n| 1 | 2 |"
    assert run_all.markdown_from_output('{"x": 1}\n') == ""
    two = "| a |\n| --- |\n| 1 |\n\nVerdicts:\n| b |\n| --- |\n| 2 |\n"
    assert run_all.markdown_from_output(two) == "| a |\n| --- |\n| 1 |\n\n| b |\n| --- |\n| 2 |"


def test_header_is_replaced_and_sections_stay():
    doc = "# Benchmark results\n\nold header\n\n## Fabric\n\nours\n\n## Controller (cbench)\n\ntheirs\n"
    out = run_all.replace_header(doc, "# Benchmark results\n\nnew header\n")
    assert out == ("# Benchmark results\n\nnew header\n\n## Fabric\n\nours\n\n"
                   "## Controller (cbench)\n\ntheirs\n")
    assert run_all.replace_header("", "# H\n") == "# H\n\n"


def test_section_replaced_in_place_or_appended():
    doc = "# B\n\n## Fabric\n\nold\n\n## Web UI\n\nui\n"
    replaced = run_all.replace_section(doc, "## Web UI", "new")
    assert replaced == f"# B\n\n## Fabric\n\nold\n\n## Web UI\n\nnew\n\n{run_all.stamp('## Web UI', 'new')}\n\n"
    appended = run_all.replace_section(doc, "## Tenants", "t")
    assert appended.endswith(f"## Web UI\n\nui\n\n## Tenants\n\nt\n\n{run_all.stamp('## Tenants', 't')}\n\n")


def test_machine_description_parsing():
    assert run_all.cpu_model("processor: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert run_all.cpu_model("processor: 0\n") == "unknown CPU"
    assert round(run_all.mem_total_gib("MemTotal:       25165824 kB\n"), 1) == 24.0


def test_header_lists_every_benchmark_with_its_status():
    statuses = [(bench("fabric"), "ok, 300 s"), (bench("tenants"), "skipped: not present")]
    text = run_all.header("D", "M", "1 / 1 / 1", "2 / 2 / 2", False, statuses)
    assert text.startswith("# Benchmark results\n")
    assert "| fabric | `bench/fabric_bench.py` | Mininet 2.3.0 (Debian) | ok, 300 s |" in text
    assert "| tenants |" in text and "skipped: not present" in text
    assert "1 / 1 / 1 before, 2 / 2 / 2 after" in text


def test_every_registered_benchmark_has_a_unique_section():
    sections = [b.section for b in run_all.BENCHES]
    assert len(set(sections)) == len(sections)
    assert all(s.startswith("## ") for s in sections)


def test_regeneration_keeps_nothing_of_the_old_section_and_stamps_the_new():
    doc = ("# B\n\n## Web UI\n\nold intro, load 7.9\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n"
           "A note typed by hand: 42 ms.\n\n## Fabric\n\nx\n")
    out = run_all.replace_section(doc, "## Web UI", "| a | b |\n| --- | --- |\n| 3 | 4 |")
    web = run_all.sections(out)["## Web UI"]
    assert "typed by hand" not in web and "old intro" not in web and "| 3 | 4 |" in web
    assert run_all.edited_sections(out) == ["## Fabric"]  # Fabric was never written by make bench


def test_a_figure_typed_into_a_written_section_is_detected():
    doc = run_all.replace_section("# B\n", "## Tenants", "| meter | 19.8 Mbit/s |")
    assert run_all.edited_sections(doc) == []
    assert run_all.edited_sections(doc.replace("19.8", "20.0")) == ["## Tenants"]
    assert run_all.edited_sections(doc.replace("|\n\n<!--", "|\n\nReading: 3x faster.\n\n<!--")) == ["## Tenants"]


def test_results_md_has_no_hand_edited_section():
    """Every stamped section of bench/RESULTS.md is exactly what a make bench run wrote. Sections
    from before stamping (none stamped) are listed by name until their next run rewrites them."""
    document = run_all.RESULTS.read_text()
    stamped = [h for h, text in run_all.sections(document).items() if run_all.STAMP.search(text)]
    assert not set(run_all.edited_sections(document)) & set(stamped), "hand-edited: rerun make bench --only NAME"



def test_run_script_keeps_stdout_and_stops_a_script_that_overruns(tmp_path):
    rc, out, _ = run_all.run_script([sys.executable, "-c", "print('| a | b |')"], 30, tmp_path / "ok.out")
    assert rc == 0 and out == "| a | b |\n"
    slow = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    rc, out, took = run_all.run_script(slow, 1.5, tmp_path / "slow.out")
    assert rc is None and out == "started\n" and took < 20
