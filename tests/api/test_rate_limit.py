"""
test_rate_limit.py - token buckets per client and route class
(RATE_LIMIT_READ / _WRITE / _AUTH): a burst past the bucket gets 429 with
an integer Retry-After and the rate-limited problem, other clients (another
API key, another token subject) are unaffected, classes are separate, the
bucket refills, refusals are counted in /metrics, and /health is never
limited. Logins are limited per client address. Contract: docs/security.md.
"""

import os

import pytest

from conftest import TMP_ROOT, expect_problem, running_server, start_fails, wait_until
from jwt_helpers import bearer, claims, hs256, key_file

SECRET = "rate-limit-jwt-secret-0123456789abc"
KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps", "auth.json")


@pytest.fixture(scope="module")
def srv():
    os.makedirs(TMP_ROOT, exist_ok=True)
    path = key_file(os.path.join(TMP_ROOT, f"rl-keys-{os.getpid()}.json"),
                    [{"name": "a", "key": KEY_A}, {"name": "b", "key": KEY_B}])
    env = {"API_KEYS_FILE": path, "JWT_SECRET": SECRET, "RATE_LIMIT_READ": "1/4",
           "RATE_LIMIT_WRITE": "1/2"}
    with running_server(env=env, name="ratelimit") as s:
        yield s


def burst(srv, headers, n, path="/v1/events?limit=1"):
    return [srv.get(path, headers=headers) for _ in range(n)]


def check_429(r, max_retry=2):
    p = expect_problem(r, 429, "rate-limited")
    ra = r.headers.get("Retry-After")
    assert ra is not None and ra.isdigit() and 1 <= int(ra) <= max_retry, ra
    return p


def test_burst_then_429_other_key_unaffected(srv):
    a = bearer(KEY_A)
    rs = burst(srv, a, 6)
    codes = [r.status_code for r in rs]
    # 4 from the bucket, maybe one more if a second passed; then refused
    assert codes[:4] == [200] * 4, codes
    assert 429 in codes, codes
    check_429(rs[codes.index(429)])
    # key b has its own bucket
    assert [r.status_code for r in burst(srv, bearer(KEY_B), 3)] == [200] * 3
    # and key a gets through again once a token is back
    wait_until(lambda: srv.get("/v1/events?limit=1", headers=a).status_code == 200, timeout=10,
               msg="the bucket never refilled")


def test_token_subjects_are_separate_clients(srv):
    t1 = bearer(hs256(claims(sub="sub-one"), SECRET))
    t2 = bearer(hs256(claims(sub="sub-two"), SECRET))
    codes = [r.status_code for r in burst(srv, t1, 8)]
    assert codes.count(429) >= 3, codes
    assert srv.get("/v1/events?limit=1", headers=t2).status_code == 200
    # the same subject with another token shares the bucket
    t1b = bearer(hs256(claims(sub="sub-one", ttl=600), SECRET))
    assert srv.get("/v1/events?limit=1", headers=t1b).status_code == 429


def test_classes_are_separate_and_counted(srv):
    h = bearer(hs256(claims(sub="writer"), SECRET))
    before = srv.metrics(headers=bearer(KEY_B))
    codes = [srv.post("/v1/streams/rl-w", json={"events": [{"type": "T"}]}, headers=h).status_code
             for _ in range(5)]
    assert codes[:2] == [201, 201] and codes.count(429) >= 2, codes
    # reads of the same client still pass: another class
    assert srv.get("/v1/events?limit=1", headers=h).status_code == 200
    after = srv.metrics(headers=bearer(KEY_B))
    assert after.sum("chronicle_rate_limited_total", **{"class": "write"}) - \
        before.sum("chronicle_rate_limited_total", **{"class": "write"}) == codes.count(429)


def test_health_is_never_limited(srv):
    for _ in range(20):
        assert srv.get("/health").status_code == 200


def test_logins_are_limited_per_address():
    env = {"JWT_SECRET": SECRET, "TEST_REPORTING_KEY": "r" * 24, "RATE_LIMIT_AUTH": "0.2/3"}
    with running_server(args=("--app", APP), env=env, name="rl-login") as s:
        codes = [s.post("/v1/auth/login", json={"email": "x@example.com", "password": "wrong-password"}).status_code
                 for _ in range(5)]
        assert codes[:3] == [401] * 3 and codes[3:] == [429, 429], codes
        r = s.post("/v1/auth/refresh", json={"refresh_token": "x" * 43})
        check_429(r, max_retry=5)  # 0.2 tokens a second
        # other routes are not in the auth class
        assert s.get("/health").status_code == 200
        assert s.metrics(headers=bearer("r" * 24)).sum("chronicle_rate_limited_total", **{"class": "auth"}) == 3


def test_bad_rate_configuration_is_refused():
    assert "RATE_LIMIT_READ" in start_fails({"RATE_LIMIT_READ": "fast"})
