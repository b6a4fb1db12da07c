"""Benchmarks: each script measures one part of PiCloud against its peer in the same run;
run_all runs them all and rewrites RESULTS.md."""
