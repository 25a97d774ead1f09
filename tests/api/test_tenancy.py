"""
test_tenancy.py - the isolation suite: two tenants, each with users
(JWTs carrying tenant_id, a named API key bound to a tenant) and data in
tenant-scoped entities (tests/api/apps/tenancy.json). Every route -
generated and app routes, list filters and sorts, get with ?at= and
?version=, history, custom commands, upserts, deletes, refs, unique values,
the feed (/v1/events and SSE) and raw streams - is attempted across tenants
and must reveal and change nothing. Attempts to set tenant_id in bodies,
filters, sorts, keys and headers are refused. API_SECRET keeps full access
and may act in one tenant with X-Tenant-Id. Contract: docs/security.md.
"""

import json
import os

import pytest

from conftest import SSE, TMP_ROOT, expect_json, expect_problem, running_server
from jwt_helpers import claims, hs256

SECRET = "jwt-secret-for-tenancy-tests-0123456789"
ADMIN = {"Authorization": "Bearer admin-secret"}
KEY_A = "tenant-a-api-key-0123456789abcdef"
APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps", "tenancy.json")
MISSING = "01a20000-0000-7000-8000-000000000000"


@pytest.fixture(scope="module")
def srv():
    os.makedirs(TMP_ROOT, exist_ok=True)
    kf = os.path.join(TMP_ROOT, f"tenancy-keys-{os.getpid()}.json")
    with open(kf, "w") as f:
        json.dump({"keys": [{"name": "a-reporting", "key": KEY_A, "tenant_id": "t-a"}]}, f)
    env = {"API_SECRET": "admin-secret", "JWT_SECRET": SECRET, "API_KEYS_FILE": kf}
    with running_server(args=["--app", APP], env=env, name="tenancy") as s:
        yield s


def tok(sub, tenant, *roles):
    return {"Authorization": f"Bearer {hs256(claims(sub=sub, tenant_id=tenant, roles=list(roles) or None), SECRET)}"}


A, A2, B = tok("alice", "t-a"), tok("anna", "t-a"), tok("bob", "t-b")
A_KEY = {"Authorization": f"Bearer {KEY_A}"}
NO_TENANT = tok("drifter", None)


def head(srv):
    return srv.head_position(headers=ADMIN)


def feed(srv, headers, after=0):
    """Every event visible to headers after `after`, paging until the head."""
    out = []
    while True:
        body = expect_json(srv.get("/v1/events", params={"after": after, "limit": 50}, headers=headers), 200)
        out.extend(body["events"])
        if body["next_after"] >= body["head"]:
            return out
        after = body["next_after"]


@pytest.fixture(scope="module")
def world(srv):
    """Each tenant's projects and tasks, and a global catalog item."""
    expect_json(srv.post("/v1/catalog", json={"sku": "widget", "label": "Widget"}, headers=ADMIN), 201)
    w = {}
    for name, who in (("a", A), ("b", B)):
        p1 = expect_json(srv.post("/v1/projects", json={"name": f"{name} one", "code": "SAME", "sku": "widget"},
                                  headers=who), 201)
        p2 = expect_json(srv.post("/api/projects", json={"name": f"{name} two", "code": f"{name.upper()}-2"},
                                  headers=who), 201)
        t1 = expect_json(srv.post("/v1/tasks", json={"project_id": p1["id"], "title": "ship"}, headers=who), 201)
        expect_json(srv.request("PATCH", f"/v1/projects/{p1['id']}", json={"name": f"{name} one!"}, headers=who), 200)
        w[name] = {"p1": p1["id"], "p2": p2["id"], "t1": t1["id"], "who": who}
    return w


def snapshot(srv, w):
    """Everything both tenants hold, as the operator sees it."""
    return {k: expect_json(srv.get(f"/v1/{k}", params={"limit": 1000}, headers=ADMIN), 200)
            for k in ("projects", "tasks", "catalog")}


# ---- rows carry their tenant ---------------------------------------------------------


