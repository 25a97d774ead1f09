"""
Acceptance test of examples/platform: the README's walk-through (signing up
a tenant's first user, logging in, creating a workspace, inviting a member,
reading notifications, another tenant seeing nothing) run as written, in one
shell, against the real binary serving examples/platform/app.json; then the
routes the four former services had, their access rules, the per-module
health checks and the tenancy of every module, checked value by value.

Runs on SQLite (ctest `examples`) and PostgreSQL (`examples_pg`): the
harness picks the backend. Nothing sleeps.
"""

import json
import os
import re
import shutil
import subprocess
import uuid

import pytest

from conftest import (app_server, example_path, expect_json, expect_problem, problem_fields, readme_blocks,
                      same_shape)

APP = example_path("platform", "app.json")
README = example_path("platform", "README.md")
SECRET = "operator-secret"
ENV = {"API_SECRET": SECRET, "JWT_SECRET": "change-me-to-32-random-bytes-or-more", "RATE_LIMIT_AUTH": "off"}
OP = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture(scope="module")
def app():
    srv = app_server(APP, "platform", env=ENV)
    srv.start()
    yield srv
    srv.close()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def as_tenant(tenant):
    return {**OP, "X-Tenant-Id": tenant}


def new_tenant(srv, name="T"):
    tid = "t" + uuid.uuid4().hex[:10]
    expect_json(srv.post("/api/v1/tenants", json={"id": tid, "name": name}, headers=OP), 201)
    return tid


def add_user(srv, tenant, name="U", roles="member", headers=None, password="a long enough password"):
    email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.test"
    body = {"name": name, "email": email, "password": password, "roles": roles}
    user = expect_json(srv.post("/api/v1/users", json=body, headers=headers or as_tenant(tenant)), 201)
    return user, email


def login(srv, tenant, email, password="a long enough password"):
    r = srv.post("/v1/auth/login", json={"tenant_id": tenant, "email": email, "password": password})
    return expect_json(r, 200)["access_token"]


def user_with_token(srv, tenant, name="U", roles="member"):
    user, email = add_user(srv, tenant, name, roles)
    return user, login(srv, tenant, email)


# --------------------------------------------------------------------------
# the README, as written


