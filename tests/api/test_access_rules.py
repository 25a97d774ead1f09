"""
test_access_rules.py - the access rules of an app definition (tests/api/
apps/access.json), each rule kind allowed and denied, on generated and app
routes: `public` (no credential needed), `authenticated` (the default),
`role:<name>`, `owner:<field>` (a field or the key equal to the caller's
sub) and any-of arrays. Reads filtered by owner rules return only the
caller's rows (lists) or 404 (get, history, ?at=, ?version=), the same 404
as for a key that does not exist; refused writes change nothing; API_SECRET
keeps full access. Contract: docs/security.md, docs/app-definition.md.
"""

import os

import pytest

from conftest import expect_json, expect_problem, running_server
from jwt_helpers import claims, hs256

SECRET = "jwt-secret-for-access-tests-0123456789"
ADMIN = {"Authorization": "Bearer admin-secret"}
APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps", "access.json")


@pytest.fixture(scope="module")
def srv():
    env = {"API_SECRET": "admin-secret", "JWT_SECRET": SECRET}
    with running_server(args=["--app", APP], env=env, name="access") as s:
        yield s


def tok(sub, *roles, tenant=None):
    c = claims(sub=sub, roles=list(roles) if roles else None, tenant_id=tenant)
    return {"Authorization": f"Bearer {hs256(c, SECRET)}"}


def head(srv):
    return srv.head_position(headers=ADMIN)


def post_as(srv, who, title="A post", **extra):
    return expect_json(srv.post("/v1/posts", json={"title": title, **extra}, headers=who), 201)


# ---- public -------------------------------------------------------------------


def test_public_reads_need_no_credential(srv):
    p = post_as(srv, tok("alice"))
    assert expect_json(srv.get(f"/v1/posts/{p['id']}"), 200) == p
    assert p in expect_json(srv.get("/v1/posts", params={"limit": 1000}), 200)
    # and a public route ignores the Authorization header entirely
    assert expect_json(srv.get(f"/v1/posts/{p['id']}", headers={"Authorization": "Bearer nonsense"}), 200) == p


def test_public_create_route(srv):
    acc = expect_json(srv.post("/signup", json={"handle": "pub-" + os.urandom(4).hex()}), 201)
    assert acc["bio"] is None


# ---- authenticated (also the default) ------------------------------------------


def test_default_is_authenticated_for_everything(srv):
    before = head(srv)
    for method, path, body in (("GET", "/v1/plain", None), ("POST", "/v1/plain", {"name": "x"}),
                               ("GET", "/v1/plain/k", None), ("PATCH", "/v1/plain/k", {"name": "y"}),
                               ("PUT", "/v1/plain/k", {"name": "y"}), ("DELETE", "/v1/plain/k", None),
                               ("GET", "/v1/plain/k/history", None)):
        expect_problem(srv.request(method, path, json=body), 401, "unauthorized")
    assert head(srv) == before
    who = tok("anyone")
    row = expect_json(srv.post("/v1/plain", json={"name": "x"}, headers=who), 201)
    assert expect_json(srv.get(f"/v1/plain/{row['id']}", headers=who), 200) == row
    assert expect_json(srv.request("PATCH", f"/v1/plain/{row['id']}", json={"name": "y"}, headers=who),
                       200)["name"] == "y"
    assert len(expect_json(srv.get(f"/v1/plain/{row['id']}/history", headers=who), 200)) == 2
    expect_json(srv.request("DELETE", f"/v1/plain/{row['id']}", headers=who), 200)


def test_authenticated_history(srv):
    p = post_as(srv, tok("alice"))
    expect_problem(srv.get(f"/v1/posts/{p['id']}/history"), 401, "unauthorized")
    hist = expect_json(srv.get(f"/v1/posts/{p['id']}/history", headers=tok("someone-else")), 200)
    assert [e["type"] for e in hist] == ["PostsCreated"]


# ---- role ------------------------------------------------------------------------


def test_role_rules(srv):
    p = post_as(srv, tok("alice"))
    path = f"/v1/posts/{p['id']}"
    before = head(srv)
    # delete: role:admin; the author without it is refused
    for who in (tok("alice"), tok("bob", "editor")):
        body = expect_problem(srv.request("DELETE", path, headers=who), 403, "forbidden")
        assert body["detail"] == "the caller's credential does not allow delete of posts"
    expect_problem(srv.request("DELETE", path), 401, "unauthorized")
    # feature: role:editor, on /v1 and on the app route
    expect_problem(srv.post(path + "/feature", headers=tok("alice")), 403, "forbidden")
    expect_problem(srv.post(f"/api/posts/{p['id']}/feature", headers=tok("alice", "viewer")), 403, "forbidden")
    assert head(srv) == before
    featured = expect_json(srv.post(f"/api/posts/{p['id']}/feature", headers=tok("bob", "editor")), 200)
    assert featured["featured"] is True
    deleted = expect_json(srv.request("DELETE", path, headers=tok("root", "admin", "other")), 200)
    assert deleted["version"] == 3
    expect_problem(srv.get(path), 404, "not-found")