def test_rows_get_the_callers_tenant(srv, world):
    pa = expect_json(srv.get(f"/v1/projects/{world['a']['p1']}", headers=A), 200)
    assert pa["tenant_id"] == "t-a" and pa["code"] == "SAME" and pa["name"] == "a one!"
    pb = expect_json(srv.get(f"/v1/projects/{world['b']['p1']}", headers=B), 200)
    assert pb["tenant_id"] == "t-b" and pb["code"] == "SAME"
    # a colleague and the tenant's API key see the same rows
    assert expect_json(srv.get(f"/v1/projects/{world['a']['p1']}", headers=A2), 200) == pa
    assert expect_json(srv.get(f"/v1/projects/{world['a']['p1']}", headers=A_KEY), 200) == pa
    # events of tenant-scoped entities carry the tenant in data (create) and metadata (all)
    hist = expect_json(srv.get(f"/v1/projects/{world['a']['p1']}/history", headers=A), 200)
    assert [e["type"] for e in hist] == ["ProjectsCreated", "ProjectsUpdated"]
    assert hist[0]["data"]["tenant_id"] == "t-a"
    assert all(e["metadata"] == {"tenant_id": "t-a"} for e in hist)


# ---- reads ----------------------------------------------------------------------------


def test_lists_are_confined(srv, world):
    for name, who, other in (("a", A, "b"), ("b", B, "a")):
        for path in ("/v1/projects", "/api/projects", "/api/open-projects"):
            got = expect_json(srv.get(path, headers=who), 200)
            assert {p["tenant_id"] for p in got} == {f"t-{name}"}, path
            assert sorted(p["id"] for p in got) == sorted([world[name]["p1"], world[name]["p2"]]), path
        tasks = expect_json(srv.get("/v1/tasks", headers=who), 200)
        assert [t["id"] for t in tasks] == [world[name]["t1"]]
        # filters cannot reach the other tenant's rows, whatever they name
        for params in ({"id": world[other]["p1"]}, {"code": "SAME"}, {"id": f"in.{world['a']['p1']},{world['b']['p1']}"},
                       {"name": f"like.{other}%"}, {"sort": "-created_at", "limit": 1000}):
            got = expect_json(srv.get("/v1/projects", params=params, headers=who), 200)
            assert all(p["tenant_id"] == f"t-{name}" for p in got), params
        assert expect_json(srv.get("/v1/tasks", params={"project_id": world[other]["p1"]}, headers=who), 200) == []


def test_paging_stays_in_the_tenant(srv, world):
    made = [expect_json(srv.post("/v1/projects", json={"name": f"page {i}", "code": f"PG-{i}"}, headers=B), 201)["id"]
            for i in range(5)]
    seen, url = [], "/v1/projects?limit=2"
    while url:
        r = srv.get(url, headers=B)
        seen += [p["id"] for p in expect_json(r, 200)]
        link = r.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    assert sorted(seen) == sorted(made + [world["b"]["p1"], world["b"]["p2"]])


def test_single_reads_of_the_other_tenant_are_404_like_missing_keys(srv, world):
    before = head(srv)
    for key in (world["b"]["p1"], MISSING):
        for path in (f"/v1/projects/{key}", f"/api/projects/{key}", f"/v1/projects/{key}?version=1",
                     f"/v1/projects/{key}?at=2100-01-01T00:00:00Z", f"/v1/projects/{key}/history",
                     f"/api/projects/{key}/history", f"/v1/streams/projects-{key}"):
            r = srv.get(path, headers=A)
            body = expect_problem(r, 404, "not-found")
            assert "t-b" not in r.text and "b one" not in r.text, path
            assert body["detail"] in (f"projects {key} does not exist", f"projects {key} has no history",
                                      f"stream \"projects-{key}\" has no events"), body
    assert head(srv) == before


# ---- writes -----------------------------------------------------------------------------


