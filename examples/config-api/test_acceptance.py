"""
Acceptance test of examples/config-api: a key/value configuration service
(GET /config, GET/PUT/DELETE /config/{name}, GET /config/{name}/history,
GET /config/{name}?at=<timestamp>) driven over HTTP against the real binary
serving examples/config-api/app.json, the way its clients use it: set and
read values of any JSON type, delete them (a deleted name cannot be set
again), look at a name's history and at its value at a past moment, follow
the audit log, restart, change the definition, and send bad input.

Every response is checked for its exact status and body. Nothing sleeps:
time travel queries between the timestamps the server answered with.
"""

import json
import threading
from datetime import timedelta, timezone
from urllib.parse import quote

import pytest
import requests

from conftest import (app_server, build_request, check_readme, copy_app_with, example_path, expect_json,
                      expect_problem, log_messages, parse_ts, problem_fields, raw_request, set_app, ts_shift)

APP = example_path("config-api", "app.json")
README = example_path("config-api", "README.md")

ITEM_KEYS = ["name", "value", "version", "created_at", "updated_at"]
LIST_KEYS = ["name", "value", "version", "updated_at"]


@pytest.fixture(scope="module")
def app():
    srv = app_server(APP, "config-api")
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def fresh(request):
    """A server of its own, on an empty database."""
    servers = []

    def make(env=None, app_json=APP):
        srv = app_server(app_json, "config-api-" + request.node.name[:30], env=env)
        servers.append(srv)
        return srv.start()

    yield make
    for srv in servers:
        srv.close()


def cpath(name):
    return "/config/" + quote(name, safe="")


