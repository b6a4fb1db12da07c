"""The request guard in front of the controller API and the web UI (picloud/httpguard.py, issue 19).

Each case is a request a web page or another local user could send; the app behind the guard
must not be called for any refused one."""

from __future__ import annotations

import pytest
from flask import Flask

from picloud import httpguard

TOKEN = "s3cret-token"


def make(token: str | None = TOKEN, body_types=httpguard.JSON_TYPES, names=()):
    app = Flask("guard-test")
    calls: list[str] = []

    @app.route("/change", methods=["POST", "PUT", "DELETE", "PATCH"])
    def change():
        calls.append("change")
        return {"ok": True}

    @app.get("/read")
    def read():
        return {"ok": True}

    httpguard.install(app, httpguard.Policy(hosts=httpguard.host_names("127.0.0.1", names), body_types=body_types,
                                            max_body=1024, token=token))
    return app.test_client(), calls


def test_token_is_needed_for_every_state_changing_method_and_reads_stay_open():
    client, calls = make()
    for method in ("post", "put", "delete", "patch"):
        assert getattr(client, method)("/change", json={}).status_code == 401
        assert getattr(client, method)("/change", json={}, headers={"X-PiCloud-Token": "wrong"}).status_code == 403
    assert calls == []
    assert client.get("/read").status_code == 200
    assert client.post("/change", json={}, headers={"X-PiCloud-Token": TOKEN}).status_code == 200
    assert client.post("/change", json={}, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert calls == ["change", "change"]


def test_open_mode_needs_no_token_but_keeps_the_other_checks():
    client, calls = make(token=None)
    assert client.post("/change", json={}).status_code == 200
    assert client.post("/change", data="{}", content_type="text/plain").status_code == 415
    assert client.post("/change", json={}, headers={"Origin": "http://evil.example"}).status_code == 403
    assert calls == ["change"]


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8200", "127.0.0.1.evil.example",
                                  "localhost@evil", "127.0.0.1:80:80", "", "[::1]x", "a b"])
def test_a_foreign_host_is_refused_even_for_reads(host):
    client, _ = make()
    response = client.get("/read", headers={"Host": host})
    assert response.status_code == 400
    assert "DNS-rebinding" in response.get_json()["message"]


@pytest.mark.parametrize("host", ["127.0.0.1:8200", "localhost:8200", "LOCALHOST", "[::1]:8200", "lab.local:80"])
def test_bound_and_named_hosts_are_served(host):
    client, _ = make(names=("lab.local",))
    assert client.get("/read", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "https://127.0.0.1.evil.example", "file://"])
def test_a_foreign_origin_cannot_change_state_even_with_the_token(origin):
    client, calls = make()
    response = client.post("/change", json={}, headers={"Origin": origin, "X-PiCloud-Token": TOKEN})
    assert response.status_code == 403 and calls == []


def test_same_origin_and_cross_site_fetch_metadata():
    client, calls = make()
    ok = {"Origin": "http://localhost:8080", "X-PiCloud-Token": TOKEN}
    assert client.post("/change", json={}, headers=ok).status_code == 200
    assert client.post("/change", json={}, headers={"Sec-Fetch-Site": "cross-site", "X-PiCloud-Token": TOKEN}
                       ).status_code == 403
    assert calls == ["change"]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x",
                                   None])
def test_a_body_that_is_not_json_is_refused(ctype):
    client, calls = make()
    response = client.post("/change", data="{}", content_type=ctype, headers={"X-PiCloud-Token": TOKEN})
    assert response.status_code == 415 and calls == []


def test_multipart_is_accepted_where_the_policy_allows_forms():
    client, calls = make(body_types=httpguard.FORM_TYPES)
    response = client.post("/change", data={"f": "v"}, content_type="multipart/form-data",
                           headers={"X-PiCloud-Token": TOKEN})
    assert response.status_code == 200 and calls == ["change"]


def test_an_oversized_body_is_refused_from_its_length_before_any_byte_is_read():
    client, calls = make(token=None)

    class Exploding:
        def read(self, *a):
            raise AssertionError("the guard read the body")

    environ = {"wsgi.input": Exploding(), "CONTENT_LENGTH": str(64 * httpguard.MIB)}
    response = client.post("/change", environ_overrides=environ, content_type="application/json")
    assert response.status_code == 413 and calls == []


def test_every_response_carries_csp_and_frame_denial():
    client, _ = make()
    for response in (client.get("/read"), client.post("/change", json={}), client.get("/read", headers={"Host": "x"})):
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp.split(
            "script-src")[1].split(";")[0]
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_wildcard_bind_admits_loopback_names_only_plus_given_names():
    names = httpguard.host_names("0.0.0.0", ("pi-lab",))
    assert {"localhost", "127.0.0.1", "::1", "pi-lab"} <= names
    assert "attacker.example" not in names
    assert httpguard.host_names("10.1.2.3") == {"10.1.2.3"}
