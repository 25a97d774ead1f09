"""
Acceptance test of examples/status-app: the routes a chat bot and a
dashboard call (POST /commands/register-team, POST /commands/submit-update,
GET /api/teams, GET /api/teams/{team_id}, GET /api/updates), driven over
HTTP against the real binary serving examples/status-app/app.json, plus the
generated /v1 API the definition brings along (update and delete a team,
history, time travel), the API secret, restarts, a definition change, bad
input, and the README's curl commands.

Every response is checked for its exact status and body. Nothing sleeps:
time travel queries between the timestamps the server answered with.
"""

import hashlib
import hmac
import http.server
import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
import uuid

import pytest
import requests

from conftest import (UUIDV7_RE, app_server, copy_app_with, example_path, expect_json, expect_problem,
                      log_messages, problem_fields, raw_request, build_request, check_readme, set_app, ts_shift,
                      wait_until)

APP = example_path("status-app", "app.json")
README = example_path("status-app", "README.md")

TEAM_KEYS = ["team_id", "name", "slack_channel", "poll_schedule", "version", "created_at", "updated_at"]
UPDATE_KEYS = ["update_id", "team_id", "content", "author", "slack_user", "version", "created_at", "updated_at"]


# The scheduler's clock in these servers: a fixed moment before any team
# exists, so no poll fires while a test counts events. The poll schedule
# itself is tested with a clock the test moves (test_poll_schedule_...).
FROZEN = "2020-01-01T00:00:00Z"


def with_clock(srv, when=FROZEN):
    """Gives srv (not started) a test clock file of its own set to `when`;
    returns the file's path."""
    path = os.path.join(srv.dir, "clock")
    set_clock(path, when)
    srv.env["CHRONICLE_TEST_CLOCK_FILE"] = path
    return path


def set_clock(path, when):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(when + "\n")
    os.replace(path + ".tmp", path)


@pytest.fixture(scope="module")
def app():
    srv = app_server(APP, "status-app")
    with_clock(srv)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def fresh(request):
    """A server of its own (restarts, definition changes)."""
    servers = []

    def make(env=None, app_json=APP):
        srv = app_server(app_json, "status-app-" + request.node.name[:30], env=env)
        with_clock(srv)
        servers.append(srv)
        return srv.start()

    yield make
    for srv in servers:
        srv.close()


