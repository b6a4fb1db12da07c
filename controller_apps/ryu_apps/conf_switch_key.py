"""`ryu.app.conf_switch_key`: the key names of os-ken's `conf_switch` store that Ryu's REST apps
(rest_qos, rest_conf_switch) use; Ryu kept them in this tiny module, os-ken dropped it."""

OVSDB_ADDR = "ovsdb_addr"  # where a switch's OVSDB listens, for apps that configure queues over it
OVS_TUNNEL_ADDR = "ovs_tunnel_addr"
