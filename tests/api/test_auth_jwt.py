"""
test_auth_jwt.py - bearer credentials other than logins: JWTs (HS256 with
JWT_SECRET, RS256/ES256 with JWT_PUBLIC_KEY_FILE), named API keys
(API_KEYS_FILE and the definition's auth.api_keys) and API_SECRET side by
side. Every kind is accepted and yields the principal GET /v1/auth/me
reports; every way of being wrong is a 401 that writes nothing. Also:
claim names, JWT_SECRET_PREVIOUS during rotation, the verified-token cache
(hits counted, expiry respected) and start-up refusals of bad
configuration. Contract: docs/security.md.
"""

import os
import time

import pytest

from conftest import (TMP_ROOT, ev, expect_json, expect_problem, new_id, new_stream, running_server,
                      start_fails, stream_path, wait_until)
from jwt_helpers import KeyPair, bearer, claims, hs256, key_file, unsigned

SECRET = "jwt-secret-for-tests-0123456789abcdef"
OLD_SECRET = "jwt-secret-previous-0123456789abcdef"
ISS = "https://idp.example.test"
AUD = "chronicle-tests"
ADMIN = {"Authorization": "Bearer admin-secret"}
KEY_LITERAL = "lit-key-0123456789abcdef"
KEY_FROM_ENV = "env-key-0123456789abcdef"
DEF_KEY = "def-key-0123456789abcdef"
APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps", "auth.json")


@pytest.fixture(scope="module")
def keys():
    os.makedirs(TMP_ROOT, exist_ok=True)
    d = os.path.join(TMP_ROOT, f"jwt-keys-{os.getpid()}")
    os.makedirs(d, exist_ok=True)
    return {"rsa": KeyPair("rsa", d), "ec": KeyPair("ec", d)}


@pytest.fixture(scope="module")
def rs_server(keys):
    os.makedirs(TMP_ROOT, exist_ok=True)
    kf = key_file(os.path.join(TMP_ROOT, f"keys-{os.getpid()}.json"), [
        {"name": "ci", "key": KEY_LITERAL, "roles": ["deployer", "reader"]},
        {"name": "reporting", "key_env": "TEST_KEY_REPORTING", "tenant_id": "t-7"},
    ])
    env = {"API_SECRET": "admin-secret", "JWT_SECRET": SECRET, "JWT_SECRET_PREVIOUS": OLD_SECRET,
           "JWT_PUBLIC_KEY_FILE": keys["rsa"].public, "JWT_ISSUER": ISS, "JWT_AUDIENCE": AUD,
           "JWT_LEEWAY": "0", "API_KEYS_FILE": kf, "TEST_KEY_REPORTING": KEY_FROM_ENV,
           "LOG_LEVEL": "debug"}
    with running_server(env=env, name="jwt-rs") as srv:
        yield srv


def good(**extra):
    c = claims(iss=ISS, aud=AUD)
    c.update(extra)
    return c


def me(srv, headers):
    return expect_json(srv.get("/v1/auth/me", headers=headers), 200)


def expect_401(resp):
    p = expect_problem(resp, 401, "unauthorized")
    assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer"), resp.headers
    return p


# ---- accepted ----------------------------------------------------------------


def test_hs256_token_accepted_with_its_claims(rs_server):
    tok = hs256(good(sub="alice", roles=["editor", "viewer"], tenant_id="acme"), SECRET)
    assert me(rs_server, bearer(tok)) == {"kind": "jwt", "sub": "alice", "roles": ["editor", "viewer"],
                                          "tenant_id": "acme", "key_name": None}
    # and it works on a real route, also for writes
    s = new_stream("jwt")
    r = rs_server.post(stream_path(s), json={"events": [ev("ByJwt")]}, headers=bearer(tok))
    assert r.status_code == 201, r.text


def test_rs256_token_from_identity_provider(rs_server, keys):
    tok = keys["rsa"].sign(good(sub="ext-user", roles="a b"))
    assert me(rs_server, bearer(tok)) == {"kind": "jwt", "sub": "ext-user", "roles": ["a", "b"],
                                          "tenant_id": None, "key_name": None}
    expect_json(rs_server.get("/v1/events?limit=1", headers=bearer(tok)), 200)


def test_aud_may_be_an_array(rs_server):
    tok = hs256(good(aud=["other", AUD]), SECRET)
    assert me(rs_server, bearer(tok))["sub"] == "user-1"


def test_previous_secret_still_verifies(rs_server):
    tok = hs256(good(sub="old-session"), OLD_SECRET)
    assert me(rs_server, bearer(tok))["sub"] == "old-session"


def test_api_keys_from_file(rs_server):
    assert me(rs_server, bearer(KEY_LITERAL)) == {"kind": "api_key", "sub": "ci", "roles": ["deployer", "reader"],
                                                  "tenant_id": None, "key_name": "ci"}
    assert me(rs_server, bearer(KEY_FROM_ENV)) == {"kind": "api_key", "sub": "reporting", "roles": [],
                                                   "tenant_id": "t-7", "key_name": "reporting"}


