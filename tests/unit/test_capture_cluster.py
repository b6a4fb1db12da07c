"""Capture on the cluster backend, the pure parts: the capture container's command line and the
counts tcpdump prints when it stops."""

from __future__ import annotations

from topology.effects.docker_engine import LABEL, capture_argv
from traffic.capture import tcpdump_counts


def test_tcpdump_exit_counts_are_read_and_a_missing_one_stays_missing():
    err = ("tcpdump: listening on eth0, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n"
           "1523 packets captured\n1530 packets received by filter\n7 packets dropped by kernel\n")
    assert tcpdump_counts(err) == {"captured": 1523, "received": 1530, "dropped": 7}
    assert tcpdump_counts("1 packet captured\n1 packet received by filter\n0 packets dropped by kernel\n"
                          "2 packets dropped by interface\n") == {"captured": 1, "received": 1, "dropped": 0,
                                                                   "ifdropped": 2}
    assert tcpdump_counts("tcpdump: eth9: No such device exists\n") == {}


def test_capture_container_joins_the_target_namespace_carries_the_run_and_streams_to_stdout():
    argv = capture_argv("pc7-cap12-0", "picloud/base:latest", "pc7", "container:pc7-web1", "eth0",
                        bpf="tcp port 80", snaplen=128, endpoint="tcp://10.0.0.5:2376",
                        tls={"ca": "ca.pem", "cert": "c.pem", "key": "k.pem"})
    assert argv[:4] == ["docker", "-H", "tcp://10.0.0.5:2376", "--tlsverify"]
    run = argv.index("run")
    opts, image_at = argv[run:], argv.index("picloud/base:latest")
    assert {"--rm", "--init"} <= set(opts[:image_at - run])
    assert f"{LABEL}=pc7" in opts and "picloud.role=capture" in opts
    assert opts[opts.index("--log-driver") + 1] == "none"  # the stream never lands on the Pi's disk
    assert opts[opts.index("--network") + 1] == "container:pc7-web1"
    assert "SYS_ADMIN" not in opts and "/run/netns:/run/netns:ro" not in opts
    cmd = argv[image_at + 1:]
    assert cmd[:3] == ["tcpdump", "-i", "eth0"] and cmd[cmd.index("-w") + 1] == "-"
    assert cmd[-1] == "tcp port 80" and cmd[cmd.index("-s") + 1] == "128"
    # an emulated Pi's own namespace is entered from its engine host's, which takes SYS_ADMIN
    host = capture_argv("pc7-cap12-1", "img", "pc7", "host", "pc7a1p3", netns="pcdke1")
    assert host[host.index("--network") + 1] == "host" and "-H" not in host
    assert "SYS_ADMIN" in host and host[host.index("img") + 1:][:2] == ["nsenter", "--net=/run/netns/pcdke1"]
    # an OVS mirror's port starts down: the container sets it up, then becomes tcpdump
    mirror = capture_argv("pc7-cap12-2", "img", "pc7", "host", "pc7m1x", bring_up=True)
    assert mirror[mirror.index("img") + 1:][:4] == ["sh", "-c", 'ip link set dev "$0" up && exec "$@"', "pc7m1x"]
    assert mirror[mirror.index("img") + 5:][:3] == ["tcpdump", "-i", "pc7m1x"]
