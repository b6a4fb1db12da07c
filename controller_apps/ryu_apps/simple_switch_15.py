"""`ryu.app.simple_switch_15`: the Ryu book's learning switch on OpenFlow 1.5, for apps that
import or subclass `SimpleSwitch15` (see `learning` for the behaviour)."""

from __future__ import annotations

from os_ken.ofproto import ofproto_v1_5

from controller_apps.ryu_apps.learning import LearningSwitch


class SimpleSwitch15(LearningSwitch):
    OFP_VERSIONS = [ofproto_v1_5.OFP_VERSION]