def test_writes_across_tenants_change_nothing(srv, world):
    before_head, before = head(srv), snapshot(srv, world)
    pb, tb = world["b"]["p1"], world["b"]["t1"]
    attempts = [
        ("PATCH", f"/v1/projects/{pb}", {"name": "owned"}, 404),
        ("PATCH", f"/api/projects/{pb}", {"name": "owned"}, 404),
        ("DELETE", f"/v1/projects/{pb}", None, 404),
        ("DELETE", f"/api/projects/{pb}", None, 404),
        ("POST", f"/v1/projects/{pb}/close", None, 404),
        ("POST", f"/api/projects/{pb}/close", None, 404),
        ("PATCH", f"/v1/tasks/{tb}", {"title": "x"}, 404),
        ("DELETE", f"/v1/tasks/{tb}", None, 404),
        # an upsert onto the other tenant's key is refused like one onto a new key
        ("PUT", f"/v1/projects/{pb}", {"name": "x", "code": "X"}, 422),
        ("PUT", f"/api/projects/{pb}", {"name": "x", "code": "X"}, 422),
        ("PUT", f"/v1/projects/{MISSING}", {"name": "x", "code": "X"}, 422),
        # refs never cross: the other tenant's project is as unknown as a missing one
        ("POST", "/v1/tasks", {"project_id": pb, "title": "sneaky"}, 422),
        ("POST", "/v1/tasks", {"project_id": MISSING, "title": "sneaky"}, 422),
        ("PATCH", f"/v1/tasks/{world['a']['t1']}", {"project_id": pb}, 422),
    ]
    for method, path, body, status in attempts:
        r = srv.request(method, path, json=body, headers=A)
        assert r.status_code == status, (method, path, r.text)
        assert "t-b" not in r.text and "b one" not in r.text, (method, path, r.text)
    # If-Match does not reveal the version of a hidden row
    r = srv.request("PATCH", f"/v1/projects/{pb}", json={"name": "x"}, headers={**A, "If-Match": '"2"'})
    assert expect_problem(r, 412, "precondition-failed")["detail"] == \
        f"If-Match: projects {pb} does not exist (version 0); expected 2"
    assert head(srv) == before_head
    assert snapshot(srv, world) == before
    # the messages for the two unknown refs are the same
    r1 = srv.post("/v1/tasks", json={"project_id": pb, "title": "s"}, headers=A).json()
    r2 = srv.post("/v1/tasks", json={"project_id": MISSING, "title": "s"}, headers=A).json()
    assert r1["errors"] == [{"field": "project_id", "message": f'projects "{pb}" does not exist'}]
    assert r2["errors"] == [{"field": "project_id", "message": f'projects "{MISSING}" does not exist'}]


def test_unique_values_are_per_tenant(srv, world):
    # both tenants hold code SAME (world); within a tenant it is taken
    body = expect_problem(srv.post("/v1/projects", json={"name": "dup", "code": "SAME"}, headers=A), 409, "conflict")
    assert body["detail"] == "code: another projects already has this value"
    # composite uniqueness, per tenant too
    expect_problem(srv.post("/v1/tasks", json={"project_id": world["a"]["p1"], "title": "ship"}, headers=A),
                   409, "conflict")
    t = expect_json(srv.post("/v1/tasks", json={"project_id": world["a"]["p2"], "title": "ship"}, headers=A), 201)
    assert t["tenant_id"] == "t-a"


def test_refs_to_global_entities_work_from_any_tenant(srv, world):
    p = expect_json(srv.post("/v1/projects", json={"name": "g", "code": "G-1", "sku": "widget"}, headers=B), 201)
    assert p["sku"] == "widget"
    expect_problem(srv.post("/v1/projects", json={"name": "g", "code": "G-2", "sku": "nope"}, headers=B),
                   422, "validation")


def test_commands_in_the_own_tenant(srv, world):
    p = expect_json(srv.post("/v1/projects", json={"name": "c", "code": "CMD-1"}, headers=A), 201)
    closed = expect_json(srv.post(f"/api/projects/{p['id']}/close", headers=A2), 200)
    assert closed["status"] == "closed" and closed["version"] == 2
    assert p["id"] not in [x["id"] for x in expect_json(srv.get("/api/open-projects", headers=A), 200)]
    expect_problem(srv.post(f"/api/projects/{p['id']}/close", headers=A), 409, "conflict")
    replaced = expect_json(srv.request("PUT", f"/api/projects/{p['id']}", json={"name": "c2", "code": "CMD-1"},
                                       headers=A), 200)
    assert replaced["tenant_id"] == "t-a" and replaced["name"] == "c2"


