"""
test_auth_login.py - the auth entity (definition auth.users, fields email
and password) and POST /v1/auth/login, /refresh, /logout.

Covers: a user created through the entity API never shows its password (or
its hash) in any response, history, event, feed item, log line or the
database file (which holds only the Argon2id hash); logins hand out an
access token (an HS256 JWT that works on every route, kind "login") and a
refresh token; refresh rotates, a reused refresh token ends the session,
logout revokes it; unknown e-mail and wrong password fail alike (status,
body, and the cost of one Argon2id verification); tokens of a deleted user
stop working; short-lived access tokens expire. Contract: docs/security.md.
"""

import json
import os
import statistics
import time

import pytest

from conftest import (SSE, expect_json, expect_problem, running_server, wait_until)
from jwt_helpers import bearer

APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps", "auth.json")
SECRET = "login-jwt-secret-0123456789abcdefgh"
ADMIN = {"Authorization": "Bearer admin-secret"}
PASSWORDS = {"ada@example.com": "correct horse battery staple",
             "bob@example.com": "Tr0ub4dor&3-bob-pw",
             "cy@example.com": "cy-password-12345"}


@pytest.fixture(scope="module")
def srv():
    env = {"JWT_SECRET": SECRET, "API_SECRET": "admin-secret", "TEST_REPORTING_KEY": "r" * 24,
           "LOG_LEVEL": "debug", "RATE_LIMIT_AUTH": "1000/1000"}
    with running_server(args=("--app", APP), env=env, name="login") as s:
        yield s


@pytest.fixture(scope="module")
def users(srv):
    out = {}
    for email, pw in PASSWORDS.items():
        body = expect_json(srv.post("/v1/users", json={"name": email.split("@")[0], "email": email,
                                                      "password": pw, "roles": ["member"]},
                                    headers=ADMIN), 201)
        assert "password" not in body, body
        out[email] = body["id"]
    return out


def login(srv, email, password):
    return srv.post("/v1/auth/login", json={"email": email, "password": password})


def tokens(srv, email):
    return expect_json(login(srv, email, PASSWORDS[email]), 200)


def test_login_issues_working_tokens(srv, users):
    t = tokens(srv, "ada@example.com")
    assert set(t) == {"access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in"}
    assert t["token_type"] == "Bearer" and t["expires_in"] == 900 and t["refresh_expires_in"] == 30 * 86400
    me = expect_json(srv.get("/v1/auth/me", headers=bearer(t["access_token"])), 200)
    assert me == {"kind": "login", "sub": users["ada@example.com"], "roles": ["member"], "tenant_id": None,
                  "key_name": None}
    expect_json(srv.post("/v1/notes", json={"text": "by ada"}, headers=bearer(t["access_token"])), 201)
    # the e-mail is matched case-insensitively in its domain, as the field stores it
    expect_json(login(srv, "ada@EXAMPLE.com", PASSWORDS["ada@example.com"]), 200)


def test_login_responses_are_not_cached(srv, users):
    r = login(srv, "bob@example.com", PASSWORDS["bob@example.com"])
    assert r.status_code == 200 and r.headers.get("Cache-Control") == "no-store"


def _strip(body):
    return {k: v for k, v in body.items() if k not in ("request_id",)}


def test_failures_are_uniform(srv, users):
    unknown = login(srv, "nobody@example.com", "whatever-password")
    wrong = login(srv, "ada@example.com", "wrong-password!")
    p1 = expect_problem(unknown, 401, "unauthorized", instance="/v1/auth/login")
    p2 = expect_problem(wrong, 401, "unauthorized", instance="/v1/auth/login")
    assert _strip(p1) == _strip(p2)
    assert set(unknown.headers) - {"Date", "X-Request-Id", "Content-Length"} == \
        set(wrong.headers) - {"Date", "X-Request-Id", "Content-Length"}
    # and neither says which part was wrong
    assert "e-mail address or the password" in p1["detail"]


def test_failures_cost_the_same(srv, users):
    """An unknown user costs an Argon2id verification too (against a dummy
    hash), so timing does not tell which e-mail addresses exist: without it
    an unknown user would answer in about a millisecond, a wrong password in
    about a tenth of a second."""
    def timed(email):
        t0 = time.monotonic()
        r = login(srv, email, "definitely-wrong-pw")
        assert r.status_code == 401
        return time.monotonic() - t0
    unknown = statistics.median(timed("ghost@example.com") for _ in range(5))
    wrong = statistics.median(timed("bob@example.com") for _ in range(5))
    assert unknown > 0.3 * wrong, (unknown, wrong)
    assert wrong > 0.3 * unknown, (unknown, wrong)