# ---- owner ------------------------------------------------------------------------


def test_owner_create_fills_in_and_refuses_others(srv):
    p = post_as(srv, tok("alice"))
    assert p["author"] == "alice"
    before = head(srv)
    body = expect_problem(srv.post("/v1/posts", json={"title": "x", "author": "bob"}, headers=tok("alice")),
                          403, "forbidden")
    assert body["detail"] == "author: must be the caller's own subject (access rule owner:author)"
    expect_problem(srv.post("/api/posts", json={"title": "x", "author": "bob"}, headers=tok("alice")),
                   403, "forbidden")
    assert head(srv) == before
    # an editor is admitted by role, not as owner: may not create (create is owner-only) for others
    expect_problem(srv.post("/v1/posts", json={"title": "x", "author": "alice"}, headers=tok("bob", "editor")),
                   403, "forbidden")
    # naming oneself is fine
    assert post_as(srv, tok("carol"), author="carol")["author"] == "carol"


def test_owner_or_role_update_and_owner_only_command(srv):
    p = post_as(srv, tok("alice"))
    path = f"/v1/posts/{p['id']}"
    before = head(srv)
    # visible to everyone (public get), so a refused write says 403, not 404
    body = expect_problem(srv.request("PATCH", path, json={"title": "mine now"}, headers=tok("mallory")),
                          403, "forbidden")
    assert body["detail"] == f"only the author of posts {p['id']} may do this"
    # the owner may not give the row away
    expect_problem(srv.request("PATCH", path, json={"author": "bob"}, headers=tok("alice")), 403, "forbidden")
    assert head(srv) == before
    assert expect_json(srv.request("PATCH", path, json={"title": "t2"}, headers=tok("alice")), 200)["version"] == 2
    assert expect_json(srv.request("PATCH", path, json={"title": "t3"}, headers=tok("ed", "editor")),
                       200)["version"] == 3
    expect_json(srv.post(path + "/feature", headers=tok("ed", "editor")), 200)
    expect_problem(srv.post(path + "/unfeature", headers=tok("ed", "editor")), 403, "forbidden")
    assert expect_json(srv.post(path + "/unfeature", headers=tok("alice")), 200)["featured"] is False


def test_owner_reads_show_only_own_rows(srv):
    a, b = tok("diary-a"), tok("diary-b")
    da = [expect_json(srv.post("/v1/diaries", json={"owner": "diary-a", "text": f"a{i}"}, headers=a), 201)
          for i in range(3)]
    db = expect_json(srv.post("/v1/diaries", json={"owner": "diary-b", "text": "b"}, headers=b), 201)
    # create is "authenticated": writing a row owned by someone else is allowed, reading it back is not
    gift = expect_json(srv.post("/v1/diaries", json={"owner": "diary-b", "text": "from a"}, headers=a), 201)

    mine = expect_json(srv.get("/v1/diaries", params={"sort": "text"}, headers=a), 200)
    assert mine == da
    assert expect_json(srv.get("/api/diaries", headers=b), 200) == sorted([db, gift], key=lambda d: d["id"])
    # filters narrow, never widen
    assert expect_json(srv.get("/v1/diaries", params={"owner": "diary-b"}, headers=a), 200) == []
    assert expect_json(srv.get("/v1/diaries", params={"owner": "in.diary-a,diary-b"}, headers=a),
                       200) == sorted(da, key=lambda d: d["id"])
    # paging stays within the caller's rows
    page = srv.get("/v1/diaries", params={"limit": 2}, headers=a)
    first = expect_json(page, 200)
    link = page.headers["Link"]
    rest = expect_json(srv.get(link[1:link.index(">")], headers=a), 200)
    assert sorted(d["id"] for d in first + rest) == sorted(d["id"] for d in da)
    # no credential: 401, a credential without rows: []
    expect_problem(srv.get("/v1/diaries"), 401, "unauthorized")
    assert expect_json(srv.get("/v1/diaries", headers=tok("nobody")), 200) == []


def test_hidden_rows_are_404_exactly_like_missing_ones(srv):
    a, b = tok("hide-a"), tok("hide-b")
    d = expect_json(srv.post("/v1/diaries", json={"owner": "hide-a", "text": "secret"}, headers=a), 201)
    expect_json(srv.request("PATCH", f"/v1/diaries/{d['id']}", json={"text": "secret 2"}, headers=a), 200)
    missing = "01a20000-0000-7000-8000-000000000000"
    before = head(srv)
    for key in (d["id"], missing):
        reqs = [("GET", f"/v1/diaries/{key}", None), ("GET", f"/api/diaries/{key}", None),
                ("GET", f"/v1/diaries/{key}?version=1", None),
                ("GET", f"/v1/diaries/{key}?at=2100-01-01T00:00:00Z", None),
                ("GET", f"/v1/diaries/{key}/history", None),
                ("PATCH", f"/v1/diaries/{key}", {"text": "x"}), ("PATCH", f"/api/diaries/{key}", {"text": "x"}),
                ("DELETE", f"/v1/diaries/{key}", None)]
        for method, path, body in reqs:
            r = srv.request(method, path, json=body, headers=b)
            p = expect_problem(r, 404, "not-found")
            assert key in p["detail"] and "hide-a" not in r.text and "secret" not in r.text, (path, r.text)
            # If-Match on a hidden row does not reveal its version either
        r = srv.request("PATCH", f"/v1/diaries/{key}", json={"text": "x"}, headers={**b, "If-Match": '"2"'})
        p = expect_problem(r, 412, "precondition-failed")
        assert "version 0" in p["detail"], p
    assert head(srv) == before
    # the owner still sees all of it
    assert expect_json(srv.get(f"/v1/diaries/{d['id']}?version=1", headers=a), 200)["text"] == "secret"
    assert len(expect_json(srv.get(f"/v1/diaries/{d['id']}/history", headers=a), 200)) == 2