def tid(prefix="team"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def post(srv, path, body, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return srv.post(path, data=json.dumps(body).encode(), headers=h)


def register(srv, team_id=None, **extra):
    body = {"team_id": team_id or tid(), "name": "Platform", "slack_channel": "#platform"}
    body.update(extra)
    return expect_json(post(srv, "/commands/register-team", body), 201)


def submit(srv, team_id, content="Shipped the importer", author="Ann", slack_user="U024BE7LH"):
    body = {"team_id": team_id, "content": content, "author": author, "slack_user": slack_user}
    return expect_json(post(srv, "/commands/submit-update", body), 201)


def head(srv):
    return srv.head_position()


# --------------------------------------------------------------------------
# teams


def test_register_team_answers_201_with_the_team(app):
    t = tid()
    r = post(app, "/commands/register-team",
             {"team_id": t, "name": "Platform", "slack_channel": "#platform", "poll_schedule": "0 9 * * MON-FRI"})
    team = expect_json(r, 201)
    assert list(team) == TEAM_KEYS
    assert team["team_id"] == t and team["name"] == "Platform" and team["slack_channel"] == "#platform"
    assert team["poll_schedule"] == "0 9 * * MON-FRI"
    assert team["version"] == 1 and team["created_at"] == team["updated_at"]
    assert r.headers["ETag"] == '"1"'
    assert r.headers["Location"] == f"/v1/teams/{t}"

    got = app.get(f"/api/teams/{t}")
    assert expect_json(got, 200) == team
    assert got.headers["ETag"] == '"1"'
    assert expect_json(app.get(f"/v1/teams/{t}"), 200) == team
    assert team in expect_json(app.get("/api/teams"), 200)


def test_poll_schedule_is_optional(app):
    team = register(app)
    assert team["poll_schedule"] is None


def test_registering_an_existing_team_is_409_and_changes_nothing(app):
    t = tid()
    first = register(app, t, name="Original")
    before = head(app)
    body = expect_problem(post(app, "/commands/register-team",
                               {"team_id": t, "name": "Impostor", "slack_channel": "#x"}),
                          409, "conflict", instance="/commands/register-team")
    assert body["detail"] == f"teams {t} already exists"
    assert head(app) == before
    assert expect_json(app.get(f"/api/teams/{t}"), 200) == first


def test_get_unknown_team_is_404(app):
    body = expect_problem(app.get("/api/teams/no-such-team"), 404, "not-found", instance="/api/teams/no-such-team")
    assert body["detail"] == "teams no-such-team does not exist"


def test_list_teams_is_an_array_sorted_by_team_id(app):
    prefix = uuid.uuid4().hex[:6]
    ids = [f"{prefix}-{s}" for s in ("charlie", "alpha", "bravo")]
    for t in ids:
        register(app, t)
    teams = expect_json(app.get("/api/teams"), 200)
    assert isinstance(teams, list)
    mine = [t["team_id"] for t in teams if t["team_id"].startswith(prefix)]
    assert mine == sorted(ids)
    all_ids = [t["team_id"] for t in teams]
    assert all_ids == sorted(all_ids)
    assert all(list(t) == TEAM_KEYS for t in teams)


# --------------------------------------------------------------------------
# status updates


def test_submit_update_answers_201_with_a_generated_update_id(app):
    t = register(app)["team_id"]
    r = post(app, "/commands/submit-update",
             {"team_id": t, "content": "Line one\nline two\twith a tab", "author": "Ann", "slack_user": "U1"})
    u = expect_json(r, 201)
    assert list(u) == UPDATE_KEYS
    assert UUIDV7_RE.match(u["update_id"]), u
    assert u["team_id"] == t and u["content"] == "Line one\nline two\twith a tab"
    assert u["author"] == "Ann" and u["slack_user"] == "U1" and u["version"] == 1
    assert r.headers["Location"] == f"/v1/status_updates/{u['update_id']}"
    assert expect_json(app.get(f"/v1/status_updates/{u['update_id']}"), 200) == u
    assert expect_json(app.get("/api/updates", params={"team_id": t}), 200) == [u]


def test_submit_update_for_an_unknown_team_is_422(app):
    before = head(app)
    body = expect_problem(post(app, "/commands/submit-update",
                               {"team_id": "ghost-team", "content": "x", "author": "a", "slack_user": "u"}),
                          422, "validation", instance="/commands/submit-update")
    assert body["errors"] == [{"field": "team_id", "message": 'teams "ghost-team" does not exist'}]
    assert head(app) == before
    assert expect_json(app.get("/api/updates", params={"team_id": "ghost-team"}), 200) == []


def test_updates_are_newest_first_20_by_default_at_most_100(app):
    t = register(app)["team_id"]
    made = [submit(app, t, content=f"update {i}") for i in range(25)]
    newest_first = list(reversed(made))

    r = app.get("/api/updates", params={"team_id": t})
    page1 = expect_json(r, 200)
    assert page1 == newest_first[:20]
    link = r.headers["Link"]
    assert link.startswith(f"</api/updates?team_id={t}&after=") and link.endswith('>; rel="next"'), link
    r2 = app.get(link[1:link.index(">")])
    assert expect_json(r2, 200) == newest_first[20:]
    assert "Link" not in r2.headers

    assert expect_json(app.get("/api/updates", params={"team_id": t, "limit": 3}), 200) == newest_first[:3]
    assert expect_json(app.get("/api/updates", params={"team_id": t, "limit": 100}), 200) == newest_first
    # without a filter: still newest first, across teams
    everything = expect_json(app.get("/api/updates", params={"limit": 100}), 200)
    stamps = [(u["created_at"], u["update_id"]) for u in everything]
    assert stamps == sorted(stamps, reverse=True)
    for bad in ("101", "100000", "0", "-1", "ten", ""):
        body = expect_problem(app.get("/api/updates", params={"limit": bad}), 400, "bad-request")
        assert body["errors"] == [{"field": "limit", "message": "must be an integer from 1 to 100"}], bad


def test_updates_filter_by_team(app):
    a, b = register(app)["team_id"], register(app)["team_id"]
    ua = submit(app, a, content="from a")
    ub = submit(app, b, content="from b")
    assert expect_json(app.get("/api/updates", params={"team_id": a}), 200) == [ua]
    assert expect_json(app.get("/api/updates", params={"team_id": b}), 200) == [ub]
    both = expect_json(app.get("/api/updates", params={"team_id": f"in.{a},{b}"}), 200)
    assert both == [ub, ua]


def test_updates_are_create_only(app):
    t = register(app)["team_id"]
    u = submit(app, t)
    before = head(app)
    path = f"/v1/status_updates/{u['update_id']}"
    for method in ("PATCH", "PUT", "DELETE"):
        r = app.request(method, path, data=b'{"content":"changed"}', headers={"Content-Type": "application/json"})
        body = expect_problem(r, 405, "method-not-allowed")
        assert r.headers["Allow"] == "GET", method
        assert body["detail"] == f"{method} is not allowed here; allowed: GET"
    assert head(app) == before
    assert expect_json(app.get(path), 200) == u


# --------------------------------------------------------------------------
# the full lifecycle of a team, its history and its past


def test_team_create_read_update_delete_read_404(app):
    t = tid()
    created = register(app, t, poll_schedule="*/15 * * * *")
    r = app.request("PATCH", f"/v1/teams/{t}", json={"name": "Platform & Infra"})
    updated = expect_json(r, 200)
    assert r.headers["ETag"] == '"2"'
    assert updated == {**created, "name": "Platform & Infra", "version": 2, "updated_at": updated["updated_at"]}
    assert updated["updated_at"] > created["updated_at"]
    assert expect_json(app.get(f"/api/teams/{t}"), 200) == updated

    u = submit(app, t)
    deleted = expect_json(app.request("DELETE", f"/v1/teams/{t}"), 200)
    assert deleted["version"] == 3 and deleted["name"] == "Platform & Infra"
    expect_problem(app.get(f"/api/teams/{t}"), 404, "not-found")
    assert t not in [x["team_id"] for x in expect_json(app.get("/api/teams"), 200)]
    # its updates stay; new ones are refused
    assert expect_json(app.get("/api/updates", params={"team_id": t}), 200) == [u]
    body = expect_problem(post(app, "/commands/submit-update",
                               {"team_id": t, "content": "x", "author": "a", "slack_user": "u"}), 422, "validation")
    assert problem_fields(body) == ["team_id"]
    expect_problem(app.request("DELETE", f"/v1/teams/{t}"), 404, "not-found")

    # the definition allows a deleted team to be registered again
    again = register(app, t, name="Platform reborn")
    assert again["version"] == 4 and again["poll_schedule"] is None
    assert again["created_at"] > created["created_at"]


def test_history_and_time_travel(app):
    t = tid()
    v1 = register(app, t, slack_channel="#old")
    v2 = expect_json(app.request("PATCH", f"/v1/teams/{t}", json={"slack_channel": "#new"}), 200)
    v3 = expect_json(app.request("PATCH", f"/v1/teams/{t}", json={"poll_schedule": "0 10 * * *"}), 200)

    hist = expect_json(app.get(f"/v1/teams/{t}/history"), 200)
    assert [(e["type"], e["version"]) for e in hist] == [("TeamRegistered", 1), ("TeamUpdated", 2), ("TeamUpdated", 3)]
    assert [e["timestamp"] for e in hist] == [v1["updated_at"], v2["updated_at"], v3["updated_at"]]
    assert hist[0]["data"] == {"team_id": t, "name": "Platform", "slack_channel": "#old"}
    assert hist[1]["data"] == {"team_id": t, "slack_channel": "#new", "_previous": {"slack_channel": "#old"}}
    assert hist[2]["data"] == {"team_id": t, "poll_schedule": "0 10 * * *", "_previous": {"poll_schedule": None}}
    assert all(e["stream"] == f"teams-{t}" for e in hist)

    for path in (f"/api/teams/{t}", f"/v1/teams/{t}"):
        def at(ts):
            return app.get(path, params={"at": ts})
        assert expect_json(at(v1["updated_at"]), 200) == v1
        assert expect_json(at(ts_shift(v2["updated_at"], -1)), 200) == v1
        r = at(v2["updated_at"])
        assert expect_json(r, 200) == v2 and r.headers["ETag"] == '"2"'
        assert expect_json(at(v3["updated_at"]), 200) == v3
        assert expect_json(app.get(path, params={"version": 1}), 200) == v1
        assert expect_json(app.get(path, params={"version": 2}), 200) == v2
        body = expect_problem(at(ts_shift(v1["created_at"], -1)), 404, "not-found")
        assert body["detail"] == f"teams {t} did not exist at that time"

    expect_json(app.request("DELETE", f"/v1/teams/{t}"), 200)
    assert expect_json(app.get(f"/api/teams/{t}", params={"at": v3["updated_at"]}), 200) == v3
    assert len(expect_json(app.get(f"/v1/teams/{t}/history"), 200)) == 4


def test_if_match_protects_concurrent_edits(app):
    t = register(app)["team_id"]
    r = app.request("PATCH", f"/v1/teams/{t}", json={"name": "A"}, headers={"If-Match": '"1"'})
    assert expect_json(r, 200)["version"] == 2
    before = head(app)
    body = expect_problem(app.request("PATCH", f"/v1/teams/{t}", json={"name": "B"}, headers={"If-Match": '"1"'}),
                          412, "precondition-failed")
    assert body["detail"] == f"If-Match: teams {t} is at version 2, not 1"
    assert head(app) == before
    assert expect_json(app.get(f"/api/teams/{t}"), 200)["name"] == "A"


# --------------------------------------------------------------------------
# API secret


def test_api_secret_guards_every_route(fresh):
    srv = fresh(env={"API_SECRET": "bot-secret,dash-secret"})
    t = tid()
    good = {"Authorization": "Bearer bot-secret"}
    routes = [
        ("POST", "/commands/register-team", {"team_id": t, "name": "N", "slack_channel": "#c"}),
        ("POST", "/commands/submit-update", {"team_id": t, "content": "c", "author": "a", "slack_user": "u"}),
        ("GET", "/api/teams", None),
        ("GET", f"/api/teams/{t}", None),
        ("GET", "/api/updates?limit=5", None),
        ("GET", f"/v1/teams/{t}/history", None),
        ("GET", "/v1/events", None),
    ]
    for method, path, body in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "bot-secret"}):
            h = dict(headers)
            data = None
            if body is not None:
                h["Content-Type"] = "application/json"
                data = json.dumps(body).encode()
            r = srv.request(method, path, data=data, headers=h)
            expect_problem(r, 401, "unauthorized")
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), r.headers
    assert srv.head_position(headers=good) == 0  # nothing was written

    team = expect_json(post(srv, "/commands/register-team", routes[0][2], headers=good), 201)
    upd = expect_json(post(srv, "/commands/submit-update", routes[1][2],
                           headers={"Authorization": "Bearer dash-secret"}), 201)
    assert expect_json(srv.get("/api/teams", headers=good), 200) == [team]
    assert expect_json(srv.get(f"/api/teams/{t}", headers=good), 200) == team
    assert expect_json(srv.get("/api/updates", headers=good), 200) == [upd]
    assert expect_json(srv.get("/health"), 200) == {"status": "ok"}
    assert expect_json(srv.get("/ready"), 200) == {"status": "ready"}


