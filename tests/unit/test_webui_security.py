"""The web UI as an attacker meets it (issue 19), with Flask's test client on a StaticSource:
framing, inline script, DNS rebinding, results files that are symlinks or SVG, oversized bodies and
stream floods. Each case failed before the fix (noted per test)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from topology.builders import build
from webui import stream
from webui.app import create_app, live
from webui.sources import StaticSource

TOKEN = "s3cret-token"
PAGES = ["/", "/switches", "/switches/core1", "/tenants", "/experiments", "/experiments/demo", "/events"]
TEMPLATES = Path(__file__).resolve().parents[2] / "webui" / "templates"


@pytest.fixture
def results(tmp_path):
    run = tmp_path / "results" / "demo"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"workload": "websearch", "flows": 2}))
    (run / "flows.csv").write_text("src,dst,fct_us\na,b,1\n")
    (run / "fct.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return run


@pytest.fixture
def app(results):
    src = StaticSource(build("fattree:4"), results=results.parent)
    app = create_app({"SOURCE": src, "TOKEN": TOKEN, "INTERVAL": 0.05})
    yield app
    live(app).stop()
    src.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.mark.parametrize("path", PAGES)
def test_pages_deny_framing_and_inline_script(client, path):
    """Findings 4 and 6: no CSP, no X-Frame-Options (the UI could be framed and clickjacked)."""
    resp = client.get(path)
    assert resp.status_code == 200
    csp = resp.headers["Content-Security-Policy"]
    script_src = re.search(r"script-src ([^;]*)", csp).group(1)
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    assert "frame-ancestors 'none'" in csp and resp.headers["X-Frame-Options"] == "DENY"
    # and the pages still work under it: every <script> is an external file of our own origin
    html = resp.get_data(as_text=True)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts), scripts
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handlers are script too"


def test_templates_hold_no_inline_script():
    templates = sorted(TEMPLATES.glob("*.html"))
    assert len(templates) >= 8
    for path in templates:
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", text), path.name


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "127.0.0.1.nip.io"])
def test_dns_rebinding_host_is_refused_on_pages_and_api(client, host):
    """Finding 5: `Host: attacker.example:8080` got 200 from the UI."""
    for path in ("/", "/api/topology", "/api/experiments/demo/files/flows.csv"):
        assert client.get(path, headers={"Host": host}).status_code == 400


def test_a_symlinked_results_file_is_not_served(client, results, tmp_path):
    """Finding 3: leak.txt -> a file outside the results was served with 200."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root's secret\n")
    (results / "leak.txt").symlink_to(secret)
    (results / "leak.csv").symlink_to(secret)
    for name in ("leak.txt", "leak.csv"):
        resp = client.get(f"/api/experiments/demo/files/{name}")
        assert resp.status_code == 404 and b"secret" not in resp.data
    listed = client.get("/api/experiments/demo").get_json()["files"]
    assert "leak.txt" not in listed and "leak.csv" not in listed


def test_a_symlinked_flows_csv_is_not_read_into_the_page(client, results, tmp_path):
    secret = tmp_path / "passwd.csv"
    secret.write_text("user,hash\nroot,SECRETHASH\n")
    (results / "flows.csv").unlink()
    (results / "flows.csv").symlink_to(secret)
    assert b"SECRETHASH" not in client.get("/api/experiments/demo").data
    assert b"SECRETHASH" not in client.get("/experiments/demo").data


def test_svg_with_script_is_a_download_never_inline(client, results):
    """Finding 4: plot.svg was served inline as image/svg+xml from the UI's origin."""
    (results / "plot.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    resp = client.get("/api/experiments/demo/files/plot.svg")
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"].startswith("attachment")
    assert "svg" not in resp.headers["Content-Type"]
    assert "sandbox" in resp.headers["Content-Security-Policy"]


@pytest.mark.parametrize("name,ctype", [("fct.png", "image/png"), ("flows.csv", "text/plain"),
                                        ("summary.json", "text/plain")])
def test_known_safe_types_are_shown_inline(client, name, ctype):
    resp = client.get(f"/api/experiments/demo/files/{name}")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith(ctype)
    assert "attachment" not in resp.headers.get("Content-Disposition", "")


def test_a_64_mib_body_is_refused_before_it_is_parsed(client, app, monkeypatch):
    """Finding 7: a 64 MiB multipart POST without a token was parsed and spooled before its 401."""
    parsed = []
    import werkzeug.formparser

    monkeypatch.setattr(werkzeug.formparser.FormDataParser, "parse",
                        lambda *a, **k: parsed.append(1) or (_ for _ in ()).throw(AssertionError("parsed")))

    class Body:
        def read(self, *a):
            raise AssertionError("the body was read")

    resp = client.post("/api/links/core1/agg1-1", content_type="multipart/form-data; boundary=x",
                       environ_overrides={"wsgi.input": Body(), "CONTENT_LENGTH": str(64 << 20)})
    assert resp.status_code == 413 and parsed == []
    assert app.config["MAX_CONTENT_LENGTH"] <= 1 << 20


def test_foreign_origin_action_is_refused_even_with_the_token(client):
    resp = client.post("/api/verify", json={}, headers={"X-PiCloud-Token": TOKEN, "Origin": "http://evil.example"})
    assert resp.status_code == 403


def test_stream_connections_are_capped_in_total_and_per_client():
    """Finding 7: /api/stream had no cap (200 connections held 206 threads)."""
    slots = stream.StreamSlots(total=4, per_client=3)
    assert [slots.take("a") for _ in range(3)] == [None] * 3
    assert "per client" in slots.take("a")
    assert slots.take("b") is None
    assert "at most 4" in slots.take("c")
    slots.give("a")
    assert slots.take("c") is None


def test_stream_over_the_cap_gets_a_clear_503(app, client):
    app.extensions[stream.SLOTS_KEY] = stream.StreamSlots(total=1, per_client=1)
    first = client.get("/api/stream?once=1", buffered=False)
    try:
        second = client.get("/api/stream?once=1")
        assert second.status_code == 503 and "live streams" in second.get_json()["message"]
        assert second.headers["Retry-After"]
    finally:
        first.close()
    assert app.extensions[stream.SLOTS_KEY].open == {}, "a closed stream gives its slot back"
