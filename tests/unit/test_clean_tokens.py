"""`picloud clean` removes the token files of standalone controllers that are gone, never a live one's."""

from __future__ import annotations

import socket

from picloud import clean

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2012 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:1F90 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 2 1
"""


def test_only_listening_sockets_count():
    assert clean.listening_ports([TCP]) == {0x2012}  # 0x1F90 is an established connection, not a listener


def test_a_dead_controllers_token_is_stale_and_a_live_ones_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("PICLOUD_STATE_DIR", str(tmp_path))
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        port = live.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            dead = probe.getsockname()[1]  # bound, never listening: nothing serves it
        (tmp_path / f"controller-{port}.api-token").write_text("x")
        (tmp_path / f"controller-{dead}.api-token").write_text("x")
        (tmp_path / "pc1.api-token").write_text("x")  # a run's token belongs to the run, not to this sweep
        assert clean.stale_controller_tokens() == [tmp_path / f"controller-{dead}.api-token"]