# --------------------------------------------------------------------------
# restarts and definition changes


def snapshot(srv):
    teams = expect_json(srv.get("/api/teams"), 200)
    updates = expect_json(srv.get("/api/updates", params={"limit": 100}), 200)
    history = {t["team_id"]: expect_json(srv.get(f"/v1/teams/{t['team_id']}/history"), 200) for t in teams}
    return teams, updates, history


def populate(srv):
    a = register(srv, "alpha", poll_schedule="0 9 * * 1-5")
    b = register(srv, "bravo")
    expect_json(srv.request("PATCH", "/v1/teams/bravo", json={"name": "Bravo squad"}), 200)
    register(srv, "charlie")
    expect_json(srv.request("DELETE", "/v1/teams/charlie"), 200)
    for i in range(3):
        submit(srv, a["team_id"], content=f"alpha {i}")
        submit(srv, b["team_id"], content=f"bravo {i}")


def test_restart_keeps_everything(fresh):
    srv = fresh()
    populate(srv)
    before = snapshot(srv)
    head_before = srv.head_position()
    assert head_before == 11

    srv.restart()  # SIGTERM, exit 0, start again on the same database
    assert snapshot(srv) == before
    expect_problem(srv.get("/api/teams/charlie"), 404, "not-found")

    # acknowledged means durable, even after kill -9
    u = submit(srv, "alpha", content="written just before the crash")
    srv.kill()
    srv.start()
    teams, updates, history = snapshot(srv)
    assert teams == before[0]
    assert updates == [u] + before[1]
    assert srv.head_position() == head_before + 1
    # and it keeps working: conflicts are still conflicts
    expect_problem(post(srv, "/commands/register-team", {"team_id": "alpha", "name": "x", "slack_channel": "#x"}),
                   409, "conflict")