# ---- naming a tenant ------------------------------------------------------------------------


def test_tenant_id_cannot_be_set_or_queried(srv, world):
    before = head(srv)
    body = expect_problem(srv.post("/v1/projects", json={"name": "x", "code": "TID", "tenant_id": "t-b"}, headers=A),
                          422, "validation")
    assert body["errors"] == [{"field": "tenant_id", "message": "is read-only"}]
    body = expect_problem(srv.request("PATCH", f"/v1/projects/{world['a']['p1']}", json={"tenant_id": "t-b"},
                                      headers=A), 422, "validation")
    assert body["errors"] == [{"field": "tenant_id", "message": "is read-only"}]
    expect_problem(srv.request("PUT", f"/v1/projects/{world['a']['p1']}",
                               json={"name": "x", "code": "SAME", "tenant_id": "t-b"}, headers=A), 422, "validation")
    # keys are the server's: a client key could collide with (and so reveal) another tenant's
    body = expect_problem(srv.post("/v1/projects", json={"id": world["b"]["p1"], "name": "x", "code": "K"},
                                   headers=A), 422, "validation")
    assert body["detail"] == "id: keys of tenant-scoped projects are generated by the server; create without one"
    expect_problem(srv.post("/v1/projects", json={"id": "my-own-key", "name": "x", "code": "K"}, headers=A),
                   422, "validation")
    for params in ({"tenant_id": "t-b"}, {"tenant_id": "t-a"}, {"sort": "tenant_id"}):
        expect_problem(srv.get("/v1/projects", params=params, headers=A), 400, "bad-request")
    # X-Tenant-Id is only the operator's
    expect_problem(srv.get("/v1/projects", headers={**A, "X-Tenant-Id": "t-b"}), 403, "forbidden")
    assert len(expect_json(srv.get("/v1/projects", headers={**A, "X-Tenant-Id": "t-a"}), 200)) >= 2
    assert head(srv) == before


def test_callers_without_a_tenant_get_nothing_scoped(srv, world):
    before = head(srv)
    for method, path, body in (("GET", "/v1/projects", None), ("GET", f"/v1/projects/{world['a']['p1']}", None),
                               ("POST", "/v1/projects", {"name": "x", "code": "NT"}),
                               ("GET", f"/v1/projects/{world['a']['p1']}/history", None)):
        p = expect_problem(srv.request(method, path, json=body, headers=NO_TENANT), 403, "forbidden")
        assert p["detail"] == "projects belongs to tenants and the caller's credential names no tenant"
    # global entities stay open to them
    assert [c["sku"] for c in expect_json(srv.get("/v1/catalog", headers=NO_TENANT), 200)] == ["widget"]
    assert head(srv) == before


def test_api_secret_sees_all_and_acts_in_a_tenant(srv, world):
    everything = expect_json(srv.get("/v1/projects", params={"limit": 1000}, headers=ADMIN), 200)
    assert {"t-a", "t-b"} <= {p["tenant_id"] for p in everything}
    only_b = expect_json(srv.get("/v1/projects", params={"limit": 1000}, headers={**ADMIN, "X-Tenant-Id": "t-b"}), 200)
    assert {p["tenant_id"] for p in only_b} == {"t-b"}
    expect_problem(srv.get(f"/v1/projects/{world['a']['p1']}", headers={**ADMIN, "X-Tenant-Id": "t-b"}),
                   404, "not-found")
    body = expect_problem(srv.post("/v1/projects", json={"name": "x", "code": "OP"}, headers=ADMIN), 422, "validation")
    assert body["errors"][0]["field"] == "tenant_id"
    made = expect_json(srv.post("/v1/projects", json={"name": "x", "code": "OP"},
                                headers={**ADMIN, "X-Tenant-Id": "t-c"}), 201)
    assert made["tenant_id"] == "t-c"
    assert made["id"] not in [p["id"] for p in expect_json(srv.get("/v1/projects", headers=A), 200)]
    expect_problem(srv.get("/v1/projects", headers={**ADMIN, "X-Tenant-Id": "bad\u0001"}), 400, "bad-request")


