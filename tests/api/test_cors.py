"""
test_cors.py - CORS for browser clients (CORS_ORIGINS): preflights
(OPTIONS with Origin and Access-Control-Request-Method) are answered 204
without credentials for allowed origins, 403 for others; answers to allowed
origins carry Access-Control-Allow-Origin, Vary: Origin and the exposed
headers, errors included; "*" allows any origin; without CORS_ORIGINS no
CORS header is sent and OPTIONS stays a 405. Contract: docs/security.md.
"""

import pytest

from conftest import expect_json, expect_problem, running_server, start_fails

ORIGIN = "https://app.example.com"
SECRET = {"Authorization": "Bearer s1"}


@pytest.fixture(scope="module")
def srv():
    env = {"API_SECRET": "s1", "CORS_ORIGINS": f"{ORIGIN}, https://admin.example.com/", "CORS_MAX_AGE": "120"}
    with running_server(env=env, name="cors") as s:
        yield s


def preflight(srv, path, origin=ORIGIN, method="GET", headers="authorization, content-type"):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return srv.request("OPTIONS", path, headers=h)


def test_preflight_allowed_origin(srv):
    r = preflight(srv, "/v1/streams/abc", method="POST")
    assert r.status_code == 204, r.text
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    methods = [m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")]
    assert "POST" in methods and "GET" in methods
    allowed = [h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")]
    assert "authorization" in allowed and "content-type" in allowed and "if-match" in allowed
    assert r.headers["Access-Control-Max-Age"] == "120"
    assert "Origin" in r.headers.get("Vary", "")
    # the second origin, listed with a trailing slash
    assert preflight(srv, "/v1/events", origin="https://admin.example.com").status_code == 204


def test_preflight_other_origin_refused(srv):
    r = preflight(srv, "/v1/events", origin="https://evil.example.com")
    expect_problem(r, 403, "forbidden")
    assert "Access-Control-Allow-Origin" not in r.headers


def test_preflight_unknown_path_is_404(srv):
    r = preflight(srv, "/nowhere")
    assert r.status_code in (401, 404)
    assert r.headers.get("Access-Control-Allow-Origin") == ORIGIN


def test_simple_requests_get_cors_headers(srv):
    r = srv.get("/v1/events?limit=1", headers={"Origin": ORIGIN, **SECRET})
    expect_json(r, 200)
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in r.headers["Vary"]
    exposed = [h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")]
    assert "X-Request-Id" in exposed and "Location" in exposed and "Retry-After" in exposed
    # errors too, so the page can read them
    r = srv.get("/v1/events", headers={"Origin": ORIGIN})
    expect_problem(r, 401, "unauthorized")
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_other_origins_get_no_allow_header(srv):
    r = srv.get("/v1/events?limit=1", headers={"Origin": "https://evil.example.com", **SECRET})
    expect_json(r, 200)
    assert "Access-Control-Allow-Origin" not in r.headers
    r = srv.get("/v1/events?limit=1", headers=SECRET)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_options_without_preflight_headers_is_not_a_preflight(srv):
    r = srv.request("OPTIONS", "/v1/events", headers=SECRET)
    expect_problem(r, 405, "method-not-allowed")


def test_wildcard():
    with running_server(env={"CORS_ORIGINS": "*"}, name="cors-any") as s:
        r = preflight(s, "/v1/events", origin="https://anything.example")
        assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
        r = s.get("/health", headers={"Origin": "https://anything.example"})
        assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_no_cors_configured(server):
    r = preflight(server, "/v1/events")
    expect_problem(r, 405, "method-not-allowed")
    assert "Access-Control-Allow-Origin" not in r.headers
    r = server.get("/health", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_bad_origin_configuration_is_refused():
    assert "CORS_ORIGINS" in start_fails({"CORS_ORIGINS": "app.example.com"})