def test_definition_change_rebuilds_projections_with_data_intact(fresh):
    srv = fresh()
    populate(srv)
    teams, updates, history = snapshot(srv)
    head_before = srv.head_position()

    def add_timezone(d):
        d["entities"]["teams"]["fields"]["timezone"] = {"type": "string", "max_length": 64}

    edited = copy_app_with(srv.dir, APP, add_timezone)
    assert srv.stop() == 0
    set_app(srv, edited)
    first_line = len(srv.stderr_lines)
    srv.start()
    rebuilt = [m for m in log_messages(srv, first_line) if m.get("msg") == "projections rebuilt from events"]
    assert len(rebuilt) == 1, srv.stderr_tail()
    assert rebuilt[0]["events"] == head_before

    teams2, updates2, history2 = snapshot(srv)
    assert teams2 == [{**t, "timezone": None} for t in teams]
    assert [list(t) for t in teams2] == [TEAM_KEYS[:4] + ["timezone"] + TEAM_KEYS[4:]] * len(teams)
    assert updates2 == updates
    assert history2 == history
    assert srv.head_position() == head_before
    # deleted stays deleted, existing stays existing
    expect_problem(srv.get("/api/teams/charlie"), 404, "not-found")
    expect_problem(post(srv, "/commands/register-team", {"team_id": "alpha", "name": "x", "slack_channel": "#x"}),
                   409, "conflict")
    # the new field works
    r = srv.request("PATCH", "/v1/teams/alpha", json={"timezone": "Europe/Berlin"})
    alpha = expect_json(r, 200)
    assert alpha["timezone"] == "Europe/Berlin" and alpha["version"] == 2
    body = expect_problem(srv.request("PATCH", "/v1/teams/alpha", json={"timezone": "x" * 65}), 422, "validation")
    assert body["errors"] == [{"field": "timezone", "message": "must be at most 64 characters long"}]
    assert expect_json(srv.get("/api/teams", params={}), 200)[0] == alpha

    # a restart with the same definition does not rebuild again
    first_line = len(srv.stderr_lines)
    srv.restart()
    assert not [m for m in log_messages(srv, first_line) if m.get("msg") == "projections rebuilt from events"]
    assert expect_json(srv.get("/api/teams/alpha"), 200) == alpha