def test_api_secret_unchanged(rs_server):
    assert me(rs_server, ADMIN) == {"kind": "api_secret", "sub": None, "roles": [], "tenant_id": None,
                                    "key_name": None}


def test_public_routes_need_nothing(rs_server):
    assert expect_json(rs_server.get("/health"), 200) == {"status": "ok"}
    assert expect_json(rs_server.get("/health", headers=bearer("garbage.token.x")), 200) == {"status": "ok"}


# ---- rejected ----------------------------------------------------------------


def _bad_tokens(keys):
    now = int(time.time())
    rsa, ec = keys["rsa"], keys["ec"]
    valid = hs256(good(), SECRET)
    return {
        "hs256 bad signature": hs256(good(), "not-the-secret-not-the-secret-xx"),
        "rs256 bad signature": flip(rsa.sign(good()), -20),
        "rs256 by another key": KeyPair("rsa", rsa.dir + "-other").sign(good()),
        "expired": hs256(good(exp=now - 60), SECRET),
        "expired rs256": rsa.sign(good(exp=now - 60)),
        "not yet valid": hs256(good(nbf=now + 3600), SECRET),
        "no exp": hs256({k: v for k, v in good().items() if k != "exp"}, SECRET),
        "wrong issuer": hs256(good(iss="https://evil.example"), SECRET),
        "no issuer": hs256({k: v for k, v in good().items() if k != "iss"}, SECRET),
        "wrong audience": hs256(good(aud="someone-else"), SECRET),
        "no audience": hs256({k: v for k, v in good().items() if k != "aud"}, SECRET),
        "alg none": unsigned(good()),
        "alg none with signature": unsigned(good()) + valid.split(".")[2],
        "HS256 signed with the RS256 public key": hs256(good(), rsa.public_pem()),
        "ES256 token (no EC key configured)": ec.sign(good()),
        "RS256 header on an HS256 signature": hs256(good(), SECRET, header={"alg": "RS256", "typ": "JWT"}),
        "alg HS512": hs256(good(), SECRET, header={"alg": "HS512"}),
        "truncated by one": valid[:-1],
        "truncated signature": valid[:valid.rindex(".") + 5],
        "no signature": valid[:valid.rindex(".") + 1],
        "header and payload only": valid[:valid.rindex(".")],
        "no sub": hs256({k: v for k, v in good().items() if k != "sub"}, SECRET),
        "roles not strings": hs256(good(roles=[1, 2]), SECRET),
        "payload not json": valid.split(".")[0] + ".bm90IGpzb24." + valid.split(".")[2],
        "unknown api key": "lit-key-0123456789abcdeX",
        "api key prefix": KEY_LITERAL[:-1],
    }


BAD_NAMES = [
    "hs256 bad signature", "rs256 bad signature", "rs256 by another key", "expired", "expired rs256",
    "not yet valid", "no exp", "wrong issuer", "no issuer", "wrong audience", "no audience", "alg none",
    "alg none with signature", "HS256 signed with the RS256 public key", "ES256 token (no EC key configured)",
    "RS256 header on an HS256 signature", "alg HS512", "truncated by one", "truncated signature",
    "no signature", "header and payload only", "no sub", "roles not strings", "payload not json",
    "unknown api key", "api key prefix",
]


def flip(tok, at):
    """tok with the base64url character at index at changed."""
    at %= len(tok)
    c = "A" if tok[at] != "A" else "B"
    return tok[:at] + c + tok[at + 1:]


@pytest.fixture(scope="module")
def bad_tokens(keys):
    return _bad_tokens(keys)


@pytest.mark.parametrize("bad_name", BAD_NAMES)
def test_every_wrong_credential_is_refused_and_writes_nothing(rs_server, bad_tokens, bad_name):
    tok = bad_tokens[bad_name]
    expect_401(rs_server.get("/v1/auth/me", headers=bearer(tok)))
    expect_401(rs_server.get("/v1/events", headers=bearer(tok)))
    head = expect_json(rs_server.get("/v1/events?limit=1", headers=ADMIN), 200)["head"]
    s = new_stream("bad")
    expect_401(rs_server.post(stream_path(s), json={"events": [ev("Nope")]}, headers=bearer(tok)))
    assert expect_json(rs_server.get("/v1/events?limit=1", headers=ADMIN), 200)["head"] == head


def test_failures_are_counted_and_tokens_never_logged(rs_server, bad_tokens):
    before = rs_server.metrics(headers=ADMIN)
    expect_401(rs_server.get("/v1/events", headers=bearer(bad_tokens["expired"])))
    after = rs_server.metrics(headers=ADMIN)
    assert after.sum("chronicle_auth_failures_total") == before.sum("chronicle_auth_failures_total") + 1
    text = "\n".join(rs_server.stderr_lines)
    for name, tok in bad_tokens.items():
        assert tok not in text, name
    assert KEY_LITERAL not in text and KEY_FROM_ENV not in text and "admin-secret" not in text


