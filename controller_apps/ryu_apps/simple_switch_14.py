"""`ryu.app.simple_switch_14`: the Ryu book's learning switch on OpenFlow 1.4, for apps that
import or subclass `SimpleSwitch14` (see `learning` for the behaviour)."""

from __future__ import annotations

from os_ken.ofproto import ofproto_v1_4

from controller_apps.ryu_apps.learning import LearningSwitch


class SimpleSwitch14(LearningSwitch):
    OFP_VERSIONS = [ofproto_v1_4.OFP_VERSION]
