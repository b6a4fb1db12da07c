"""PiCloud's web UI: a Flask application factory (`create_app`), its blueprints and local assets.

Start it with `picloud ui`, `picloud up ... --ui` or `Testbed.ui()` (`webui.server.UIServer`).
The JSON routes are documented in docs/API.md.
"""

from webui.app import create_app

__all__ = ["create_app"]