@pytest.mark.parametrize("body,status", [
    ({"email": "ada@example.com"}, 422),
    ({"password": "x" * 10}, 422),
    ({"email": 5, "password": "x" * 10}, 422),
    ({"email": "", "password": ""}, 422),
    (["not", "an", "object"], 422),
])
def test_malformed_logins(srv, users, body, status):
    r = srv.post("/v1/auth/login", json=body)
    assert r.status_code == status, r.text


def test_malformed_json_does_not_echo_the_body(srv, users):
    r = srv.post("/v1/auth/login", data=b'{"email": "ada@example.com", "password": "leaky-pass-123',
                 headers={"Content-Type": "application/json"})
    expect_problem(r, 400, "malformed-json")
    assert "leaky" not in r.text


def test_refresh_rotates_and_reuse_ends_the_session(srv, users):
    t = tokens(srv, "bob@example.com")
    t2 = expect_json(srv.post("/v1/auth/refresh", json={"refresh_token": t["refresh_token"]}), 200)
    assert t2["refresh_token"] != t["refresh_token"]
    me = expect_json(srv.get("/v1/auth/me", headers=bearer(t2["access_token"])), 200)
    assert me["sub"] == users["bob@example.com"] and me["kind"] == "login"
    # the old refresh token was used up; presenting it again revokes the family
    expect_problem(srv.post("/v1/auth/refresh", json={"refresh_token": t["refresh_token"]}), 401,
                   "unauthorized")
    expect_problem(srv.post("/v1/auth/refresh", json={"refresh_token": t2["refresh_token"]}), 401,
                   "unauthorized")


def test_logout_revokes_the_refresh_token(srv, users):
    t = tokens(srv, "cy@example.com")
    r = srv.post("/v1/auth/logout", json={"refresh_token": t["refresh_token"]})
    assert r.status_code == 204, r.text
    expect_problem(srv.post("/v1/auth/refresh", json={"refresh_token": t["refresh_token"]}), 401,
                   "unauthorized")
    # logging out twice, or with a token never issued, is not an error
    assert srv.post("/v1/auth/logout", json={"refresh_token": t["refresh_token"]}).status_code == 204
    assert srv.post("/v1/auth/logout", json={"refresh_token": "x" * 43}).status_code == 204


@pytest.mark.parametrize("token", ["", "short", "x" * 43, "é" * 43])
def test_unknown_refresh_tokens(srv, users, token):
    r = srv.post("/v1/auth/refresh", json={"refresh_token": token})
    assert r.status_code in (401, 422), r.text
    if token and len(token) == 43:
        expect_problem(r, 401, "unauthorized")


def test_password_change(srv, users):
    uid = users["cy@example.com"]
    r = srv.request("PATCH", f"/v1/users/{uid}", json={"password": "a-brand-new-password"}, headers=ADMIN)
    body = expect_json(r, 200)
    assert "password" not in body
    expect_problem(login(srv, "cy@example.com", PASSWORDS["cy@example.com"]), 401, "unauthorized")
    expect_json(login(srv, "cy@example.com", "a-brand-new-password"), 200)
    PASSWORDS["cy@example.com"] = "a-brand-new-password"


def test_password_rules(srv):
    r = srv.post("/v1/users", json={"email": "short@example.com", "password": "short"}, headers=ADMIN)
    p = expect_problem(r, 422, "validation")
    assert p["errors"][0]["field"] == "password" and "at least 8" in p["errors"][0]["message"]
    assert "short\"" not in r.text.replace('"short@', "")
    r = srv.post("/v1/users", json={"email": "nopw@example.com"}, headers=ADMIN)
    assert expect_problem(r, 422, "validation")["errors"][0]["field"] == "password"
    r = srv.get("/v1/users?password=anything", headers=ADMIN)
    assert r.status_code == 400, r.text


def test_deleted_user_tokens_stop_working(srv):
    email, pw = "gone@example.com", "soon-to-be-deleted"
    uid = expect_json(srv.post("/v1/users", json={"email": email, "password": pw}, headers=ADMIN), 201)["id"]
    t = expect_json(login(srv, email, pw), 200)
    expect_json(srv.get("/v1/notes", headers=bearer(t["access_token"])), 200)
    assert srv.request("DELETE", f"/v1/users/{uid}", headers=ADMIN).status_code in (200, 204)
    p = expect_problem(srv.get("/v1/notes", headers=bearer(t["access_token"])), 401, "unauthorized")
    assert "no longer exists" in p["detail"]
    expect_problem(srv.post("/v1/auth/refresh", json={"refresh_token": t["refresh_token"]}), 401, "unauthorized")
    expect_problem(login(srv, email, pw), 401, "unauthorized")