# --------------------------------------------------------------------------
# bad input: a precise 4xx and nothing written


def J(obj):
    return json.dumps(obj).encode()


EXISTING = {"team_id": "bad-input-team", "name": "Team", "slack_channel": "#team"}
TEAM_OK = {"team_id": "never-registered", "name": "Team", "slack_channel": "#team"}
UPDATE_OK = {"team_id": "bad-input-team", "content": "c", "author": "a", "slack_user": "u"}


def team(**over):
    b = dict(TEAM_OK)
    for k, v in over.items():
        if v is KEEP_OUT:
            b.pop(k, None)
        else:
            b[k] = v
    return b


def update(**over):
    b = dict(UPDATE_OK)
    for k, v in over.items():
        if v is KEEP_OUT:
            b.pop(k, None)
        else:
            b[k] = v
    return b


KEEP_OUT = object()

# (name, method, path, body (object -> JSON, bytes -> as is), status, slug, errors[].field list or None)
BAD_WRITES = [
    ("team without team_id", "POST", "/commands/register-team", team(team_id=KEEP_OUT), 422, "validation", ["team_id"]),
    ("team that exists", "POST", "/commands/register-team", EXISTING, 409, "conflict", None),
    ("team without anything", "POST", "/commands/register-team", {}, 422, "validation",
     ["team_id", "name", "slack_channel"]),
    ("team name null", "POST", "/commands/register-team", team(name=None), 422, "validation", ["name"]),
    ("team name a number", "POST", "/commands/register-team", team(name=42), 422, "validation", ["name"]),
    ("team name an object", "POST", "/commands/register-team", team(name={"a": 1}), 422, "validation", ["name"]),
    ("team name 256 chars", "POST", "/commands/register-team", team(name="n" * 256), 422, "validation", ["name"]),
    ("team name with a newline", "POST", "/commands/register-team", team(name="a\nb"), 422, "validation", ["name"]),
    ("slack_channel 256 chars", "POST", "/commands/register-team", team(slack_channel="c" * 256), 422,
     "validation", ["slack_channel"]),
    ("team_id a number", "POST", "/commands/register-team", team(team_id=7), 422, "validation", ["team_id"]),
    ("team_id with a slash", "POST", "/commands/register-team", team(team_id="a/b"), 422, "validation", ["team_id"]),
    ("team_id with a control char", "POST", "/commands/register-team", team(team_id="a\u0001b"), 422,
     "validation", ["team_id"]),
    ("team_id empty", "POST", "/commands/register-team", team(team_id=""), 422, "validation", ["team_id"]),
    ("team_id 256 bytes", "POST", "/commands/register-team", team(team_id="t" * 256), 422, "validation",
     ["team_id"]),
    ("cron with 4 fields", "POST", "/commands/register-team", team(poll_schedule="* * * *"), 422, "validation",
     ["poll_schedule"]),
    ("cron minute 60", "POST", "/commands/register-team", team(poll_schedule="60 * * * *"), 422, "validation",
     ["poll_schedule"]),
    ("cron wrapping range", "POST", "/commands/register-team", team(poll_schedule="0 9 * * FRI-MON"), 422,
     "validation", ["poll_schedule"]),
    ("cron unknown macro", "POST", "/commands/register-team", team(poll_schedule="@often"), 422, "validation",
     ["poll_schedule"]),
    ("cron a number", "POST", "/commands/register-team", team(poll_schedule=5), 422, "validation",
     ["poll_schedule"]),
    ("unknown fields", "POST", "/commands/register-team", team(colour="red", owner="x"), 422, "validation",
     ["colour", "owner"]),
    ("system field", "POST", "/commands/register-team", team(version=3), 422, "validation", ["version"]),
    ("several problems at once", "POST", "/commands/register-team",
     {"team_id": "ok-id", "name": 1, "poll_schedule": "nope", "extra": True}, 422, "validation",
     ["name", "poll_schedule", "extra", "slack_channel"]),
    ("body an array", "POST", "/commands/register-team", [TEAM_OK], 422, "validation", [""]),
    ("body a string", "POST", "/commands/register-team", "team", 400, "malformed-json", None),
    ("body not JSON", "POST", "/commands/register-team", b"{team_id: x}", 400, "malformed-json", None),
    ("body empty", "POST", "/commands/register-team", b"", 400, "malformed-json", None),
    ("duplicate keys", "POST", "/commands/register-team",
     b'{"team_id":"a","team_id":"b","name":"n","slack_channel":"c"}', 400, "malformed-json", None),
    ("update without fields", "POST", "/commands/submit-update", {"team_id": "bad-input-team"}, 422,
     "validation", ["content", "author", "slack_user"]),
    ("update for a missing team", "POST", "/commands/submit-update", update(team_id="no-such-team"), 422,
     "validation", ["team_id"]),
    ("update team_id not a key", "POST", "/commands/submit-update", update(team_id="a/b"), 422, "validation",
     ["team_id"]),
    ("update content a list", "POST", "/commands/submit-update", update(content=["a"]), 422, "validation",
     ["content"]),
    ("update content with a control char", "POST", "/commands/submit-update", update(content="a\u0007b"),
     422, "validation", ["content"]),
    ("update author too long", "POST", "/commands/submit-update", update(author="a" * 256), 422, "validation",
     ["author"]),
    ("update with a bad update_id", "POST", "/commands/submit-update", update(update_id="x/y"), 422,
     "validation", ["update_id"]),
    ("update unknown field", "POST", "/commands/submit-update", update(mood="happy"), 422, "validation", ["mood"]),
    ("patch a team: unknown field", "PATCH", "/v1/teams/bad-input-team", {"colour": "red"}, 422, "validation",
     ["colour"]),
    ("patch a team: required to null", "PATCH", "/v1/teams/bad-input-team", {"name": None}, 422, "validation",
     ["name"]),
    ("patch a team: other key", "PATCH", "/v1/teams/bad-input-team", {"team_id": "other"}, 422, "validation",
     ["team_id"]),
    ("patch a missing team", "PATCH", "/v1/teams/no-such-team", {"name": "x"}, 404, "not-found", None),
]