def test_readme_walk_through(app, tmp_path):
    """Every sh block, in order, in one shell state (variables a block
    exports are there for the next), against a fresh server; each answer
    has the shape of the json block documented after it."""
    assert shutil.which("curl") and shutil.which("sed")
    srv = app_server(APP, "platform-readme", env=ENV)
    srv.start()
    try:
        blocks = readme_blocks(README)
        assert len(blocks) >= 14
        state = tmp_path / "state.sh"
        state.write_text("")
        for script, documented in blocks:
            script = re.sub(r"(localhost|127\.0\.0\.1):80\d\d", f"127.0.0.1:{srv.port}", script)
            full = f"source {state}\nset -e -o pipefail\n{script}\nexport -p > {state}\n"
            p = subprocess.run(["bash", "-c", full], capture_output=True, timeout=30,
                               env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
            assert p.returncode == 0, f"{script}\nfailed: {p.stderr.decode()}"
            out = p.stdout.decode()
            if documented is None:
                continue
            doc, got = json.loads(documented), json.loads(out)
            if isinstance(doc, dict) and str(doc.get("type", "")).startswith("/problems/"):
                assert got.get("type") == doc["type"] and got.get("status") == doc["status"], f"{script}\n{out}"
                assert got.get("detail").split(" ")[0] == doc["detail"].split(" ")[0], f"{script}\n{out}"
            else:
                assert same_shape(doc, got), f"{script}\ndocumented: {documented}\ngot: {out}"
        # what the walk-through left behind, checked by value
        env = dict(line.split("=", 1) for line in
                   re.findall(r'declare -x ((?:ADA|BOB|GUS|WORKSPACE|BOB_ID)="[^"]*")', state.read_text()))
        env = {k: v.strip('"') for k, v in env.items()}
        ws = expect_json(srv.get(f"/api/v1/workspaces/{env['WORKSPACE']}", headers=bearer(env["BOB"])), 200)
        assert ws["name"] == "Launch plan" and ws["tenant_id"] == "acme"
        notes = expect_json(srv.get("/api/v1/notifications", headers=bearer(env["BOB"])), 200)
        assert [(n["read"], n["message"], n["user_id"]) for n in notes] == \
            [(True, "Ada invited you to Launch plan", env["BOB_ID"])]
        members = expect_json(srv.get("/api/v1/memberships", params={"workspace_id": env["WORKSPACE"]},
                                      headers=bearer(env["ADA"])), 200)
        assert [(m["user_id"], m["role"]) for m in members] == [(env["BOB_ID"], "editor")]
        assert expect_json(srv.get("/api/v1/memberships", headers=bearer(env["GUS"])), 200) == []
    finally:
        srv.close()


# --------------------------------------------------------------------------
# tenants: the operator's


def test_tenants_are_the_operators(app):
    tid = new_tenant(app, "Initech")
    got = expect_json(app.get(f"/api/v1/tenants/{tid}", headers=OP), 200)
    assert (got["id"], got["name"], got["plan"]) == (tid, "Initech", "free")
    assert "tenant_id" not in got  # tenants are not tenant-scoped
    _, token = user_with_token(app, tid, "Admin", roles="admin")
    # a tenant's own admin is not the platform's
    for method, path, body in (("GET", "/api/v1/tenants", None), ("GET", f"/api/v1/tenants/{tid}", None),
                               ("POST", "/api/v1/tenants", {"id": "mine", "name": "x"}),
                               ("PATCH", f"/api/v1/tenants/{tid}", {"plan": "enterprise"}),
                               ("DELETE", f"/api/v1/tenants/{tid}", None)):
        expect_problem(app.request(method, path, json=body, headers=bearer(token)), 403, "forbidden")
    assert expect_json(app.get(f"/api/v1/tenants/{tid}", headers=OP), 200)["plan"] == "free"
    expect_problem(app.get("/api/v1/tenants"), 401, "unauthorized")
    changed = expect_json(app.request("PATCH", f"/api/v1/tenants/{tid}", json={"plan": "team"}, headers=OP), 200)
    assert changed["plan"] == "team" and changed["version"] == 2


# --------------------------------------------------------------------------
# users


def test_users_admins_manage_members_rename_themselves(app):
    tid = new_tenant(app)
    admin, admin_tok = user_with_token(app, tid, "Admin", roles="admin")
    member, member_tok = user_with_token(app, tid, "Member")
    assert member["roles"] == "member" and member["tenant_id"] == tid
    assert "password" not in member
    # colleagues see each other, sorted by name
    names = [u["name"] for u in expect_json(app.get("/api/v1/users", headers=bearer(member_tok)), 200)]
    assert names == ["Admin", "Member"]
    # a member cannot add users or make themselves admin
    expect_problem(app.post("/api/v1/users", json={"name": "X", "email": "x@example.test", "password": "pppppppppp"},
                            headers=bearer(member_tok)), 403, "forbidden")
    expect_problem(app.request("PATCH", f"/api/v1/users/{member['user_id']}", json={"roles": "admin"},
                               headers=bearer(member_tok)), 403, "forbidden")
    # but may rename themselves, and not others
    renamed = expect_json(app.post(f"/api/v1/users/{member['user_id']}/rename", json={"name": "Mem"},
                                   headers=bearer(member_tok)), 200)
    assert renamed["name"] == "Mem" and renamed["roles"] == "member"
    body = expect_problem(app.post(f"/api/v1/users/{admin['user_id']}/rename", json={"name": "Pwned"},
                                   headers=bearer(member_tok)), 403, "forbidden")
    assert body["detail"] == f"only the user_id of users {admin['user_id']} may do this"
    # the admin promotes, then removes
    promoted = expect_json(app.request("PATCH", f"/api/v1/users/{member['user_id']}", json={"roles": "admin"},
                                       headers=bearer(admin_tok)), 200)
    assert promoted["roles"] == "admin"
    expect_json(app.request("DELETE", f"/api/v1/users/{member['user_id']}", headers=bearer(admin_tok)), 200)
    # the removed user's token is worth nothing
    expect_problem(app.get("/api/v1/users", headers=bearer(member_tok)), 401, "unauthorized")


def test_same_email_in_two_tenants_and_logins_per_tenant(app):
    a, b = new_tenant(app), new_tenant(app)
    body = {"name": "Sam", "email": "sam@shared.example", "password": "password of tenant a"}
    expect_json(app.post("/api/v1/users", json=body, headers=as_tenant(a)), 201)
    # unique per tenant: a second one in a is refused, one in b is fine
    expect_problem(app.post("/api/v1/users", json=body, headers=as_tenant(a)), 409, "conflict")
    expect_json(app.post("/api/v1/users", json={**body, "password": "password of tenant b"},
                         headers=as_tenant(b)), 201)
    ta = login(app, a, "sam@shared.example", "password of tenant a")
    tb = login(app, b, "sam@shared.example", "password of tenant b")
    # each password works only in its tenant; a login without a tenant fails like a wrong password
    for tenant, pw in ((a, "password of tenant b"), (b, "password of tenant a"), (None, "password of tenant a")):
        r = app.post("/v1/auth/login", json={**({"tenant_id": tenant} if tenant else {}),
                                             "email": "sam@shared.example", "password": pw})
        expect_problem(r, 401, "unauthorized")
    # a refreshed token keeps the tenant
    r = app.post("/v1/auth/login", json={"tenant_id": b, "email": "sam@shared.example", "password": "password of tenant b"})
    refreshed = expect_json(app.post("/v1/auth/refresh", json={"refresh_token": expect_json(r, 200)["refresh_token"]}),
                            200)["access_token"]
    me = expect_json(app.get("/v1/auth/me", headers=bearer(refreshed)), 200)
    assert (me["kind"], me["tenant_id"]) == ("login", b)
    ua = expect_json(app.get("/api/v1/users", headers=bearer(ta)), 200)
    ub = expect_json(app.get("/api/v1/users", headers=bearer(tb)), 200)
    assert [u["tenant_id"] for u in ua] == [a] and [u["tenant_id"] for u in ub] == [b]
    assert ua[0]["user_id"] != ub[0]["user_id"]


# --------------------------------------------------------------------------
# workspaces and memberships


def test_workspaces_owner_rules(app):
    tid = new_tenant(app)
    owner, owner_tok = user_with_token(app, tid, "Owner")
    other, other_tok = user_with_token(app, tid, "Other")
    admin, admin_tok = user_with_token(app, tid, "Admin", roles="admin")
    ws = expect_json(app.post("/api/v1/workspaces", json={"name": "Alpha"}, headers=bearer(owner_tok)), 201)
    assert ws["owner_id"] == owner["user_id"]
    # creating one for someone else is refused
    body = expect_problem(app.post("/api/v1/workspaces", json={"name": "B", "owner_id": other["user_id"]},
                                   headers=bearer(owner_tok)), 403, "forbidden")
    assert body["detail"] == "owner_id: must be the caller's own subject (access rule owner:owner_id)"
    path = f"/api/v1/workspaces/{ws['workspace_id']}"
    # everyone in the tenant reads it; only the owner (or an admin) changes it: 403, not 404, since it is visible
    assert expect_json(app.get(path, headers=bearer(other_tok)), 200) == ws
    expect_problem(app.request("PATCH", path, json={"name": "Hijacked"}, headers=bearer(other_tok)), 403, "forbidden")
    expect_problem(app.request("DELETE", path, headers=bearer(other_tok)), 403, "forbidden")
    # nor hand it over to someone else
    expect_problem(app.request("PATCH", path, json={"owner_id": other["user_id"]}, headers=bearer(owner_tok)),
                   403, "forbidden")
    renamed = expect_json(app.request("PATCH", path, json={"name": "Alpha 2"}, headers=bearer(owner_tok)), 200)
    assert renamed["name"] == "Alpha 2" and renamed["version"] == 2
    by_admin = expect_json(app.request("PATCH", path, json={"name": "Alpha 3"}, headers=bearer(admin_tok)), 200)
    assert by_admin["version"] == 3
    history = expect_json(app.get(path + "/history", headers=bearer(other_tok)), 200)
    assert [e["type"] for e in history] == ["WorkspaceCreated", "WorkspaceUpdated", "WorkspaceUpdated"]
    assert all(e["metadata"] == {"tenant_id": tid} for e in history)


def test_memberships_unique_per_workspace_and_user(app):
    tid = new_tenant(app)
    owner, tok = user_with_token(app, tid, "Owner")
    member, member_tok = user_with_token(app, tid, "Member")
    ws1 = expect_json(app.post("/api/v1/workspaces", json={"name": "One"}, headers=bearer(tok)), 201)
    ws2 = expect_json(app.post("/api/v1/workspaces", json={"name": "Two"}, headers=bearer(tok)), 201)
    m1 = expect_json(app.post("/api/v1/memberships", json={"workspace_id": ws1["workspace_id"],
                                                           "user_id": member["user_id"]}, headers=bearer(tok)), 201)
    assert (m1["role"], m1["invited_by"]) == ("viewer", owner["user_id"])
    body = expect_problem(app.post("/api/v1/memberships", json={"workspace_id": ws1["workspace_id"],
                                                                 "user_id": member["user_id"], "role": "owner"},
                                   headers=bearer(tok)), 409, "conflict")
    assert problem_fields(body) == ["workspace_id"]
    # another workspace, or the same one after removal, is fine
    expect_json(app.post("/api/v1/memberships", json={"workspace_id": ws2["workspace_id"],
                                                      "user_id": member["user_id"]}, headers=bearer(tok)), 201)
    # the member cannot change or remove an invitation someone else made
    mpath = f"/api/v1/memberships/{m1['membership_id']}"
    expect_problem(app.request("PATCH", mpath, json={"role": "owner"}, headers=bearer(member_tok)), 403, "forbidden")
    expect_json(app.request("DELETE", mpath, headers=bearer(tok)), 200)
    again = expect_json(app.post("/api/v1/memberships", json={"workspace_id": ws1["workspace_id"],
                                                              "user_id": member["user_id"], "role": "editor"},
                                 headers=bearer(tok)), 201)
    listed = expect_json(app.get("/api/v1/memberships", params={"user_id": member["user_id"]},
                                 headers=bearer(member_tok)), 200)
    assert sorted(m["membership_id"] for m in listed) == sorted([again["membership_id"],
                                                                  listed[0]["membership_id"]])
    assert len(listed) == 2


# --------------------------------------------------------------------------
# notifications


def test_notifications_are_the_addressees(app):
    tid = new_tenant(app)
    ann, ann_tok = user_with_token(app, tid, "Ann")
    ben, ben_tok = user_with_token(app, tid, "Ben")
    notes = [expect_json(app.post("/api/v1/notifications", json={"user_id": ann["user_id"], "message": f"m{i}"},
                                  headers=bearer(ben_tok)), 201) for i in range(3)]
    mine = expect_json(app.get("/api/v1/notifications", headers=bearer(ann_tok)), 200)
    assert [n["message"] for n in mine] == ["m2", "m1", "m0"]  # newest first
    assert expect_json(app.get("/api/v1/notifications", headers=bearer(ben_tok)), 200) == []
    path = f"/api/v1/notifications/{notes[0]['notification_id']}"
    # the sender cannot read, mark or delete it: 404, as if it did not exist
    expect_problem(app.get(path, headers=bearer(ben_tok)), 404, "not-found")
    expect_problem(app.post(path + "/read", headers=bearer(ben_tok)), 404, "not-found")
    expect_problem(app.request("DELETE", path, headers=bearer(ben_tok)), 404, "not-found")
    # filters cannot widen the owner's view
    assert expect_json(app.get("/api/v1/notifications", params={"user_id": ann["user_id"]},
                               headers=bearer(ben_tok)), 200) == []
    read = expect_json(app.post(path + "/read", headers=bearer(ann_tok)), 200)
    assert read["read"] is True and read["version"] == 2
    body = expect_problem(app.post(path + "/read", headers=bearer(ann_tok)), 409, "conflict")
    assert "read" in body["detail"]
    unread = expect_json(app.get("/api/v1/notifications", params={"read": "false"}, headers=bearer(ann_tok)), 200)
    assert [n["message"] for n in unread] == ["m2", "m1"]
    expect_json(app.request("DELETE", path, headers=bearer(ann_tok)), 200)
    expect_problem(app.get(path, headers=bearer(ann_tok)), 404, "not-found")


# --------------------------------------------------------------------------
# health


def test_health_of_the_whole_and_of_each_module(app):
    assert expect_json(app.get("/health"), 200) == {"status": "ok"}
    for module in ("users", "workspaces", "tenants", "notifications", "memberships"):
        got = expect_json(app.get(f"/internal/health/{module}", headers=OP), 200)
        assert got == {"component": module, "status": "ok", "kind": "entity"}
    expect_problem(app.get("/internal/health/billing", headers=OP), 404, "not-found")
    expect_problem(app.get("/internal/health/users"), 401, "unauthorized")