def test_access_tokens_expire():
    env = {"JWT_SECRET": SECRET, "API_SECRET": "admin-secret", "TEST_REPORTING_KEY": "r" * 24,
           "AUTH_ACCESS_TTL": "1", "JWT_LEEWAY": "0"}
    with running_server(args=("--app", APP), env=env, name="login-ttl") as s:
        expect_json(s.post("/v1/users", json={"email": "t@example.com", "password": "ttl-password"},
                           headers=ADMIN), 201)
        t = expect_json(login(s, "t@example.com", "ttl-password"), 200)
        assert t["expires_in"] == 1
        wait_until(lambda: s.get("/v1/notes", headers=bearer(t["access_token"])).status_code == 401,
                   timeout=10, msg="an access token outlived AUTH_ACCESS_TTL")
        # the refresh token still gets a new one
        t2 = expect_json(s.post("/v1/auth/refresh", json={"refresh_token": t["refresh_token"]}), 200)
        assert s.get("/v1/auth/me", headers=bearer(t2["access_token"])).status_code in (200, 401)


def test_expired_sessions_are_dropped():
    """Refresh tokens past AUTH_REFRESH_TTL stop working, and the next login
    deletes their rows (SQLite: the table is read from the file)."""
    env = {"JWT_SECRET": SECRET, "API_SECRET": "admin-secret", "TEST_REPORTING_KEY": "r" * 24,
           "AUTH_REFRESH_TTL": "1"}
    with running_server(args=("--app", APP), env=env, name="login-rttl") as s:
        expect_json(s.post("/v1/users", json={"email": "e@example.com", "password": "expiring-pw"},
                           headers=ADMIN), 201)
        t = expect_json(login(s, "e@example.com", "expiring-pw"), 200)
        issued = time.time()
        # the clock, not another thread, is what we wait for here
        wait_until(lambda: time.time() > issued + 2.2, timeout=10)
        expect_problem(s.post("/v1/auth/refresh", json={"refresh_token": t["refresh_token"]}), 401,
                       "unauthorized")
        expect_json(login(s, "e@example.com", "expiring-pw"), 200)
        if s.db_path:
            import sqlite3
            con = sqlite3.connect(f"file:{s.db_path}?mode=ro", uri=True)
            try:
                rows = con.execute("SELECT count(*) FROM chronicle_auth_refresh").fetchone()[0]
            finally:
                con.close()
            assert rows == 1, rows


def test_openapi_documents_the_auth_routes(srv, users):
    doc = expect_json(srv.get("/openapi.json", headers=ADMIN), 200)
    assert doc["paths"]["/v1/auth/login"]["post"]["security"] == []
    assert {"200", "401", "429"} <= set(doc["paths"]["/v1/auth/login"]["post"]["responses"])
    assert "204" in doc["paths"]["/v1/auth/logout"]["post"]["responses"]
    assert "security" not in doc["paths"]["/v1/auth/me"]["get"]
    tokens_schema = doc["components"]["schemas"]["Tokens"]
    t = tokens(srv, "ada@example.com")
    assert set(tokens_schema["required"]) == set(t)
    me = expect_json(srv.get("/v1/auth/me", headers=bearer(t["access_token"])), 200)
    assert set(doc["components"]["schemas"]["Principal"]["required"]) == set(me)
    assert "password" not in doc["components"]["schemas"]["users"]["properties"]


def test_passwords_appear_nowhere(srv, users):
    """Runs last in this module: every password used above must be absent
    from every response a client can get, the feed, the log and the
    database file; the stored form is an Argon2id hash that is itself never
    served."""
    seen = []
    for uid in users.values():
        seen.append(srv.get(f"/v1/users/{uid}", headers=ADMIN).text)
        seen.append(srv.get(f"/v1/users/{uid}/history", headers=ADMIN).text)
        seen.append(srv.get(f"/v1/streams/users-{uid}", headers=ADMIN).text)
    seen.append(srv.get("/v1/users?limit=100", headers=ADMIN).text)
    feed = srv.read_feed(headers=ADMIN)
    seen.append(json.dumps(feed))
    with SSE(srv.url + "/v1/events", params={"after": 0}, headers=ADMIN) as sub:
        items = sub.events(len(feed))
    seen.append(json.dumps(items))
    seen.append(srv.get("/openapi.json", headers=ADMIN).text)
    user_events = [e for e in feed if e["stream"].startswith("users-")]
    assert len(user_events) >= len(users)
    for e in user_events:
        assert "password" not in e["data"], e
    log = "\n".join(srv.stderr_lines)
    everything = "\n".join(seen)
    for pw in list(PASSWORDS.values()) + ["wrong-password!", "definitely-wrong-pw", "soon-to-be-deleted"]:
        assert pw not in everything, pw
        assert pw not in log, pw
    assert "$argon2id$" not in everything and "$argon2id$" not in log
    if srv.db_path:
        srv.stop()
        raw = b""
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(srv.db_path + suffix):
                with open(srv.db_path + suffix, "rb") as f:
                    raw += f.read()
        for pw in PASSWORDS.values():
            assert pw.encode() not in raw, pw
        assert b"$argon2id$" in raw  # what is stored instead
        srv.start()

