"""`picloud ui export RESULTS_DIR --out FILE.html`: one self-contained HTML file that replays a run.

No server and no external URL: the stylesheet and `replay.js` are our own static assets, inlined;
the recording (`timeline.json`) is embedded as a JSON data block, which a browser never executes;
a Content-Security-Policy meta tag forbids every network request, so the file behaves the same
on a projector without a network as on the machine that made it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from picloud.errors import UIError
from webui.record import TIMELINE

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
       "connect-src 'none'; form-action 'none'; base-uri 'none'")


def _json_block(data: object) -> str:
    # "</" would end the <script> element early; "<!--" could open a comment state.
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _summary_rows(summary: dict) -> list[tuple[str, str]]:
    try:
        from traffic.report import rows

        return rows(summary)
    except Exception:  # noqa: BLE001 - an old summary without every key still replays
        return []


def render(directory: str | Path) -> str:
    d = Path(directory)
    path = d / TIMELINE
    if not path.is_file():
        raise UIError(f"{d}: no {TIMELINE} (traffic runs record one; this directory is not a run's results, "
                      "or it predates recording)")
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UIError(f"{path}: unreadable ({exc})") from None
    title = html.escape(run.get("name") or d.name)
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                   for k, v in _summary_rows(run.get("summary") or {}))
    css = (STATIC / "picloud.css").read_text()
    js = (STATIC / "replay.js").read_text()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PiCloud replay: {title}</title>
<style>{css}
#replay {{ display: grid; gap: 8px; }} .replay-head {{ display: flex; gap: 12px; align-items: center; }}
#replay-slider {{ flex: 1; }} #replay-topo {{ max-height: 70vh; }}</style>
</head><body><main>
<h1>PiCloud replay: {title}</h1>
<p class="dim">Recorded at 1 Hz during the run; scenario events are the marks on the timeline. Offline file:
no server, no network.</p>
<section id="replay"></section>
<section><h2>Summary</h2><table class="grid">{rows}</table></section>
</main>
<script type="application/json" id="picloud-run">{_json_block(run)}</script>
<script>{js}</script>
</body></html>
"""


def export(directory: str | Path, out: str | Path) -> Path:
    target = Path(out)
    if target.suffix not in (".html", ".htm"):
        raise UIError(f"--out {target}: must end in .html")
    text = render(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target
