"""OpenFlow version spellings and the handshake verdict `picloud up` prints per switch."""

from __future__ import annotations

import pytest

from picloud.errors import FabricError
from topology import openflow


def test_versions_parse_from_every_spelling_and_default_to_all_six():
    assert openflow.parse_versions("13,14") == ["13", "14"]
    assert openflow.parse_versions(["1.5", "OpenFlow10"]) == ["10", "15"]
    assert openflow.parse_versions(None) == ["10", "11", "12", "13", "14", "15"]
    assert openflow.ovs_protocols(["13", "14"]) == ["OpenFlow13", "OpenFlow14"]


@pytest.mark.parametrize("bad", ["16", "1.7", "", "13,x"])
def test_bad_version_is_one_line_naming_it(bad):
    with pytest.raises(FabricError, match="--of-versions") as info:
        openflow.parse_versions(bad)
    assert "\n" not in str(info.value)


def test_labels():
    assert openflow.label(0x05) == "1.4" and openflow.label("10") == "1.0"
    assert openflow.labels(openflow.DEFAULT) == "1.0-1.5"
    assert openflow.labels(["13", "14"]) == "1.3 and 1.4"


@pytest.mark.parametrize(("wants", "offers", "agreed"), [
    ([0x05], ["10", "11", "12", "13", "14", "15"], 0x05),  # a 1.4 app on default bridges
    ([0x01], ["10", "11", "12", "13", "14", "15"], 0x01),  # a 1.0 app: the switch negotiates down
    ([0x04], ["13"], 0x04),
    ([0x05], ["13"], None),  # the issue's case
    ([0x01, 0x04], ["10", "13", "15"], 0x04),
    ([0x01, 0x05], ["10", "13"], None),  # os-ken negotiates to 1.3, which the apps do not take
])
def test_negotiation_follows_os_ken_hello_rules(wants, offers, agreed):
    assert openflow.negotiated(wants, offers) == agreed


def test_mismatch_reason_is_the_issue_line():
    assert openflow.mismatch_reason("s1", [0x05], ["13"]) == "s1: the app wants OpenFlow 1.4, the bridge offers 1.3"
    assert openflow.mismatch_reason("s1", [0x04], ["13", "14"]) is None
    reason = openflow.mismatch_reason("s1", [0x01, 0x05], ["10", "13"])
    assert reason is not None and "--of-versions 10" in reason and "\n" not in reason