def test_verified_tokens_are_cached(rs_server):
    tok = hs256(good(sub="cache-me"), SECRET)
    m0 = rs_server.metrics(headers=ADMIN)
    for _ in range(5):
        assert me(rs_server, bearer(tok))["sub"] == "cache-me"
    m1 = rs_server.metrics(headers=ADMIN)
    assert m1.sum("chronicle_jwt_cache_misses_total") - m0.sum("chronicle_jwt_cache_misses_total") == 1
    assert m1.sum("chronicle_jwt_cache_hits_total") - m0.sum("chronicle_jwt_cache_hits_total") == 4


def test_cached_token_still_expires(rs_server):
    tok = hs256(good(sub="short", exp=int(time.time()) + 2), SECRET)
    assert me(rs_server, bearer(tok))["sub"] == "short"  # now cached
    wait_until(lambda: rs_server.get("/v1/auth/me", headers=bearer(tok)).status_code == 401, timeout=10,
               msg="a cached token was accepted after its exp")


# ---- ES256 and claim names ---------------------------------------------------------


def test_es256_and_configured_claim_names(keys):
    env = {"JWT_PUBLIC_KEY_FILE": keys["ec"].public, "JWT_CLAIM_SUB": "uid",
           "JWT_CLAIM_ROLES": "realm_access.roles", "JWT_CLAIM_TENANT": "org"}
    with running_server(env=env, name="jwt-es") as srv:
        tok = keys["ec"].sign(claims(sub=None, uid="u-1", realm_access={"roles": ["ops"]}, org="acme"))
        assert me(srv, bearer(tok)) == {"kind": "jwt", "sub": "u-1", "roles": ["ops"], "tenant_id": "acme",
                                        "key_name": None}
        expect_401(srv.get("/v1/auth/me", headers=bearer(keys["rsa"].sign(claims(uid="u-1")))))
        expect_401(srv.get("/v1/auth/me", headers=bearer(keys["ec"].sign(claims(sub="u-1")))))  # no uid
        expect_401(srv.get("/v1/auth/me", headers=bearer(hs256(claims(uid="u-1"), keys["ec"].public_pem()))))
        expect_401(srv.get("/v1/auth/me", headers=bearer(hs256(claims(uid="u-1"), SECRET))))  # no JWT_SECRET


def test_definition_api_keys_from_environment():
    env = {"JWT_SECRET": SECRET, "TEST_REPORTING_KEY": DEF_KEY}
    with running_server(args=("--app", APP), env=env, name="defkeys") as srv:
        assert me(srv, bearer(DEF_KEY)) == {"kind": "api_key", "sub": "reporting", "roles": ["reader"],
                                            "tenant_id": "t-42", "key_name": "reporting"}
        expect_401(srv.get("/v1/notes", headers=bearer(DEF_KEY + "x")))
        expect_json(srv.get("/v1/notes", headers=bearer(DEF_KEY)), 200)


# ---- configuration refused at start ------------------------------------------------


@pytest.mark.parametrize("env,field", [
    ({"API_KEYS_FILE": "/nonexistent/keys.json"}, "API_KEYS_FILE"),
    ({"JWT_SECRET": "short"}, "JWT_SECRET"),
    ({"JWT_PUBLIC_KEY_FILE": "/etc/hostname"}, "JWT_PUBLIC_KEY_FILE"),
    ({"JWT_SECRET": SECRET, "JWT_LEEWAY": "-1"}, "JWT_LEEWAY"),
])
def test_bad_configuration_is_refused(env, field):
    err = start_fails(env)
    assert field in err, err


@pytest.mark.parametrize("keys_,msg", [
    ([{"name": "a", "key_env": "TEST_UNSET_VARIABLE_XYZ"}], "TEST_UNSET_VARIABLE_XYZ is not set"),
    ([{"name": "a", "key": "short"}], "shorter than 16 bytes"),
    ([{"name": "a", "key": KEY_LITERAL}, {"name": "a", "key": KEY_FROM_ENV}], "used twice"),
    ([{"key": KEY_LITERAL}], "needs a \\\"name\\\""),
])
def test_bad_key_files_are_refused(keys_, msg):
    path = key_file(os.path.join(TMP_ROOT, f"badkeys-{new_id()}.json"), keys_)
    err = start_fails({"API_KEYS_FILE": path})
    assert msg in err, err
    assert KEY_LITERAL not in err


def test_definition_key_without_its_variable_is_refused():
    err = start_fails({"JWT_SECRET": SECRET}, args=("--app", APP))
    assert "TEST_REPORTING_KEY is not set" in err, err


def test_login_entity_needs_jwt_secret():
    err = start_fails({"TEST_REPORTING_KEY": DEF_KEY}, args=("--app", APP))
    assert "auth.users needs JWT_SECRET" in err, err
