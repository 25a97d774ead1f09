"""
test_auth.py - bearer API secrets: with API_SECRET="s1,s2" every route but
/health and /ready needs `Authorization: Bearer s1|s2`, else 401 with
WWW-Authenticate: Bearer and nothing is written. Contract: docs/http-api.md.
"""

import json

import pytest
import requests

from conftest import (SSE, ev, expect_json, expect_problem, mime, new_id, new_stream, stream_path)

S1 = {"Authorization": "Bearer s1"}
S2 = {"Authorization": "Bearer s2"}
JSON = {"Content-Type": "application/json"}


def body_for(n=1):
    return json.dumps({"events": [ev("Secured", {"i": i}, id_=new_id()) for i in range(n)]}).encode()


def expect_401(resp, instance):
    p = expect_problem(resp, 401, "unauthorized", instance=instance)
    www = resp.headers.get("WWW-Authenticate", "")
    assert www.split(" ")[0].split(",")[0] == "Bearer", www
    return p


@pytest.mark.parametrize("path,body", [("/health", {"status": "ok"}), ("/ready", {"status": "ready"})])
def test_health_and_ready_need_no_auth(secured_server, path, body):
    assert expect_json(secured_server.get(path), 200) == body
    assert expect_json(secured_server.get(path, headers={"Authorization": "Bearer wrong"}), 200) == body


PROTECTED = [
    ("GET", "/v1/events"),
    ("GET", "/v1/events?after=0&limit=5"),
    ("GET", "/v1/streams/some-stream"),
    ("POST", "/v1/streams/some-stream"),
    ("GET", "/metrics"),
    ("GET", "/internal/health/store"),
    ("GET", "/internal/health/http"),
]
BAD_AUTH = [None, "Bearer", "Bearer ", "Bearer s3", "Bearer s1x", "Bearer s", "Bearer s1,s2", "Basic czE6czE=",
            "s1", "Token s1"]


@pytest.mark.parametrize("method,path", PROTECTED)
@pytest.mark.parametrize("auth", BAD_AUTH)
def test_protected_routes_reject_missing_or_wrong_secret(secured_server, method, path, auth):
    headers = dict(JSON)
    if auth is not None:
        headers["Authorization"] = auth
    head_before = secured_server.head_position(headers=S1)
    r = secured_server.request(method, path, data=body_for() if method == "POST" else None, headers=headers)
    expect_401(r, path.split("?")[0])
    assert secured_server.head_position(headers=S1) == head_before


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/v1/events", 200),
    ("GET", "/internal/health/store", 200),
    ("GET", "/internal/health/http", 200),
])
@pytest.mark.parametrize("auth", [S1, S2], ids=["s1", "s2"])
def test_each_secret_is_accepted(secured_server, method, path, status, auth):
    expect_json(secured_server.request(method, path, headers=auth), status)


def test_metrics_with_secret(secured_server):
    r = secured_server.get("/metrics", headers=S2)
    assert r.status_code == 200 and mime(r.headers) == "text/plain"
    assert "chronicle_http_requests_total" in r.text


def test_append_and_read_with_either_secret(secured_server):
    s = new_stream("auth")
    r = secured_server.post(stream_path(s), data=body_for(2), headers={**JSON, **S1})
    assert expect_json(r, 201)["version"] == 2
    r = secured_server.post(stream_path(s), data=body_for(1), headers={**JSON, **S2})
    assert expect_json(r, 201)["version"] == 3
    got = expect_json(secured_server.get(stream_path(s), headers=S1), 200)
    assert [e["version"] for e in got["events"]] == [1, 2, 3]


def test_rejected_append_writes_nothing(secured_server):
    s = new_stream("auth")
    head = secured_server.head_position(headers=S1)
    for auth in (None, "Bearer nope"):
        h = dict(JSON)
        if auth:
            h["Authorization"] = auth
        expect_401(secured_server.post(stream_path(s), data=body_for(3), headers=h), stream_path(s))
    assert secured_server.head_position(headers=S1) == head
    expect_problem(secured_server.get(stream_path(s), headers=S1), 404, "not-found")


def test_live_feed_requires_secret(secured_server):
    r = requests.get(secured_server.url + "/v1/events", headers={"Accept": "text/event-stream"}, timeout=10)
    expect_401(r, "/v1/events")
    s = new_stream("auth")
    head = secured_server.head_position(headers=S1)
    with SSE(secured_server.url + "/v1/events", params={"after": head}, headers=S1) as sub:
        assert sub.resp.status_code == 200 and mime(sub.resp.headers) == "text/event-stream"
        pos = expect_json(secured_server.post(stream_path(s), data=body_for(1), headers={**JSON, **S2}),
                          201)["positions"]
        assert int(sub.next_event()["id"]) == pos[0]


def test_open_server_ignores_authorization(server):
    assert expect_json(server.get("/v1/events", headers={"Authorization": "Bearer anything"}), 200)["head"] == 0


def test_flag_overrides_environment(server_factory):
    srv = server_factory(args=["--api-secret", "flag-secret"], env={"API_SECRET": "env-secret"}, name="authflag")
    expect_json(srv.get("/v1/events", headers={"Authorization": "Bearer flag-secret"}), 200)
    expect_401(srv.get("/v1/events", headers={"Authorization": "Bearer env-secret"}), "/v1/events")
