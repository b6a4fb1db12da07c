"""One exception type per domain, each carrying a one-line message: WHERE: WHAT (RULE).

The CLI prints these as a single line and exits 2; anything else escaping is our bug and keeps
its traceback, so users can tell their mistakes from ours.
"""


class PiCloudError(Exception):
    """A user-facing error: bad input or an environment that cannot do what was asked."""


class TopologyError(PiCloudError):
    pass


class FabricError(PiCloudError):
    pass


class ControllerError(PiCloudError):
    pass


class TenantError(PiCloudError):
    pass


class TrafficError(PiCloudError):
    pass


class UIError(PiCloudError):
    pass


class ClusterError(PiCloudError):
    pass