def put(srv, name, value, headers=None, raw=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = raw if raw is not None else json.dumps({"value": value}).encode()
    return srv.request("PUT", cpath(name), data=data, headers=h)


def set_ok(srv, name, value):
    return expect_json(put(srv, name, value), 200)


def get(srv, name, **params):
    return srv.get(cpath(name), params=params or None)


def delete(srv, name, headers=None):
    return srv.request("DELETE", cpath(name), headers=headers)


def listing(srv, **params):
    return expect_json(srv.get("/config", params=params or None), 200)


_counter = [0]


def fresh_name(prefix="key"):
    _counter[0] += 1
    return f"{prefix}.{_counter[0]}"


# --------------------------------------------------------------------------
# the basics


def test_an_empty_service_lists_an_empty_array(fresh):
    srv = fresh()
    r = srv.get("/config")
    assert expect_json(r, 200) == []
    assert "Link" not in r.headers


def test_create_read_update_delete_read_404(app):
    name = fresh_name("checkout.max_items")
    r = put(app, name, 50)
    created = expect_json(r, 200)
    assert list(created) == ITEM_KEYS
    assert created["name"] == name and created["value"] == 50 and created["version"] == 1
    assert created["created_at"] == created["updated_at"]
    assert r.headers["ETag"] == '"1"'

    r = get(app, name)
    assert expect_json(r, 200) == created and r.headers["ETag"] == '"1"'
    assert {k: created[k] for k in LIST_KEYS} in listing(app)

    r = put(app, name, 75)
    updated = expect_json(r, 200)
    assert updated == {**created, "value": 75, "version": 2, "updated_at": updated["updated_at"]}
    assert updated["updated_at"] > created["updated_at"] and r.headers["ETag"] == '"2"'
    assert expect_json(get(app, name), 200) == updated

    r = delete(app, name)
    gone = expect_json(r, 200)
    assert gone["name"] == name and gone["value"] == 75 and gone["version"] == 3
    assert r.headers["ETag"] == '"3"'

    body = expect_problem(get(app, name), 404, "not-found", instance=cpath(name))
    assert body["detail"] == f"configs {name} does not exist"
    assert name not in [c["name"] for c in listing(app)]
    body = expect_problem(delete(app, name), 404, "not-found")
    assert body["detail"] == f"configs {name} does not exist"


def test_a_deleted_name_cannot_be_set_again(app):
    name = fresh_name("legacy")
    set_ok(app, name, "on")
    expect_json(delete(app, name), 200)
    before = app.head_position()
    body = expect_problem(put(app, name, "again"), 409, "conflict", instance=cpath(name))
    assert body["detail"] == f"configs {name} was deleted and cannot be recreated"
    # also through the generated API, whatever the verb
    r = app.request("PATCH", f"/v1/configs/{quote(name)}", json={"value": 1})
    expect_problem(r, 409, "conflict")
    r = app.post("/v1/configs", json={"name": name, "value": 1})
    expect_problem(r, 409, "conflict")
    assert app.head_position() == before
    expect_problem(get(app, name), 404, "not-found")


def test_get_of_an_unknown_name_is_404(app):
    body = expect_problem(get(app, "never.set"), 404, "not-found", instance="/config/never.set")
    assert body["detail"] == "configs never.set does not exist"
    expect_problem(app.get("/config/never.set/history"), 404, "not-found")


@pytest.mark.parametrize("value", [
    {"new_checkout": True, "beta_users": ["ann", "raj"], "limits": {"eu": 3, "us": 5.5}},
    [1, "two", None, {"three": [3]}],
    "a string with ünïcode, \"quotes\" and a\nline break",
    42, -7, 3.25, 1e300, 0, True, False, "", [], {},
    {"deep": [[[[[[[[[["down"]]]]]]]]]]},
], ids=lambda v: type(v).__name__ + ":" + json.dumps(v)[:20])
def test_any_json_value_round_trips(app, value):
    name = fresh_name("any")
    assert set_ok(app, name, value)["value"] == value
    assert expect_json(get(app, name), 200)["value"] == value
    assert [c["value"] for c in listing(app, limit=1000) if c["name"] == name] == [value]
    assert expect_json(app.get(cpath(name) + "/history"), 200)[0]["data"]["value"] == value


def test_large_values(app):
    name = fresh_name("big")
    value = {"allow": [f"user-{i:06d}@example.com" for i in range(20000)]}  # about 600 KB
    assert set_ok(app, name, value)["value"] == value
    assert expect_json(get(app, name), 200)["value"] == value
    assert [c["value"] for c in listing(app, limit=1000) if c["name"] == name] == [value]
    before = app.head_position()
    r = put(app, name, "x" * (1 << 20))  # the body is over the 1 MiB limit
    expect_problem(r, 413, "payload-too-large")
    assert app.head_position() == before
    assert expect_json(get(app, name), 200)["version"] == 1


def test_setting_the_same_value_again_changes_nothing(app):
    name = fresh_name("same")
    first = set_ok(app, name, {"a": [1, 2]})
    before = app.head_position()
    again = put(app, name, {"a": [1, 2]})
    assert expect_json(again, 200) == first and again.headers["ETag"] == '"1"'
    assert app.head_position() == before
    assert len(expect_json(app.get(cpath(name) + "/history"), 200)) == 1
    # 1 and 1.0 are the same number
    n = fresh_name("num")
    set_ok(app, n, 1)
    assert expect_json(put(app, n, 1.0), 200)["version"] == 1


def test_list_is_sorted_by_name_with_the_documented_fields(fresh):
    srv = fresh()
    for name in ("zeta", "alpha", "Mid", "beta.two", "beta.one"):
        set_ok(srv, name, name.upper())
    items = listing(srv)
    assert [c["name"] for c in items] == ["Mid", "alpha", "beta.one", "beta.two", "zeta"]
    assert all(list(c) == LIST_KEYS for c in items)
    assert [c["value"] for c in items] == ["MID", "ALPHA", "BETA.ONE", "BETA.TWO", "ZETA"]
    assert listing(srv, sort="-name")[0]["name"] == "zeta"
    assert [c["name"] for c in listing(srv, name="like.beta*")] == ["beta.one", "beta.two"]
    # "Mid" was set third: the two set after it
    assert [c["name"] for c in listing(srv, updated_at=f"gt.{items[0]['updated_at']}")] == ["beta.one", "beta.two"]


def test_list_pages_beyond_50_names_through_link(fresh):
    srv = fresh()
    names = [f"n{i:03d}" for i in range(60)]
    for n in names:
        set_ok(srv, n, n)
    r = srv.get("/config")
    first = expect_json(r, 200)
    assert [c["name"] for c in first] == names[:50]
    link = r.headers["Link"]
    assert link.startswith("</config?after=") and link.endswith('>; rel="next"'), link
    r = srv.get(link[1:link.index(">")])
    assert [c["name"] for c in expect_json(r, 200)] == names[50:]
    assert "Link" not in r.headers
    assert [c["name"] for c in listing(srv, limit=1000)] == names


def test_names_may_hold_any_text_but_slashes_and_control_characters(app):
    for name in ("db url", "ключ", "a?b#c&d=e", "100%", "tab.less.dots...", "é" * 100, "k" * 247):
        v = set_ok(app, name, name)
        assert v["name"] == name
        assert expect_json(get(app, name), 200) == v
    before = app.head_position()
    body = expect_problem(put(app, "a/b", 1), 422, "validation")
    assert body["errors"] == [{"field": "name", "message": "must be a key: 1-255 characters, no '/' or control characters"}]
    body = expect_problem(put(app, "k" * 248, 1), 422, "validation")
    assert body["errors"] == [{"field": "name", "message": 'must be at most 247 bytes long (the stream name "configs-<key>" may have 255)'}]
    for bad in ("a\u0001b", "a\u007fb", "a\u0085b", "a\x00b"):
        body = expect_problem(put(app, bad, 1), 400, "bad-request")
        assert problem_fields(body) == ["name"]
    expect_problem(app.request("PUT", "/config/%2e%2e", json={"value": 1}), 400, "bad-request")
    expect_problem(app.request("PUT", "/config/%FF", json={"value": 1}), 400, "bad-request")
    expect_problem(get(app, "a/b"), 404, "not-found")
    assert app.head_position() == before


def test_history_and_past_of_an_overlong_name_are_404(app):
    name = "k" * 248
    expect_problem(get(app, name), 404, "not-found")
    expect_problem(app.get(cpath(name) + "/history"), 404, "not-found")
    expect_problem(get(app, name, version=1), 404, "not-found")
    expect_problem(get(app, name, at="2026-01-01T00:00:00Z"), 404, "not-found")


# --------------------------------------------------------------------------
# history, time travel, audit


def test_history_lists_every_change_with_the_old_value(app):
    name = fresh_name("history")
    v1 = set_ok(app, name, {"retries": 3})
    v2 = set_ok(app, name, {"retries": 5})
    v3 = set_ok(app, name, "off")
    gone = expect_json(delete(app, name), 200)

    hist = expect_json(app.get(cpath(name) + "/history"), 200)
    stream = f"configs-{name}"
    assert [(e["type"], e["version"], e["stream"]) for e in hist] == [
        ("ConfigValueSet", 1, stream), ("ConfigValueSet", 2, stream),
        ("ConfigValueSet", 3, stream), ("ConfigValueDeleted", 4, stream)]
    assert [e["timestamp"] for e in hist] == [v1["updated_at"], v2["updated_at"], v3["updated_at"], gone["updated_at"]]
    assert [e["data"] for e in hist] == [
        {"name": name, "value": {"retries": 3}},
        {"name": name, "value": {"retries": 5}, "_previous": {"value": {"retries": 3}}},
        {"name": name, "value": "off", "_previous": {"value": {"retries": 5}}},
        {"name": name, "_previous": {"name": name, "value": "off"}},
    ]
    positions = [e["position"] for e in hist]
    assert positions == sorted(positions)
    # the same events are in the raw stream and in the global feed
    raw = expect_json(app.get("/v1/streams/" + quote(stream, safe="")), 200)
    assert raw["events"] == hist and raw["version"] == 4
    # and through the generated API
    assert expect_json(app.get(f"/v1/configs/{quote(name)}/history"), 200) == hist


def test_value_at_a_past_moment(app):
    name = fresh_name("timeout")
    v1 = set_ok(app, name, 30)
    v2 = set_ok(app, name, 45)
    v3 = set_ok(app, name, {"connect": 5, "read": 60})
    gone = expect_json(delete(app, name), 200)

    def at(ts):
        return get(app, name, at=ts)

    body = expect_problem(at(ts_shift(v1["updated_at"], -1)), 404, "not-found")
    assert body["detail"] == f"configs {name} did not exist at that time"
    for ts, want in [(v1["updated_at"], v1), (ts_shift(v2["updated_at"], -1), v1),
                     (v2["updated_at"], v2), (ts_shift(v3["updated_at"], -1), v2),
                     (v3["updated_at"], v3), (ts_shift(gone["updated_at"], -1), v3)]:
        r = at(ts)
        assert expect_json(r, 200) == want, ts
        assert r.headers["ETag"] == f'"{want["version"]}"'
    expect_problem(at(gone["updated_at"]), 404, "not-found")
    expect_problem(at("2999-01-01T00:00:00Z"), 404, "not-found")

    # the same instant with an offset
    plus2 = parse_ts(v2["updated_at"]).astimezone(timezone(timedelta(hours=2))).isoformat()
    assert plus2.endswith("+02:00")
    assert expect_json(at(plus2), 200) == v2

    # by version
    for want in (v1, v2, v3):
        assert expect_json(get(app, name, version=want["version"]), 200) == want
    expect_problem(get(app, name, version=4), 404, "not-found")
    expect_problem(get(app, name, version=5), 404, "not-found")


def test_if_match_makes_a_compare_and_set(app):
    name = fresh_name("cas")
    set_ok(app, name, 1)
    set_ok(app, name, 2)
    before = app.head_position()
    body = expect_problem(put(app, name, 3, headers={"If-Match": '"1"'}), 412, "precondition-failed")
    assert body["detail"] == f"If-Match: configs {name} is at version 2, not 1"
    expect_problem(delete(app, name, headers={"If-Match": '"1"'}), 412, "precondition-failed")
    expect_problem(put(app, fresh_name("cas-new"), 3, headers={"If-Match": '"1"'}), 412, "precondition-failed")
    expect_problem(put(app, name, 3, headers={"If-Match": "latest"}), 400, "bad-request")
    assert app.head_position() == before
    r = put(app, name, 3, headers={"If-Match": '"2"'})
    assert expect_json(r, 200)["value"] == 3 and r.headers["ETag"] == '"3"'
    assert expect_json(delete(app, name, headers={"If-Match": '"3"'}), 200)["version"] == 4


def test_audit_log_holds_every_change_in_order(fresh):
    srv = fresh()
    set_ok(srv, "a", 1)
    set_ok(srv, "b", 2)
    set_ok(srv, "a", 3)
    expect_json(delete(srv, "b"), 200)
    expect_problem(put(srv, "b", 4), 409, "conflict")
    feed = expect_json(srv.get("/v1/events", params={"types": "ConfigValueSet,ConfigValueDeleted"}), 200)
    assert [(e["stream"], e["type"], e["position"]) for e in feed["events"]] == [
        ("configs-a", "ConfigValueSet", 1), ("configs-b", "ConfigValueSet", 2),
        ("configs-a", "ConfigValueSet", 3), ("configs-b", "ConfigValueDeleted", 4)]
    assert feed["head"] == 4 and feed["next_after"] == 4


def test_concurrent_writers_of_one_name_are_all_recorded(app):
    name = fresh_name("contended")
    errors = []

    def writer(n):
        s = requests.Session()
        try:
            for i in range(5):
                r = s.put(app.url + cpath(name), json={"value": {"writer": n, "i": i}}, timeout=10)
                if r.status_code != 200:
                    errors.append(r.text)
        finally:
            s.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    final = expect_json(get(app, name), 200)
    assert final["version"] == 40
    hist = expect_json(app.get(cpath(name) + "/history"), 200)
    assert [e["version"] for e in hist] == list(range(1, 41))
    assert sorted((e["data"]["value"]["writer"], e["data"]["value"]["i"]) for e in hist) == \
        sorted((n, i) for n in range(8) for i in range(5))
    # each event's _previous is the value of the event before it
    for prev, cur in zip(hist, hist[1:]):
        assert cur["data"]["_previous"] == {"value": prev["data"]["value"]}
    assert final["value"] == hist[-1]["data"]["value"]


# --------------------------------------------------------------------------
# restarts and definition changes


def populate(srv):
    set_ok(srv, "feature.flags", {"new_checkout": False})
    set_ok(srv, "feature.flags", {"new_checkout": True})
    set_ok(srv, "checkout.max_items", 50)
    set_ok(srv, "legacy.mode", "on")
    expect_json(delete(srv, "legacy.mode"), 200)


def snapshot(srv):
    items = listing(srv, limit=1000)
    full = {c["name"]: expect_json(get(srv, c["name"]), 200) for c in items}
    history = {n: expect_json(srv.get(cpath(n) + "/history"), 200)
               for n in ("feature.flags", "checkout.max_items", "legacy.mode")}
    return items, full, history


def test_restart_keeps_everything(fresh):
    srv = fresh()
    populate(srv)
    before = snapshot(srv)
    srv.restart()
    assert snapshot(srv) == before
    expect_problem(put(srv, "legacy.mode", "again"), 409, "conflict")

    # acknowledged means durable, even after kill -9
    last = set_ok(srv, "checkout.max_items", 60)
    srv.kill()
    srv.start()
    assert expect_json(get(srv, "checkout.max_items"), 200) == last
    assert srv.head_position() == 6
    past = expect_json(get(srv, "checkout.max_items", at=ts_shift(last["updated_at"], -1)), 200)
    assert past["value"] == 50


def test_definition_change_rebuilds_projections_with_data_intact(fresh):
    srv = fresh()
    populate(srv)
    items, full, history = snapshot(srv)
    head = srv.head_position()

    def add_description(d):
        d["entities"]["configs"]["fields"]["description"] = {"type": "string", "max_length": 200}

    edited = copy_app_with(srv.dir, APP, add_description)
    assert srv.stop() == 0
    set_app(srv, edited)
    first_line = len(srv.stderr_lines)
    srv.start()
    rebuilt = [m for m in log_messages(srv, first_line) if m.get("msg") == "projections rebuilt from events"]
    assert len(rebuilt) == 1 and rebuilt[0]["events"] == head, srv.stderr_tail()

    items2, full2, history2 = snapshot(srv)
    assert items2 == items  # the list route names its fields: unchanged
    assert full2 == {n: {**c, "description": None} for n, c in full.items()}
    assert list(full2["feature.flags"]) == ["name", "value", "description", "version", "created_at", "updated_at"]
    assert history2 == history
    assert srv.head_position() == head
    expect_problem(put(srv, "legacy.mode", "again"), 409, "conflict")  # still deleted
    past = expect_json(get(srv, "feature.flags", version=1), 200)
    assert past["value"] == {"new_checkout": False} and past["description"] is None

    r = srv.request("PUT", "/config/feature.flags", json={"value": {"new_checkout": True}, "description": "rollout"})
    now = expect_json(r, 200)
    assert now["description"] == "rollout" and now["version"] == 3 and now["value"] == {"new_checkout": True}
    body = expect_problem(srv.request("PUT", "/config/x", json={"value": 1, "description": 5}), 422, "validation")
    assert body["errors"] == [{"field": "description", "message": "must be a string"}]

    # back to the original definition: rebuilt again, the description stays in the log only
    assert srv.stop() == 0
    set_app(srv, APP)
    first_line = len(srv.stderr_lines)
    srv.start()
    assert [m for m in log_messages(srv, first_line) if m.get("msg") == "projections rebuilt from events"]
    assert expect_json(get(srv, "feature.flags"), 200) == {k: v for k, v in now.items() if k != "description"}


# --------------------------------------------------------------------------
# bad input: a precise 4xx and nothing written


def test_bad_input_is_a_precise_4xx_and_writes_nothing(app):
    name = fresh_name("guarded")
    original = set_ok(app, name, {"keep": "me"})
    before = app.head_position()
    p = cpath(name)
    J = lambda o: json.dumps(o).encode()  # noqa: E731
    cases = [
        # (body bytes, content type, status, slug, errors[].field list or None)
        (J({"value": None}), "application/json", 422, "validation", ["value"]),
        (J({"valu": 1}), "application/json", 422, "validation", ["valu", "value"]),
        (J({"value": 1, "comment": "x", "owner": "y"}), "application/json", 422, "validation", ["comment", "owner"]),
        (J({"value": 1, "version": 9}), "application/json", 422, "validation", ["version"]),
        (J({"value": 1, "updated_at": "2026-01-01T00:00:00Z"}), "application/json", 422, "validation",
         ["updated_at"]),
        (J({"value": 1, "name": "other"}), "application/json", 422, "validation", ["name"]),
        (J({"value": 1, "name": 5}), "application/json", 422, "validation", ["name"]),
        (J([{"value": 1}]), "application/json", 422, "validation", [""]),
        (J(1), "application/json", 400, "malformed-json", None),
        (b'{"value": 1', "application/json", 400, "malformed-json", None),
        (b'{"value": 1, "value": 2}', "application/json", 400, "malformed-json", None),
        (b'{"value": "a\\u0000b"}', "application/json", 400, "malformed-json", None),
        (b'{"value": 123456789012345678901234567890}', "application/json", 400, "malformed-json", None),
        (b"", "application/json", 400, "malformed-json", None),
        (b'\xff{"value": 1}', "application/json", 400, "malformed-json", None),
        (J({"value": 1}), "text/plain", 415, "unsupported-media-type", None),
        (J({"value": 1}), "application/x-www-form-urlencoded", 415, "unsupported-media-type", None),
    ]
    failures = []
    for body, ctype, status, slug, fields in cases:
        r = app.request("PUT", p, data=body, headers={"Content-Type": ctype})
        try:
            problem = expect_problem(r, status, slug, instance=p)
            if fields is not None:
                assert problem_fields(problem) == fields, problem
        except AssertionError as e:
            failures.append(f"{body[:60]!r} ({ctype}): {e}")
    assert not failures, "\n".join(failures)

    reads = [
        ({"at": "yesterday"}, "at"), ({"at": "2026-02-30T00:00:00Z"}, "at"), ({"at": ""}, "at"),
        ({"at": "1700000000"}, "at"), ({"at": "2026-01-01 00:00:00"}, "at"),
        ({"version": "0"}, "version"), ({"version": "-1"}, "version"), ({"version": "v2"}, "version"),
        ({"version": "99999999999999999999"}, "version"),
    ]
    for params, field in reads:
        body = expect_problem(app.get(p, params=params), 400, "bad-request", instance=p)
        assert problem_fields(body) == [field], (params, body)
    for params, field in [({"limit": "100000"}, "limit"), ({"limit": "0"}, "limit"), ({"sort": "value"}, "sort"),
                          ({"sort": "nope"}, "sort"), ({"value": "1"}, "value"), ({"colour": "red"}, "colour"),
                          ({"after": "bogus"}, "after"), ({"at": "2026-01-01T00:00:00Z"}, "at")]:
        body = expect_problem(app.get("/config", params=params), 400, "bad-request", instance="/config")
        assert problem_fields(body) == [field], (params, body)
    expect_problem(app.request("POST", p, json={"value": 1}), 405, "method-not-allowed")
    expect_problem(app.request("PATCH", "/config", json={"value": 1}), 405, "method-not-allowed")
    raw = raw_request(app.port, build_request("PUT", "/config/a%01b", headers=[("Content-Type", "application/json")],
                                              body=b'{"value":1}'))
    assert raw is not None and raw.status_code == 400, raw

    # PUT replaces the whole setting (docs/app-definition.md): "value" is
    # required on a name that exists, as on a new name
    body = expect_problem(app.request("PUT", p, json={}), 422, "validation", instance=p)
    assert body["errors"] == [{"field": "value", "message": "is required"}]
    new = cpath(fresh_name("guarded-new"))
    body = expect_problem(app.request("PUT", new, json={}), 422, "validation", instance=new)
    assert body["errors"] == [{"field": "value", "message": "is required"}]
    body = expect_problem(app.request("PUT", new, json={"valu": 1}), 422, "validation", instance=new)
    assert problem_fields(body) == ["valu", "value"]

    assert app.head_position() == before
    assert expect_json(get(app, name), 200) == original


# --------------------------------------------------------------------------
# the README


def test_readme_commands_work_as_written(fresh):
    check_readme(README, fresh(), min_blocks=12)