# ---- the log ---------------------------------------------------------------------------------


def test_feed_shows_each_tenant_only_its_events(srv, world):
    for name, who in (("a", A), ("b", B)):
        events = feed(srv, who)
        assert events, name
        # the tenant's own events, and those of global entities (catalog) its rules admit
        assert all(e["metadata"] == {"tenant_id": f"t-{name}"} or e["stream"].startswith("catalog-")
                   for e in events), name
        streams = {e["stream"] for e in events}
        assert f"projects-{world[name]['p1']}" in streams
        other = "b" if name == "a" else "a"
        assert f"projects-{world[other]['p1']}" not in streams
    # the catalog (global, history "authenticated") shows to everyone; the operator sees everything
    assert any(e["stream"] == "catalog-widget" for e in feed(srv, NO_TENANT))
    assert not any(e["stream"].startswith("projects-") for e in feed(srv, NO_TENANT))
    all_streams = {e["stream"] for e in feed(srv, ADMIN)}
    assert {f"projects-{world['a']['p1']}", f"projects-{world['b']['p1']}"} <= all_streams


def test_live_feed_skips_other_tenants(srv, world):
    start = head(srv)
    with SSE(srv.url + "/v1/events", params={"after": start}, headers=A) as sub:
        pb = expect_json(srv.post("/v1/projects", json={"name": "live b", "code": "LIVE-B"}, headers=B), 201)
        pa = expect_json(srv.post("/v1/projects", json={"name": "live a", "code": "LIVE-A"}, headers=A), 201)
        e = sub.next_event()
        assert e["json"]["stream"] == f"projects-{pa['id']}", e
        assert e["json"]["metadata"] == {"tenant_id": "t-a"}
        assert pb["id"] not in e["data"]


def test_raw_streams_are_namespaced_per_tenant(srv, world):
    ra = expect_json(srv.append("orders", [{"type": "OrderPlaced", "data": {"n": 1},
                                             "metadata": {"tenant_id": "t-b", "via": "a"}}], headers=A), 201)
    rb = expect_json(srv.append("orders", [{"type": "OrderPlaced", "data": {"n": 2}}], headers=B), 201)
    assert ra["stream"] == "t-a:orders" and rb["stream"] == "t-b:orders"
    assert ra["version"] == 1 and rb["version"] == 1  # two streams: versions do not interfere
    got_a = expect_json(srv.get("/v1/streams/orders", headers=A), 200)
    assert [(e["data"], e["metadata"]) for e in got_a["events"]] == [({"n": 1}, {"tenant_id": "t-a", "via": "a"})]
    assert expect_json(srv.get("/v1/streams/t-a:orders", headers=A2), 200)["events"] == got_a["events"]
    # the other tenant's stream is not reachable, not even by its full name
    expect_problem(srv.get("/v1/streams/t-b:orders", headers=A), 404, "not-found")
    # the forged tag did not reach B's feed
    assert not any(e["stream"] == "t-a:orders" for e in feed(srv, B))
    assert any(e["stream"] == "t-b:orders" for e in feed(srv, B))
    # entity streams stay closed to raw writes
    expect_problem(srv.append(f"projects-{world['b']['p1']}", [{"type": "X", "data": {}}], headers=A),
                   422, "validation")
    # a caller without a tenant may not write into tenants' names; the operator may
    expect_problem(srv.append("t-a:orders", [{"type": "X", "data": {}}], headers=NO_TENANT), 403, "forbidden")
    expect_json(srv.append("plain-log", [{"type": "X", "data": {}}], headers=NO_TENANT), 201)
    assert [e["version"] for e in expect_json(srv.get("/v1/streams/t-a:orders", headers=ADMIN), 200)["events"]] == [1]