def test_bad_input_is_a_precise_4xx_and_writes_nothing(app):
    expect_json(post(app, "/commands/register-team", EXISTING), 201)
    before = head(app)
    failures = []
    for name, method, path, body, status, slug, fields in BAD_WRITES:
        data = body if isinstance(body, bytes) else J(body)
        r = app.request(method, path, data=data, headers={"Content-Type": "application/json"})
        try:
            problem = expect_problem(r, status, slug, instance=path)
            if fields is not None:
                assert problem_fields(problem) == fields, problem
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)

    # media type
    r = app.post("/commands/register-team", data=J(TEAM_OK), headers={"Content-Type": "text/plain"})
    expect_problem(r, 415, "unsupported-media-type")
    # bad reads
    reads = [
        ("/api/teams/bad-input-team?at=yesterday", "at"),
        ("/api/teams/bad-input-team?at=2026-13-01T00:00:00Z", "at"),
        ("/api/teams/bad-input-team?version=0", "version"),
        ("/api/teams/bad-input-team?version=one", "version"),
        ("/api/updates?limit=100000", "limit"),
        ("/api/updates?sort=nope", "sort"),
        ("/api/updates?sort=-content,nope", "sort"),
        ("/api/updates?mood=happy", "mood"),
        ("/api/updates?after=not-a-cursor", "after"),
        ("/api/teams/a%01b", "team_id"),
        ("/api/teams/a%00b", None),
        ("/api/teams/%FF", None),
    ]
    for path, field in reads:
        r = app.get(path)
        body = expect_problem(r, 400, "bad-request")
        if field:
            assert problem_fields(body) == [field], (path, body)
    # a path with a slash in the key is simply not a team
    expect_problem(app.get("/api/teams/a%2Fb"), 404, "not-found")
    # raw: a control character sent verbatim in the path
    raw = raw_request(app.port, build_request("GET", b"/api/teams/a\x01b"))
    assert raw is not None and raw.status_code == 400, raw

    assert head(app) == before
    expect_problem(app.get("/api/teams/never-registered"), 404, "not-found")
    assert expect_json(app.get("/api/updates", params={"team_id": "bad-input-team"}), 200) == []
    assert expect_json(app.get("/api/teams/bad-input-team"), 200)["version"] == 1