def test_owner_by_key(srv):
    handle = "acct-" + os.urandom(4).hex()
    expect_json(srv.post("/signup", json={"handle": handle}), 201)
    me = tok(handle)
    assert expect_json(srv.get(f"/v1/accounts/{handle}", headers=me), 200)["handle"] == handle
    expect_problem(srv.get(f"/v1/accounts/{handle}", headers=tok("someone")), 404, "not-found")
    assert expect_json(srv.get(f"/v1/accounts/{handle}", headers=tok("root", "admin")), 200)["handle"] == handle
    expect_problem(srv.get("/v1/accounts", headers=me), 403, "forbidden")
    assert handle in [x["handle"] for x in expect_json(srv.get("/v1/accounts", params={"limit": 1000},
                                                               headers=tok("root", "admin")), 200)]
    assert expect_json(srv.request("PATCH", f"/v1/accounts/{handle}", json={"bio": "hi"}, headers=me),
                       200)["bio"] == "hi"
    expect_problem(srv.request("PATCH", f"/v1/accounts/{handle}", json={"bio": "x"}, headers=tok("root", "admin")),
                   403, "forbidden")  # readable by admin, not writable: 403


# ---- full access ----------------------------------------------------------------------


def test_api_secret_has_full_access(srv):
    d = expect_json(srv.post("/v1/diaries", json={"owner": "full-x", "text": "t"}, headers=tok("full-x")), 201)
    assert d in expect_json(srv.get("/v1/diaries", params={"limit": 1000}, headers=ADMIN), 200)
    assert expect_json(srv.get(f"/v1/diaries/{d['id']}", headers=ADMIN), 200) == d
    p = expect_json(srv.post("/v1/posts", json={"title": "by operator", "author": "whoever"}, headers=ADMIN), 201)
    assert p["author"] == "whoever"
    expect_json(srv.post(f"/v1/posts/{p['id']}/feature", headers=ADMIN), 200)
    expect_json(srv.request("DELETE", f"/v1/posts/{p['id']}", headers=ADMIN), 200)


def test_rules_are_in_openapi_unchanged_and_feed_respects_history_rules(srv):
    # diaries' history is owner-only: their events never show in the log for others
    d = expect_json(srv.post("/v1/diaries", json={"owner": "feed-a", "text": "hidden"}, headers=tok("feed-a")), 201)
    after = head(srv) - 1
    page = expect_json(srv.get("/v1/events", params={"after": after}, headers=tok("feed-b")), 200)
    assert page["events"] == [] and page["next_after"] == after + 1
    page = expect_json(srv.get("/v1/events", params={"after": after}, headers=tok("feed-a")), 200)
    assert page["events"] == []  # owner rules never admit a feed reader: use the history route
    page = expect_json(srv.get("/v1/events", params={"after": after}, headers=ADMIN), 200)
    assert [e["stream"] for e in page["events"]] == [f"diaries-{d['id']}"]
    expect_problem(srv.get(f"/v1/streams/diaries-{d['id']}", headers=tok("feed-b")), 404, "not-found")
    got = expect_json(srv.get(f"/v1/streams/diaries-{d['id']}", headers=tok("feed-a")), 200)
    assert [e["type"] for e in got["events"]] == ["DiariesCreated"]


def test_public_operations_are_still_rate_limited():
    env = {"API_SECRET": "admin-secret", "JWT_SECRET": SECRET, "RATE_LIMIT_READ": "0.001/2"}
    with running_server(args=["--app", APP], env=env, name="access-rl") as s:
        codes = [s.get("/v1/posts").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        # probes stay exempt
        assert [s.get("/health").status_code for _ in range(3)] == [200, 200, 200]


def test_openapi_marks_public_operations(srv):
    doc = expect_json(srv.get("/openapi.json", headers=ADMIN), 200)
    paths = doc["paths"]
    assert paths["/v1/posts"]["get"]["security"] == []
    assert paths["/signup"]["post"]["security"] == []
    assert "security" not in paths["/v1/posts"]["post"]
    assert "security" not in paths["/v1/plain"]["get"]
