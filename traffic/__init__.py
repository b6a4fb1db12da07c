"""Data-centre traffic for PiCloud: published flow-size workloads, arrivals and patterns (pure), a
seeded trace, agents that replay it inside containers, per-flow results, reports and plots; plus
iperf3 bulk flows and the Raspberry Pi Cloud's httperf-style web experiment. See traffic/README.md."""