def test_concurrent_submissions_all_land(app):
    t = register(app)["team_id"]
    results, errors = [], []

    def worker(n):
        s = requests.Session()
        try:
            for i in range(5):
                r = s.post(app.url + "/commands/submit-update", json={
                    "team_id": t, "content": f"w{n}-{i}", "author": "bot", "slack_user": "U"}, timeout=10)
                if r.status_code != 201:
                    errors.append(r.text)
                else:
                    results.append(r.json())
        finally:
            s.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors
    assert len(results) == 40
    listed = expect_json(app.get("/api/updates", params={"team_id": t, "limit": 100}), 200)
    assert sorted(u["update_id"] for u in listed) == sorted(u["update_id"] for u in results)


# --------------------------------------------------------------------------
# the README


def test_poll_schedule_emits_status_poll_requested_per_team(fresh):
    """Each team's poll_schedule emits StatusPollRequested for that team on
    each tick, once (the scheduler's clock is a test clock file here)."""
    srv = fresh()
    clock = srv.env["CHRONICLE_TEST_CLOCK_FILE"]
    register(srv, "platform", poll_schedule="0 9 * * MON-FRI", slack_channel="#platform")
    register(srv, "mobile")  # no poll_schedule: never polled
    register(srv, "web", poll_schedule="30 9 * * MON-FRI", slack_channel="#web")

    # The next weekday's 09:00 UTC after now, then 09:30 the same day.
    day = datetime.now(timezone.utc).replace(hour=9, minute=0, second=0, microsecond=0) + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    fmt = "%Y-%m-%dT%H:%M:%S.000000Z"

    def polls():
        return [(e["data"]["team_id"], e["data"]["tick"]) for e in srv.read_feed(types=["StatusPollRequested"])]

    set_clock(clock, (day + timedelta(seconds=5)).strftime(fmt))
    nine = day.strftime(fmt)
    assert wait_until(polls, 15, msg="the 09:00 poll") == [("platform", nine)]
    set_clock(clock, (day + timedelta(minutes=30, seconds=5)).strftime(fmt))
    half = (day + timedelta(minutes=30)).strftime(fmt)
    wait_until(lambda: len(polls()) == 2, 15, msg="the 09:30 poll")
    assert polls() == [("platform", nine), ("web", half)]
    ev = srv.read_feed(types=["StatusPollRequested"])[1]
    assert ev["stream"] == "schedule:poll_teams:web"
    assert ev["data"] == {"team_id": "web", "slack_channel": "#web", "tick": half, "missed": 1}

    # A restart fires nothing again; the next weekday's ticks come once.
    srv.restart()
    nxt = day + timedelta(days=1)
    while nxt.weekday() >= 5:
        nxt += timedelta(days=1)
    set_clock(clock, (nxt + timedelta(minutes=30, seconds=5)).strftime(fmt))
    want = [("platform", nine), ("web", half), ("platform", nxt.strftime(fmt)),
            ("web", (nxt + timedelta(minutes=30)).strftime(fmt))]
    wait_until(lambda: len(polls()) >= 4, 15, msg="the next weekday's polls")
    assert sorted(polls()) == sorted(want)


