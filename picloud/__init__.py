"""PiCloud: an SDN testbed modelled on the Raspberry Pi Cloud.

`Testbed` is the Python API; the `picloud` command is a thin layer over it.
"""

from picloud.errors import PiCloudError

__version__ = "0.1.0"

__all__ = ["PiCloudError", "Testbed", "__version__"]


def __getattr__(name: str):
    # Imported lazily so `import picloud` stays cheap for the pure model packages.
    if name == "Testbed":
        from picloud.testbed import Testbed

        return Testbed
    raise AttributeError(name)
