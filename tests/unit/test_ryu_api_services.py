"""Apps on `ryu.topology.api` get os-ken's topology app loaded, and that app speaks OpenFlow 1.5
(issue 18: Ryu's rest_topology never answered, because its `switches` app was never loaded)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from os_ken.ofproto import ofproto_v1_5 as ofp
from os_ken.ofproto import ofproto_v1_5_parser as parser
from os_ken.ofproto.ofproto_protocol import ProtocolDesc

from controller_apps import runner, topology_v15

ROOT = Path(__file__).resolve().parents[2]

TOPOLOGY_APP = """
from ryu.base import app_manager
from ryu.topology.api import get_switch


class Lister(app_manager.RyuApp):
    def switches(self):
        return get_switch(self)
"""


def test_the_first_import_of_ryu_topology_api_files_the_requirement_under_the_app(tmp_path):
    """In a fresh process, where the api module's own require_app call is what files it."""
    (tmp_path / "lister.py").write_text(TOPOLOGY_APP)
    script = textwrap.dedent(f"""
        import sys
        from controller_apps import ryu_compat
        ryu_compat.install()
        assert "os_ken.topology.api" not in sys.modules
        sys.path.insert(0, {str(tmp_path)!r})
        import lister
        print(getattr(lister, "_REQUIRED_APP", None), getattr(ryu_compat, "_REQUIRED_APP", None))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['os_ken.topology.switches']", "None"]


def test_an_app_importing_the_api_after_someone_else_still_gets_the_service(tmp_path):
    import os_ken.topology.api  # noqa: F401  (imported before the app: its require_app ran already)

    path = tmp_path / "lister_again.py"
    path.write_text(TOPOLOGY_APP)
    name = runner.resolve_app(str(path))
    assert "os_ken.topology.switches" in sys.modules[name]._REQUIRED_APP


def test_v15_packet_out_takes_the_in_port_spelling_of_12_to_14():
    topology_v15.install()
    dp = ProtocolDesc(ofp.OFP_VERSION)
    action = [parser.OFPActionOutput(2)]
    wanted = parser.OFPPacketOut(dp, ofp.OFP_NO_BUFFER, parser.OFPMatch(in_port=ofp.OFPP_CONTROLLER), action, b"x")
    by_keyword = parser.OFPPacketOut(datapath=dp, in_port=ofp.OFPP_CONTROLLER, buffer_id=ofp.OFP_NO_BUFFER,
                                     actions=action, data=b"x")
    positional = parser.OFPPacketOut(dp, ofp.OFP_NO_BUFFER, ofp.OFPP_CONTROLLER, action, b"x")  # send_packet_out
    for msg in (wanted, by_keyword, positional):
        msg.serialize()
    assert by_keyword.buf == wanted.buf and positional.buf == wanted.buf


def test_the_topology_app_accepts_openflow_15():
    from os_ken.topology import switches

    topology_v15.install()
    assert ofp.OFP_VERSION in switches.Switches.OFP_VERSIONS
