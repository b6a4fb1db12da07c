"""`ryu.app.simple_switch_13`: the Ryu book's learning switch on OpenFlow 1.3, for apps that
import or subclass `SimpleSwitch13` (see `learning` for the behaviour)."""

from __future__ import annotations

from os_ken.ofproto import ofproto_v1_3

from controller_apps.ryu_apps.learning import LearningSwitch


class SimpleSwitch13(LearningSwitch):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
