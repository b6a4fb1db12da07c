"""PiCloud's own versions of the Ryu parts os-ken dropped, served under their Ryu names.

`ryu.app.simple_switch*`, `ryu.app.wsgi` and `ryu.app.conf_switch_key` resolve here (see
`controller_apps.ryu_compat.OURS`). They are written from Ryu's documentation (the Ryu book and
the API reference), not copied: same class names, attributes and method signatures, because those
are what users' subclasses and REST apps call.
"""