class SlackbotReceiver:
    """A tiny stand-in for the chat bot's webhook on 127.0.0.1:<ephemeral>:
    records every POST (headers, raw body) and answers 204."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with recv.lock:
                    recv.requests.append((dict(self.headers), body))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/slack/chronicle" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def received(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def verify(secret, header, body, tolerance=300):
    """The README's signature check."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    t, sig = int(parts["t"]), parts["v1"]
    if abs(time.time() - t) > tolerance:
        return False
    want = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, sig)


def test_poll_ticks_reach_the_slackbot_webhook_signed(fresh):
    """A team's poll tick is POSTed to SLACKBOT_URL, signed with
    SLACKBOT_SECRET; a team without a schedule gets nothing."""
    bot = SlackbotReceiver()
    try:
        secret = "bot-secret-" + uuid.uuid4().hex
        srv = fresh(env={"SLACKBOT_URL": bot.url, "SLACKBOT_SECRET": secret})
        clock = srv.env["CHRONICLE_TEST_CLOCK_FILE"]
        register(srv, "platform", poll_schedule="0 9 * * *", slack_channel="#platform")
        register(srv, "mobile")
        now = datetime.now(timezone.utc)
        day = now.replace(hour=9, minute=0, second=0, microsecond=0)  # the next 09:00 UTC: one tick
        if day <= now + timedelta(seconds=30):
            day += timedelta(days=1)
        fmt = "%Y-%m-%dT%H:%M:%S.000000Z"
        set_clock(clock, (day + timedelta(seconds=5)).strftime(fmt))
        got = wait_until(lambda: bot.received() or None, 15, msg="the poll at the bot")
        assert len(got) == 1
        headers, body = got[0]
        assert verify(secret, headers["X-Chronicle-Signature"], body)
        assert not verify("wrong-secret", headers["X-Chronicle-Signature"], body)
        assert headers["X-Chronicle-Consumer"] == "slackbot"
        ev = json.loads(body)
        assert ev["type"] == "StatusPollRequested"
        assert ev["stream"] == "schedule:poll_teams:platform"
        assert ev["data"] == {"team_id": "platform", "slack_channel": "#platform",
                              "tick": day.strftime(fmt), "missed": 1}
        assert headers["X-Chronicle-Event-Id"] == ev["id"]

        def slackbot():
            return {c["name"]: c for c in expect_json(srv.get("/v1/consumers"), 200)["consumers"]}["slackbot"]

        c = wait_until(lambda: slackbot()["delivered"] == 1 and slackbot(), 10, msg="the delivery counted")
        assert (c["dead_letters"], c["last_error"]) == (0, None)
    finally:
        bot.close()


def test_readme_commands_work_as_written(fresh):
    check_readme(README, fresh(), min_blocks=10)
