"""
test_entities.py - the API an app definition generates (/v1/{entity}):
create, get with ETag, update, upsert, delete and the recreate rules,
If-Match, custom commands with `when`/`set`/`input`, list filters with every
operator, sort, limit and keyset paging through Link headers, time travel
(?at=, ?version=), history with private fields left out, an app route with
fixed options, and bad input of every kind answered with the exact status,
problem type and errors[].field names while writing nothing. The last test
of the module checks that the event feed holds exactly the events of the
writes that were acknowledged. Contracts: docs/app-definition.md,
docs/http-api.md, DESIGN.md section 4.

The definition is tests/api/apps/entities.json: `owners` (client-given key
`handle`, recreate allowed), `items` (generated UUIDv7 key, one field of
every type, unique e-mail, private `secret`, immutable `sku`, ref to owners,
commands `publish` and `rename`, no recreate) and `rows` (create only, for
paging).
"""

import json
import os
import threading
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest
import requests

from conftest import (UUIDV7_RE, build_request, check_event_shape, expect_json, expect_problem, problem_fields,
                      raw_request, running_server)

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(os.environ.get("CHRONICLE_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE)),
                   "tests", "api", "apps", "entities.json")

ITEM_FIELDS = ["title", "notes", "count", "weight", "active", "due", "status", "meta", "owner", "schedule",
               "contact", "sku", "published_at"]
ITEM_KEYS = ["id"] + ITEM_FIELDS + ["version", "created_at", "updated_at"]
OWNER_KEYS = ["handle", "display", "version", "created_at", "updated_at"]
ROW_KEYS = ["row_id", "n", "grp", "label", "version", "created_at", "updated_at"]
KEY_OF = {"items": "id", "owners": "handle", "rows": "row_id"}
KEY_MSG = "must be a key: 1-255 characters, no '/' or control characters"


class Api:
    """The module's server plus a ledger of every acknowledged write:
    (stream, version) of each 2xx answer that carries an entity."""

    def __init__(self, srv):
        self.srv = srv
        self.ledger = set()

    def __getattr__(self, name):
        return getattr(self.srv, name)

    def call(self, method, path, body=None, headers=None, raw=None, ctype="application/json"):
        h = {}
        data = None
        if raw is not None:
            data = raw
        elif body is not None:
            data = json.dumps(body).encode()
        if data is not None and ctype:
            h["Content-Type"] = ctype
        h.update(headers or {})
        r = self.srv.request(method, path, data=data, headers=h)
        if method != "GET" and 200 <= r.status_code < 300:
            entity = path.split("/")[2]
            b = r.json()
            self.ledger.add((f"{entity}-{b[KEY_OF[entity]]}", b["version"]))
        return r

    def create(self, entity, body, status=201):
        return expect_json(self.call("POST", f"/v1/{entity}", body), status)

    def patch(self, entity, key, body, **kw):
        return self.call("PATCH", f"/v1/{entity}/{quote(key, safe='')}", body, **kw)

    def put(self, entity, key, body, **kw):
        return self.call("PUT", f"/v1/{entity}/{quote(key, safe='')}", body, **kw)

    def delete(self, entity, key, **kw):
        return self.call("DELETE", f"/v1/{entity}/{quote(key, safe='')}", **kw)

    def command(self, entity, key, name, body=None, **kw):
        return self.call("POST", f"/v1/{entity}/{quote(key, safe='')}/{name}", body, **kw)

    def one(self, entity, key, **params):
        return self.srv.get(f"/v1/{entity}/{quote(key, safe='')}", params=params or None)

    def history(self, entity, key):
        return self.srv.get(f"/v1/{entity}/{quote(key, safe='')}/history")

    def list(self, entity, params=None):
        return self.srv.get(f"/v1/{entity}", params=params)

    def head(self):
        return self.srv.head_position()


@pytest.fixture(scope="module")
def api():
    with running_server(args=["--app", APP], name="entities") as srv:
        yield Api(srv)


def uid(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def owner(api, handle=None, **extra):
    body = {"handle": handle or uid("o")}
    body.update(extra)
    return api.create("owners", body)


def item(api, **fields):
    body = {"title": "Item"}
    body.update(fields)
    return api.create("items", body)


def shift(ts, us):
    d = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ") + timedelta(microseconds=us)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------
# create and get


def test_create_answers_201_with_defaults_location_and_etag(api):
    r = api.call("POST", "/v1/items", {"title": "First"})
    it = expect_json(r, 201)
    assert list(it) == ITEM_KEYS  # key, fields in definition order (no private ones), system fields
    assert UUIDV7_RE.match(it["id"]), it
    assert it["title"] == "First" and it["active"] is True and it["status"] == "draft"
    assert all(it[f] is None for f in ITEM_FIELDS if f not in ("title", "active", "status"))
    assert it["version"] == 1 and it["created_at"] == it["updated_at"]
    assert r.headers["ETag"] == '"1"'
    assert r.headers["Location"] == f"/v1/items/{it['id']}"
    g = api.get(r.headers["Location"])
    assert expect_json(g, 200) == it and g.headers["ETag"] == '"1"'
    h = api.srv.request("HEAD", r.headers["Location"])
    assert h.status_code == 200 and h.headers["ETag"] == '"1"' and h.content == b""


def test_create_normalises_values_of_every_type(api):
    o = owner(api)
    it = item(api, title="Ünïcode ☃ title", notes="two\nlines\tand a tab", count=0, weight=-10, active=False,
              due="2026-01-02T03:04:05.5+01:00", status="archived", meta={"k": [1, {"n": None}], "s": "x"},
              owner=o["handle"], schedule="0 9 * * mon-fri", contact="Ann.Lee+tag@Example.ORG", sku="SKU-1",
              published_at="2026-01-02")
    assert it["due"] == "2026-01-02T02:04:05.500000Z"
    assert it["published_at"] == "2026-01-02T00:00:00.000000Z"
    assert it["contact"] == "Ann.Lee+tag@example.org"  # the domain is lower-cased, the local part kept
    assert it["weight"] == -10 and it["count"] == 0 and it["active"] is False
    assert it["meta"] == {"k": [1, {"n": None}], "s": "x"}
    assert it["schedule"] == "0 9 * * mon-fri" and it["owner"] == o["handle"]
    assert expect_json(api.one("items", it["id"]), 200) == it
    # the boundaries themselves are valid
    edge = item(api, title="t" * 20, notes="n" * 100, count=1000, weight=10)
    assert edge["title"] == "t" * 20 and edge["count"] == 1000
    for cron in ("*/15 * * * *", "0 0 1 JAN,JUL *", "5-10/2 0-23/6 1-31 1-12 0-7", "@hourly", "@yearly"):
        assert item(api, schedule=cron)["schedule"] == cron


def test_create_uses_the_key_from_the_body_and_refuses_duplicates(api):
    key = uid("given")
    it = item(api, id=key)
    assert it["id"] == key
    before = api.head()
    body = expect_problem(api.call("POST", "/v1/items", {"id": key, "title": "again"}), 409, "conflict",
                          instance="/v1/items")
    assert body["detail"] == f"items {key} already exists"
    assert api.head() == before
    assert expect_json(api.one("items", key), 200) == it


def test_a_required_key_must_be_given(api):
    body = expect_problem(api.call("POST", "/v1/owners", {"display": "x"}), 422, "validation")
    assert body["errors"] == [{"field": "handle", "message": "is required"}]
    o = owner(api, display="Ann")
    assert list(o) == OWNER_KEYS


def test_get_of_unknown_or_impossible_keys_is_404(api):
    for key in ("nope", "a%2Fb", "%E2%98%83"):
        body = expect_problem(api.get(f"/v1/items/{key}"), 404, "not-found")
        assert body["detail"].startswith("items ") and body["detail"].endswith(" does not exist")
    expect_problem(api.get("/v1/nothings"), 404, "not-found")
    expect_problem(api.get("/v1/nothings/x"), 404, "not-found")


# --------------------------------------------------------------------------
# private fields


def test_private_fields_are_stored_but_never_returned(api):
    it = item(api, secret="hunter2")
    assert "secret" not in it
    r = api.patch("items", it["id"], {"secret": "hunter3", "title": "Renamed"})
    v2 = expect_json(r, 200)
    assert "secret" not in v2 and v2["version"] == 2
    assert "secret" not in expect_json(api.one("items", it["id"]), 200)
    assert "secret" not in expect_json(api.one("items", it["id"], version=1), 200)
    listed = [x for x in expect_json(api.list("items", {"limit": 1000}), 200) if x["id"] == it["id"]]
    assert listed == [v2]
    gone = expect_json(api.delete("items", it["id"]), 200)
    assert "secret" not in gone
    hist = expect_json(api.history("items", it["id"]), 200)
    assert [e["type"] for e in hist] == ["ItemCreated", "ItemChanged", "ItemDeleted"]
    text = json.dumps(hist)
    assert "secret" not in text and "hunter" not in text
    assert hist[1]["data"] == {"id": it["id"], "title": "Renamed", "_previous": {"title": "Item"}}
    assert hist[2]["data"]["_previous"] == {k: v for k, v in it.items()
                                            if k in ("id", "title", "active", "status")} | {"title": "Renamed"}


def test_private_fields_do_not_leak_through_the_raw_log(api):
    it = item(api, secret="s3cr3t-value")
    raw = expect_json(api.get(f"/v1/streams/items-{it['id']}"), 200)
    assert "s3cr3t-value" not in json.dumps(raw)
    feed = api.read_feed(types=["ItemCreated"])
    assert "s3cr3t-value" not in json.dumps(feed)


def test_private_fields_cannot_be_filtered_or_sorted_and_look_unknown(api):
    for param, name in (({"secret": "x"}, "secret"), ({"secret": "like.*"}, "secret"), ({"sort": "secret"}, "sort"),
                        ({"sort": "-secret"}, "sort")):
        priv = expect_problem(api.list("items", param), 400, "bad-request")
        unknown_param = {("nosuchfield" if k == "secret" else k): v.replace("secret", "nosuchfield")
                         for k, v in param.items()}
        unk = expect_problem(api.list("items", unknown_param), 400, "bad-request")
        assert problem_fields(priv) == [name] and problem_fields(unk) == [name.replace("secret", "nosuchfield")]
        assert priv["detail"].replace("secret", "X") == unk["detail"].replace("nosuchfield", "X"), (priv, unk)
        assert priv["errors"][0]["message"].replace("secret", "X") == \
            unk["errors"][0]["message"].replace("nosuchfield", "X")
        assert set(priv) == set(unk)


# --------------------------------------------------------------------------
# update, If-Match, upsert


def test_patch_merges_clears_and_keeps(api):
    o = owner(api)
    it = item(api, notes="n", count=3, owner=o["handle"], sku="S1")
    r = api.patch("items", it["id"], {"count": 4, "notes": None, "weight": 2.5})
    v2 = expect_json(r, 200)
    assert v2 == {**it, "count": 4, "notes": None, "weight": 2.5, "version": 2, "updated_at": v2["updated_at"]}
    assert r.headers["ETag"] == '"2"'
    hist = expect_json(api.history("items", it["id"]), 200)
    assert hist[1]["type"] == "ItemChanged"
    assert hist[1]["data"] == {"id": it["id"], "count": 4, "notes": None, "weight": 2.5,
                               "_previous": {"count": 3, "notes": "n", "weight": None}}

    # nothing changes: 200, same version, no event
    before = api.head()
    for body in ({}, {"count": 4}, {"sku": "S1"}, {"id": it["id"]}, {"notes": None}, {"weight": 2.5}):
        r = api.patch("items", it["id"], body)
        assert expect_json(r, 200) == v2 and r.headers["ETag"] == '"2"', body
    assert api.head() == before


def test_immutable_fields_are_set_once(api):
    it = item(api, sku="S1")
    body = expect_problem(api.patch("items", it["id"], {"sku": "S2"}), 422, "validation")
    assert body["errors"] == [{"field": "sku", "message": "is immutable"}]
    body = expect_problem(api.patch("items", it["id"], {"sku": None}), 422, "validation")
    assert body["errors"] == [{"field": "sku", "message": "is immutable"}]
    unset = item(api)
    body = expect_problem(api.patch("items", unset["id"], {"sku": "late"}), 422, "validation")
    assert body["errors"] == [{"field": "sku", "message": "is immutable"}]


def test_patch_errors(api):
    it = item(api)
    before = api.head()
    body = expect_problem(api.patch("items", it["id"], {"title": None, "version": 9, "created_at": "x",
                                                        "id": "other", "colour": "red"}), 422, "validation")
    assert body["errors"] == [
        {"field": "title", "message": "is required"},
        {"field": "version", "message": "is read-only"},
        {"field": "created_at", "message": "is read-only"},
        {"field": "id", "message": f'must equal the key "{it["id"]}"'},
        {"field": "colour", "message": "is not a field of items"},
    ]
    assert body["detail"] == "5 fields failed validation"
    body = expect_problem(api.patch("items", "no-such-item", {"title": "x"}), 404, "not-found")
    assert body["detail"] == "items no-such-item does not exist"
    assert api.head() == before


def test_if_match(api):
    it = item(api)
    k = it["id"]
    v2 = expect_json(api.patch("items", k, {"count": 1}, headers={"If-Match": '"1"'}), 200)
    assert v2["version"] == 2
    before = api.head()
    body = expect_problem(api.patch("items", k, {"count": 2}, headers={"If-Match": '"1"'}), 412,
                          "precondition-failed")
    assert body["detail"] == f"If-Match: items {k} is at version 2, not 1"
    expect_problem(api.put("items", k, {"count": 2}, headers={"If-Match": '"3"'}), 412, "precondition-failed")
    expect_problem(api.delete("items", k, headers={"If-Match": '"1"'}), 412, "precondition-failed")
    expect_problem(api.command("items", k, "publish", headers={"If-Match": '"1"'}), 412, "precondition-failed")
    expect_problem(api.patch("items", "no-such-item", {"count": 2}, headers={"If-Match": '"1"'}), 412,
                   "precondition-failed")
    for bad in ("abc", '"abc"', '"-1"', "", '""'):
        expect_problem(api.patch("items", k, {"count": 2}, headers={"If-Match": bad}), 400, "bad-request")
    assert api.head() == before
    # every spelling of the tag
    for tag, want in (('"2"', 3), ("3", 4), ('W/"4"', 5)):
        r = api.patch("items", k, {"count": want}, headers={"If-Match": tag})
        assert expect_json(r, 200)["version"] == want and r.headers["ETag"] == f'"{want}"'
    assert expect_json(api.command("items", k, "publish", headers={"If-Match": '"5"'}), 200)["version"] == 6
    assert expect_json(api.delete("items", k, headers={"If-Match": '"6"'}), 200)["version"] == 7


def test_put_creates_when_absent_and_replaces_when_present(api):
    key = uid("upsert")
    r = api.put("items", key, {"title": "Made by PUT", "count": 1})
    made = expect_json(r, 201)
    assert made["id"] == key and made["version"] == 1 and made["status"] == "draft"
    assert r.headers["ETag"] == '"1"'
    assert r.headers["Location"] == f"/v1/items/{quote(key, safe='')}"
    # On an existing entity the body is the whole new state: count, left
    # out, goes back to null, status (left out) to its default.
    expect_json(api.patch("items", key, {"status": "published"}), 200)
    r = api.put("items", key, {"title": "Replaced"})
    replaced = expect_json(r, 200)
    assert replaced["title"] == "Replaced" and replaced["count"] is None
    assert replaced["status"] == "draft" and replaced["version"] == 3
    assert "Location" not in r.headers
    # the same state again changes nothing
    again = expect_json(api.put("items", key, {"title": "Replaced"}), 200)
    assert again["version"] == 3
    hist = expect_json(api.history("items", key), 200)
    assert [e["type"] for e in hist] == ["ItemCreated", "ItemChanged", "ItemChanged"]
    body = expect_problem(api.put("items", key, {"count": 2}), 422, "validation")
    assert body["errors"] == [{"field": "title", "message": "is required"}]
    body = expect_problem(api.put("items", uid("upsert"), {"count": 1}), 422, "validation")
    assert body["errors"] == [{"field": "title", "message": "is required"}]
    body = expect_problem(api.put("items", key, {"id": "different", "title": "x"}), 422, "validation")
    assert problem_fields(body) == ["id"]
    body = expect_problem(api.put("items", "a/b", {"title": "x"}), 422, "validation")
    assert body["errors"] == [{"field": "id", "message": KEY_MSG}]


def test_operations_not_enabled_are_405(api):
    row = api.create("rows", {"row_id": uid("r"), "n": 1, "grp": "odd"})
    before = api.head()
    for method in ("PATCH", "PUT", "DELETE"):
        r = api.call(method, f"/v1/rows/{row['row_id']}", {"n": 2})
        body = expect_problem(r, 405, "method-not-allowed")
        assert r.headers["Allow"] == "GET"
        assert body["detail"] == f"{method} is not allowed here; allowed: GET"
    r = api.call("DELETE", "/v1/items")
    expect_problem(r, 405, "method-not-allowed")
    assert r.headers["Allow"] == "GET, POST"
    assert api.head() == before


# --------------------------------------------------------------------------
# delete and recreate


def test_delete_then_get_404_and_no_recreate_for_items(api):
    o = owner(api)
    it = item(api, contact="unique@example.com", owner=o["handle"], sku="SKU-D")
    r = api.delete("items", it["id"])
    gone = expect_json(r, 200)
    assert gone == {**it, "version": 2, "updated_at": gone["updated_at"]}
    assert r.headers["ETag"] == '"2"'
    expect_problem(api.one("items", it["id"]), 404, "not-found")
    assert it["id"] not in [x["id"] for x in expect_json(api.list("items", {"limit": 1000}), 200)]
    hist = expect_json(api.history("items", it["id"]), 200)
    assert hist[-1]["type"] == "ItemDeleted"
    assert hist[-1]["data"] == {"id": it["id"], "_previous": {k: v for k, v in it.items()
                                                              if v is not None and k not in
                                                              ("version", "created_at", "updated_at")}}
    before = api.head()
    body = expect_problem(api.delete("items", it["id"]), 404, "not-found")
    assert body["detail"] == f"items {it['id']} does not exist"
    body = expect_problem(api.call("POST", "/v1/items", {"id": it["id"], "title": "again"}), 409, "conflict")
    assert body["detail"] == f"items {it['id']} was deleted and cannot be recreated"
    expect_problem(api.put("items", it["id"], {"title": "again"}), 409, "conflict")
    body = expect_problem(api.patch("items", it["id"], {"title": "again"}), 409, "conflict")
    assert body["detail"] == f"items {it['id']} was deleted"
    expect_problem(api.command("items", it["id"], "publish"), 404, "not-found")
    assert api.head() == before
    # its unique value is free again
    assert item(api, contact="unique@example.com")["contact"] == "unique@example.com"


def test_owners_may_be_recreated(api):
    h = uid("phoenix")
    first = owner(api, h, display="First life")
    expect_json(api.delete("owners", h), 200)
    body = expect_problem(api.patch("owners", h, {"display": "x"}), 404, "not-found")
    assert body["detail"] == f"owners {h} does not exist"
    # a ref to a deleted owner is refused
    body = expect_problem(api.call("POST", "/v1/items", {"title": "t", "owner": h}), 422, "validation")
    assert body["errors"] == [{"field": "owner", "message": f'owners "{h}" does not exist'}]
    again = owner(api, h)
    assert again["version"] == 3 and again["display"] is None
    assert again["created_at"] > first["created_at"]
    hist = expect_json(api.history("owners", h), 200)
    assert [e["type"] for e in hist] == ["OwnersCreated", "OwnersDeleted", "OwnersCreated"]
    # deleted again, then PUT brings it back
    expect_json(api.delete("owners", h), 200)
    back = expect_json(api.put("owners", h, {"display": "Third life"}), 201)
    assert back["version"] == 5 and back["display"] == "Third life"
    # time travel across the lives
    assert expect_json(api.one("owners", h, at=first["updated_at"]), 200) == first
    expect_problem(api.one("owners", h, at=shift(again["created_at"], -1)), 404, "not-found")
    assert expect_json(api.one("owners", h, version=3), 200) == again
    expect_problem(api.one("owners", h, version=2), 404, "not-found")


def test_unique_values(api):
    a = item(api, contact="Dup@Example.com")
    before = api.head()
    for value in ("Dup@Example.com", "Dup@EXAMPLE.COM"):
        body = expect_problem(api.call("POST", "/v1/items", {"title": "b", "contact": value}), 409, "conflict",
                              instance="/v1/items")
        assert body["detail"] == "contact: another items already has this value"
        assert body["errors"] == [{"field": "contact", "message": "another items already has this value"}]
    b = item(api)
    body = expect_problem(api.patch("items", b["id"], {"contact": "Dup@example.com"}), 409, "conflict")
    assert body["detail"] == "contact: another items already has this value"
    assert api.head() == before + 1  # only b
    # the owner of a value may write it again
    assert expect_json(api.patch("items", a["id"], {"contact": "Dup@example.COM"}), 200)["version"] == 1
    # releasing it by clearing the field
    expect_json(api.patch("items", a["id"], {"contact": None}), 200)
    assert expect_json(api.patch("items", b["id"], {"contact": "Dup@Example.com"}), 200)["contact"] == \
        "Dup@example.com"


def test_refs_are_checked(api):
    o = owner(api)
    it = item(api, owner=o["handle"])
    before = api.head()
    for ref in ("ghost", o["handle"].upper()):
        body = expect_problem(api.patch("items", it["id"], {"owner": ref}), 422, "validation")
        assert body["errors"] == [{"field": "owner", "message": f'owners "{ref}" does not exist'}]
    assert api.head() == before
    # the referenced owner cannot be deleted while the item refers to it
    # (on_delete "restrict", the default; "keep" allows it: the status app's
    # updates keep their team_id)
    body = expect_problem(api.delete("owners", o["handle"]), 409, "conflict")
    assert body["detail"] == (f"owners {o['handle']} is referred to by items (field owner): "
                              "delete or change those first")
    assert api.head() == before
    assert expect_json(api.one("owners", o["handle"]), 200)["handle"] == o["handle"]
    # a deleted item no longer holds it
    it2 = item(api, owner=o["handle"])
    expect_json(api.patch("items", it["id"], {"owner": None}), 200)
    expect_problem(api.delete("owners", o["handle"]), 409, "conflict")
    expect_json(api.delete("items", it2["id"]), 200)
    expect_json(api.delete("owners", o["handle"]), 200)


# --------------------------------------------------------------------------
# custom commands


def test_command_with_when_and_set(api):
    it = item(api)
    r = api.command("items", it["id"], "publish")
    pub = expect_json(r, 200)
    assert pub["status"] == "published" and pub["published_at"] == pub["updated_at"] and pub["version"] == 2
    assert r.headers["ETag"] == '"2"'
    before = api.head()
    body = expect_problem(api.command("items", it["id"], "publish"), 409, "conflict")
    assert body["detail"] == 'precondition failed: status is "published", expected "draft"'
    body = expect_problem(api.command("items", it["id"], "publish", {"extra": 1}), 422, "validation")
    assert body["errors"] == [{"field": "extra", "message": "is not an input of publish"}]
    body = expect_problem(api.command("items", "no-such-item", "publish"), 404, "not-found")
    assert body["detail"] == "items no-such-item does not exist"
    assert api.head() == before
    ev = expect_json(api.history("items", it["id"]), 200)[-1]
    assert ev["type"] == "ItemPublished"
    assert ev["data"] == {"id": it["id"], "status": "published", "published_at": pub["published_at"],
                          "_previous": {"status": "draft", "published_at": None}, "_input": {}}


def test_command_with_input(api):
    it = item(api, title="Old")
    before = api.head()
    cases = [
        (None, ["title"]),
        ({}, ["title"]),
        ({"reason": "no title"}, ["title"]),
        ({"title": "t" * 21}, ["title"]),
        ({"title": 5, "reason": "r" * 51}, ["title", "reason"]),
        ({"title": "ok", "status": "archived"}, ["status"]),
    ]
    for body, fields in cases:
        p = expect_problem(api.command("items", it["id"], "rename", body), 422, "validation")
        assert problem_fields(p) == fields, (body, p)
    expect_problem(api.command("items", it["id"], "rename", raw=b"{", ctype="application/json"), 400,
                   "malformed-json")
    expect_problem(api.command("items", it["id"], "rename", raw=b'{"title":"x"}', ctype="text/plain"), 415,
                   "unsupported-media-type")
    assert api.head() == before
    r = api.command("items", it["id"], "rename", {"title": "New", "reason": "clearer"})
    renamed = expect_json(r, 200)
    assert renamed["title"] == "New" and renamed["version"] == 2
    ev = expect_json(api.history("items", it["id"]), 200)[-1]
    assert ev["type"] == "ItemRenamed"
    assert ev["data"] == {"id": it["id"], "title": "New", "_previous": {"title": "Old"},
                          "_input": {"title": "New", "reason": "clearer"}}
    # a command is an intent: the same value again is still an event
    again = expect_json(api.command("items", it["id"], "rename", {"title": "New"}), 200)
    assert again["version"] == 3
    r = api.get(f"/v1/items/{it['id']}/rename")
    expect_problem(r, 405, "method-not-allowed")
    assert r.headers["Allow"] == "POST"
    expect_problem(api.command("items", it["id"], "nosuchcommand"), 404, "not-found")


# --------------------------------------------------------------------------
# lists


@pytest.fixture(scope="module")
def rows(api):
    """130 rows: n = i // 2 (pairs of equal n), grp even/odd, a label on two
    rows of three (the third has none). Created from 8 threads."""
    tag = uuid.uuid4().hex[:6]
    specs = []
    for i in range(130):
        spec = {"row_id": f"{tag}-{i:03d}", "n": i // 2, "grp": "even" if i % 2 == 0 else "odd"}
        if i % 3:
            spec["label"] = f"{'Label' if i % 2 else 'label'}-{(i * 37) % 101:03d}"
        specs.append(spec)
    made, errors = {}, []
    lock = threading.Lock()

    def worker(chunk):
        s = requests.Session()
        try:
            for spec in chunk:
                r = s.post(api.url + "/v1/rows", json=spec, timeout=10)
                with lock:
                    if r.status_code != 201:
                        errors.append(r.text)
                    else:
                        b = r.json()
                        made[b["row_id"]] = b
                        api.ledger.add((f"rows-{b['row_id']}", 1))
        finally:
            s.close()

    threads = [threading.Thread(target=worker, args=(specs[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    return tag, [made[s["row_id"]] for s in specs]


def mine(api, tag, params):
    """Lists rows with row_id like tag-* plus params (one page)."""
    p = {"row_id": f"like.{tag}-*"}
    p.update(params)
    r = api.list("rows", p)
    return expect_json(r, 200), r.headers.get("Link")


def follow(api, path, params):
    """Every page of a list, following Link headers; returns (items, pages)."""
    items, pages = [], 0
    r = api.get(path, params=params)
    while True:
        items.extend(expect_json(r, 200))
        pages += 1
        link = r.headers.get("Link")
        if not link:
            return items, pages
        assert link.endswith('>; rel="next"') and link.startswith("<" + path + "?"), link
        r = api.get(link[1:link.index(">")])


def test_list_default_limit_50_and_max_1000(api, rows):
    tag, all_rows = rows
    page, link = mine(api, tag, {})
    assert len(page) == 50 and link
    assert [x["row_id"] for x in page] == sorted(x["row_id"] for x in all_rows)[:50]
    assert all(list(x) == ROW_KEYS for x in page)
    page, link = mine(api, tag, {"limit": 1000})
    assert len(page) == 130 and link is None
    assert page == sorted(all_rows, key=lambda x: x["row_id"])
    for bad in ("1001", "100000", "0", "-5", "1.5", "x", ""):
        body = expect_problem(api.list("rows", {"limit": bad}), 400, "bad-request", instance="/v1/rows")
        assert body["errors"] == [{"field": "limit", "message": "must be an integer from 1 to 1000"}], bad


def test_keyset_paging_through_link_headers(api, rows):
    tag, all_rows = rows
    got, pages = follow(api, "/v1/rows", {"row_id": f"like.{tag}-*", "sort": "-n", "limit": 25})
    assert pages == 6
    assert got == sorted(all_rows, key=lambda x: (x["n"], x["row_id"]), reverse=True)

    # nullable sort column, ascending: unset first, key ascending breaks ties
    got, pages = follow(api, "/v1/rows", {"row_id": f"like.{tag}-*", "grp": "odd", "sort": "label", "limit": 7})
    odd = [x for x in all_rows if x["grp"] == "odd"]
    assert got == sorted(odd, key=lambda x: (x["label"] or "", x["row_id"]))
    assert pages == 10 and got[0]["label"] is None
    # descending: unset last; the key breaks ties in the direction of the last term
    got, _ = follow(api, "/v1/rows", {"row_id": f"like.{tag}-*", "sort": "-label,n", "limit": 40})
    want = sorted(all_rows, key=lambda x: x["row_id"])
    want = sorted(want, key=lambda x: x["n"])
    want = sorted(want, key=lambda x: x["label"] or "", reverse=True)  # stable: keeps the order of ties
    assert got == want
    assert got[-1]["label"] is None and got[0]["label"] is not None

    # several terms
    got, pages = follow(api, "/v1/rows", {"row_id": f"like.{tag}-*", "sort": "grp,-n", "limit": 33})
    want = sorted(all_rows, key=lambda x: x["row_id"], reverse=True)
    want = sorted(want, key=lambda x: x["n"], reverse=True)
    want = sorted(want, key=lambda x: x["grp"])
    assert got == want and pages == 4


def test_a_cursor_fits_only_its_own_query(api, rows):
    tag, _ = rows
    r = api.list("rows", {"row_id": f"like.{tag}-*", "sort": "n", "limit": 10})
    link = r.headers["Link"]
    cursor = link[link.index("after=") + 6:link.index(">")]
    # the same cursor with another sort
    body = expect_problem(api.list("rows", {"sort": "-n", "after": cursor}), 400, "bad-request")
    assert body["errors"] == [{"field": "after", "message": "invalid cursor"}]
    # tampered
    for bad in (cursor[:-2], cursor + "A", "x" + cursor[1:], "!!", "e30"):
        body = expect_problem(api.list("rows", {"sort": "n", "after": bad}), 400, "bad-request")
        assert problem_fields(body) == ["after"], bad
    # an empty after is the first page
    assert expect_json(api.list("rows", {"row_id": f"like.{tag}-*", "sort": "n", "limit": 10, "after": ""}), 200) \
        == expect_json(r, 200)


def test_filter_operators(api, rows):
    tag, all_rows = rows

    def ids(params):
        got, _ = follow(api, "/v1/rows", {"row_id": f"like.{tag}-*", "limit": 1000, **params})
        return [x["row_id"] for x in got]

    def want(pred):
        return sorted(x["row_id"] for x in all_rows if pred(x))

    assert ids({"n": "7"}) == want(lambda x: x["n"] == 7)
    assert ids({"n": "eq.7"}) == want(lambda x: x["n"] == 7)
    assert ids({"n": "neq.7"}) == want(lambda x: x["n"] != 7)
    assert ids({"n": "gt.60"}) == want(lambda x: x["n"] > 60)
    assert ids({"n": "gte.60"}) == want(lambda x: x["n"] >= 60)
    assert ids({"n": "lt.3"}) == want(lambda x: x["n"] < 3)
    assert ids({"n": "lte.3"}) == want(lambda x: x["n"] <= 3)
    assert ids({"n": "in.1,5,64,999"}) == want(lambda x: x["n"] in (1, 5, 64))
    assert ids({"n": ["gte.10", "lt.12"]}) == want(lambda x: 10 <= x["n"] < 12)  # both must hold
    assert ids({"grp": "odd", "n": "lt.5"}) == want(lambda x: x["grp"] == "odd" and x["n"] < 5)
    assert ids({"grp": "in.even,odd"}) == want(lambda x: True)
    # like ignores case; * is the wildcard; % and _ are literal
    assert ids({"label": "like.label-0*"}) == want(lambda x: (x["label"] or "").lower().startswith("label-0"))
    assert ids({"label": "like.*-05_"}) == []
    assert ids({"label": "like.%"}) == []
    # neq matches unset values, gt/like never do
    assert ids({"label": "neq.nothing"}) == want(lambda x: True)
    assert ids({"label": "gt."}) == want(lambda x: x["label"] is not None)
    # system columns
    first = min(all_rows, key=lambda x: x["created_at"])
    assert ids({"created_at": f"gt.{first['created_at']}"}) == want(lambda x: x["created_at"] > first["created_at"])
    assert ids({"version": "1"}) == want(lambda x: True)
    assert ids({"version": "gt.1"}) == []
    assert ids({"row_id": f"{tag}-007"}) == [f"{tag}-007"]
    assert ids({"row_id": f"in.{tag}-001,{tag}-002"}) == [f"{tag}-001", f"{tag}-002"]
    # a prefix that is not an operator is part of the value
    assert ids({"label": "foo.bar"}) == []
    assert ids({"label": "eq.gt.5"}) == []


def test_filters_on_items_of_every_type(api):
    o = owner(api)
    mark = uuid.uuid4().hex[:8]
    a = item(api, title=f"{mark}-a", count=1, weight=0.5, active=True, due="2026-03-01T00:00:00Z",
             status="published", owner=o["handle"], schedule="@daily", contact=f"{mark}.a@Example.com")
    b = item(api, title=f"{mark}-b", count=2, weight=-0.5, active=False, due="2026-04-01T12:00:00+02:00",
             status="draft", contact=f"{mark}.b@example.com")

    def ids(**params):
        got = expect_json(api.list("items", {"title": f"like.{mark}-*", "limit": 1000, **params}), 200)
        return [x["title"][-1] for x in got]

    assert sorted(ids()) == ["a", "b"]
    assert ids(sort="title") == ["a", "b"]
    assert ids(sort="-title") == ["b", "a"]
    assert ids(active="true") == ["a"] and ids(active="false") == ["b"]
    assert ids(active="neq.true") == ["b"]
    assert ids(weight="lt.0", sort="title") == ["b"]
    assert ids(weight="gte.-0.5", sort="title") == ["a", "b"]
    assert ids(weight="1e-1", sort="title") == []
    assert ids(due="gt.2026-03-15", sort="title") == ["b"]
    assert ids(due="2026-04-01T10:00:00Z") == ["b"]  # filter values are normalised like stored ones
    assert ids(due="2026-04-01T12:00:00+02:00") == ["b"]
    assert ids(status="draft") == ["b"]
    assert ids(owner=o["handle"]) == ["a"]
    assert ids(schedule="@daily") == ["a"]
    assert ids(contact=f"{mark}.A@EXAMPLE.COM") == ["a"]  # e-mail compares ignoring case
    assert ids(sort="-count") == ["b", "a"]
    assert ids(sort="due") == ["a", "b"]
    assert ids(id=a["id"]) == ["a"]
    assert ids(sort="-weight,title") == ["a", "b"]
    assert ids(count="in.2,3") == ["b"]
    assert b["due"] == "2026-04-01T10:00:00.000000Z"


def test_app_route_with_fixed_sort_and_fields(api):
    mark = uuid.uuid4().hex[:8]
    for t in ("c", "a", "b"):
        item(api, title=f"{mark}{t}")
    got = expect_json(api.get("/items-by-title", params={"title": f"like.{mark}*"}), 200)
    assert [x["title"] for x in got] == [f"{mark}a", f"{mark}b", f"{mark}c"]
    assert all(list(x) == ["id", "title", "version"] for x in got)
    got = expect_json(api.get("/items-by-title", params={"title": f"like.{mark}*", "sort": "-title"}), 200)
    assert [x["title"] for x in got] == [f"{mark}c", f"{mark}b", f"{mark}a"]
    r = api.get("/items-by-title", params={"title": f"like.{mark}*", "limit": 2})
    assert len(expect_json(r, 200)) == 2
    assert r.headers["Link"].startswith(f"</items-by-title?title=like.{mark}%2A&limit=2&after=") or \
        r.headers["Link"].startswith(f"</items-by-title?title=like.{mark}*&limit=2&after=")


def test_bad_list_queries_are_400_naming_the_parameter(api):
    cases = [
        ({"nosuch": "1"}, "nosuch", "nosuch: items has no field nosuch"),
        ({"meta": "1"}, "meta", "meta: json fields cannot be filtered"),
        ({"count": "abc"}, "count", "count: must be an integer"),
        ({"count": "gt.1.5"}, "count", "count: must be an integer"),
        ({"count": "99999999999999999999"}, "count", "count: must be an integer"),
        ({"count": "like.1*"}, "count",
         "count: operator like applies only to string, text, email, enum, ref and cron fields"),
        ({"weight": "nan"}, "weight", "weight: must be a number"),
        ({"active": "yes"}, "active", "active: must be true or false"),
        ({"active": "gt.true"}, "active",
         "active: operator gt does not apply to boolean fields (use eq, neq or in)"),
        ({"status": "DRAFT"}, "status", "status: must be one of: draft, published, archived"),
        ({"status": "in.draft,nope"}, "status", "status: must be one of: draft, published, archived"),
        ({"due": "tomorrow"}, "due", "due: must be an RFC 3339 timestamp such as 2026-01-02T03:04:05Z"),
        ({"created_at": "gt.yesterday"}, "created_at",
         "created_at: must be an RFC 3339 timestamp such as 2026-01-02T03:04:05Z"),
        ({"version": "one"}, "version", "version: must be an integer"),
        ({"count": "in." + ",".join(str(i) for i in range(101))}, "count", "count: in takes at most 100 values"),
        ({"sort": "nosuch"}, "sort", "sort: items has no field nosuch"),
        ({"sort": "meta"}, "sort", "sort: json field meta cannot be sorted on"),
        ({"sort": "title,-title"}, "sort", "sort: title is given more than once"),
        ({"sort": ""}, "sort", "sort: empty field name"),
        ({"sort": "title,"}, "sort", "sort: empty field name"),
        ({"sort": "-"}, "sort", "sort: empty field name"),
        ({"sort": ",".join(["title", "count", "weight", "due", "status", "owner", "schedule", "contact", "sku"])},
         "sort", "sort: at most 8 fields"),
        ({"limit": ["5", "6"]}, "limit", "limit: given more than once"),
        ({"sort": ["title", "count"]}, "sort", "sort: given more than once"),
        ({"after": "%%%"}, "after", "after: invalid cursor"),
        ({"at": "2026-01-01T00:00:00Z"}, "at", "at: items has no field at"),
    ]
    for params, field, detail in cases:
        body = expect_problem(api.list("items", params), 400, "bad-request", instance="/v1/items")
        assert body["detail"] == detail, (params, body)
        assert body["errors"] == [{"field": field, "message": detail[len(field) + 2:]}], (params, body)
    r = api.get("/v1/items?" + "&".join(f"p{i}=1" for i in range(65)))
    expect_problem(r, 400, "bad-request")
    for query in (b"title=%ZZ", b"title=a%00b", b"ti%tle=x", b"title=%C3%28"):
        raw = raw_request(api.port, build_request("GET", b"/v1/items?" + query))
        assert raw is not None and raw.status_code == 400, (query, raw)
        assert raw.json()["type"] == "/problems/bad-request", raw


def test_paging_over_unset_values_of_every_type(api):
    """Sorting puts unset values first ascending and last descending; the
    cursor must carry them across page boundaries for every column kind."""
    mark = uuid.uuid4().hex[:8]
    made = []
    weights = [-1.5, 0, 2.25, None]
    dues = ["2026-01-01T00:00:00Z", "2025-06-01T00:00:00Z"]
    for i in range(30):
        body = {"title": mark, "active": i % 2 == 0}
        if i % 3:
            body["count"] = (i * 7) % 5
        if i % 4 and weights[i % 4] is not None:
            body["weight"] = weights[i % 4]
        if i % 5:
            body["due"] = dues[i % 2]
        if i % 6:
            body["status"] = ["draft", "published", "archived"][i % 3]
        made.append(item(api, **body))
    lowest = {"count": -10 ** 18, "weight": -1e308, "due": "", "active": -1, "status": "", "title": "", "id": ""}

    def expected(sort):
        terms = sort.split(",")
        out = sorted(made, key=lambda x: x["id"], reverse=terms[-1].startswith("-"))
        for t in reversed(terms):
            f = t.lstrip("-")
            out = sorted(out, key=lambda x, f=f: lowest[f] if x[f] is None else int(x[f]) if f == "active"
                         else x[f], reverse=t.startswith("-"))
        return [x["id"] for x in out]

    for sort in ("count", "-count", "weight", "-weight", "due", "-due", "active", "-active", "status",
                 "count,-weight", "-due,weight,active", "-active,-count,due"):
        got, pages = follow(api, "/v1/items", {"title": mark, "sort": sort, "limit": 4})
        assert [x["id"] for x in got] == expected(sort), sort
        assert pages == 8, sort


def test_racing_writers_get_one_winner(api):
    """Concurrent creates of one key or of one unique value: exactly one 201,
    the others 409; concurrent upserts of one key: every one applied, in some
    order, each its own version."""
    key, email = uid("race"), f"{uid('race')}@example.com"
    results = []
    lock = threading.Lock()

    def run(method, path, body):
        r = requests.request(method, api.url + path, json=body, timeout=10)
        with lock:
            results.append((r.status_code, r.json()))
            if 200 <= r.status_code < 300:
                api.ledger.add((f"items-{r.json()['id']}", r.json()["version"]))

    for jobs in ([("POST", "/v1/items", {"id": key, "title": f"t{i}"}) for i in range(12)],
                 [("POST", "/v1/items", {"title": f"t{i}", "contact": email}) for i in range(12)]):
        results.clear()
        threads = [threading.Thread(target=run, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        statuses = sorted(st for st, _ in results)
        assert statuses == [201] + [409] * 11, results
        assert all(b["type"] == "/problems/conflict" for st, b in results if st == 409)

    results.clear()
    up = uid("race-up")
    threads = [threading.Thread(target=run, args=("PUT", f"/v1/items/{up}", {"title": f"u{i}"})) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(st for st, _ in results) == [200] * 11 + [201], results
    assert sorted(b["version"] for st, b in results) == list(range(1, 13)), results
    hist = expect_json(api.history("items", up), 200)
    assert [e["type"] for e in hist] == ["ItemCreated"] + ["ItemChanged"] * 11


# --------------------------------------------------------------------------
# time travel and history


def test_time_travel_by_time_and_version(api):
    it = item(api, title="v1", count=1)
    v2 = expect_json(api.patch("items", it["id"], {"title": "v2"}), 200)
    v3 = expect_json(api.command("items", it["id"], "publish"), 200)
    v4 = expect_json(api.patch("items", it["id"], {"count": 4, "secret": "x"}), 200)
    gone = expect_json(api.delete("items", it["id"]), 200)
    k = it["id"]
    states = [it, v2, v3, v4]
    for i, s in enumerate(states):
        r = api.one("items", k, at=s["updated_at"])
        assert expect_json(r, 200) == s and r.headers["ETag"] == f'"{i + 1}"'
        if i + 1 < len(states):
            assert expect_json(api.one("items", k, at=shift(states[i + 1]["updated_at"], -1)), 200) == s
        r = api.one("items", k, version=i + 1)
        assert expect_json(r, 200) == s and r.headers["ETag"] == f'"{i + 1}"'
    body = expect_problem(api.one("items", k, at=shift(it["created_at"], -1)), 404, "not-found")
    assert body["detail"] == f"items {k} did not exist at that time"
    expect_problem(api.one("items", k, at=gone["updated_at"]), 404, "not-found")
    body = expect_problem(api.one("items", k, version=5), 404, "not-found")
    assert body["detail"] == f"items {k} did not exist at that version"
    expect_problem(api.one("items", k, version=6), 404, "not-found")
    # both: the version must have existed at that time
    assert expect_json(api.one("items", k, version=2, at=v3["updated_at"]), 200) == v2
    expect_problem(api.one("items", k, version=3, at=v2["updated_at"]), 404, "not-found")
    # other spellings of an instant
    d = datetime.strptime(v2["updated_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert expect_json(api.one("items", k, at=d.astimezone(timezone(timedelta(hours=-5))).isoformat()), 200) == v2
    expect_problem(api.one("items", "no-such-item", at=v2["updated_at"]), 404, "not-found")
    expect_problem(api.one("items", "no-such-item", version=1), 404, "not-found")
    for bad in ("yesterday", "2026-02-30T00:00:00Z", "", "1700000000", "2026-01-01T25:00:00Z", "now"):
        body = expect_problem(api.one("items", k, at=bad), 400, "bad-request")
        assert problem_fields(body) == ["at"], bad
    for bad in ("0", "-1", "x", "1.0", "99999999999999999999"):
        body = expect_problem(api.one("items", k, version=bad), 400, "bad-request")
        assert problem_fields(body) == ["version"], bad


def test_history_is_the_stream_oldest_first(api):
    it = item(api, title="h", secret="pw")
    expect_json(api.patch("items", it["id"], {"count": 1}), 200)
    expect_json(api.command("items", it["id"], "rename", {"title": "h2", "reason": "r"}), 200)
    hist = expect_json(api.history("items", it["id"]), 200)
    for e in hist:
        check_event_shape(e)
        assert e["stream"] == f"items-{it['id']}"
    assert [e["version"] for e in hist] == [1, 2, 3]
    assert [e["type"] for e in hist] == ["ItemCreated", "ItemChanged", "ItemRenamed"]
    assert hist[0]["data"] == {"id": it["id"], "title": "h", "active": True, "status": "draft"}
    assert [e["position"] for e in hist] == sorted(e["position"] for e in hist)
    body = expect_problem(api.history("items", "no-such-item"), 404, "not-found")
    assert body["detail"] == "items no-such-item has no history"
    expect_problem(api.get("/v1/items/a%2Fb/history"), 404, "not-found")


def test_history_and_time_travel_beyond_one_page_of_events(api):
    """More than 1000 events in one stream (the page size of the reads)."""
    it = item(api, count=0)
    k = it["id"]
    versions = {1: it}
    errors = []
    lock = threading.Lock()

    def writer(w):
        s = requests.Session()
        try:
            for i in range(126):
                r = s.patch(f"{api.url}/v1/items/{k}", json={"notes": f"w{w}-{i}"}, timeout=10)
                with lock:
                    if r.status_code != 200:
                        errors.append(r.text)
                    else:
                        b = r.json()
                        versions[b["version"]] = b
                        api.ledger.add((f"items-{k}", b["version"]))
        finally:
            s.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert sorted(versions) == list(range(1, 1010))
    hist = expect_json(api.history("items", k), 200)
    assert [e["version"] for e in hist] == list(range(1, 1010))
    assert [e["data"].get("notes") for e in hist[1:]] == [versions[v]["notes"] for v in range(2, 1010)]
    for v in (999, 1000, 1001, 1009):
        assert expect_json(api.one("items", k, version=v), 200) == versions[v]
        assert expect_json(api.one("items", k, at=versions[v]["updated_at"]), 200) == versions[v]
    assert expect_json(api.one("items", k), 200) == versions[1009]


# --------------------------------------------------------------------------
# bad input: exact status, problem type and fields; nothing written


def J(obj):
    return json.dumps(obj).encode()


BAD_CREATES = [
    # (name, body (object or bytes), status, slug, errors[].field list or None)
    ("missing required", {}, 422, "validation", ["title"]),
    ("title null", {"title": None}, 422, "validation", ["title"]),
    ("title a number", {"title": 1}, 422, "validation", ["title"]),
    ("title an array", {"title": ["a"]}, 422, "validation", ["title"]),
    ("title 21 chars", {"title": "t" * 21}, 422, "validation", ["title"]),
    ("title 21 code points", {"title": "é" * 21}, 422, "validation", ["title"]),
    ("title with a tab", {"title": "a\tb"}, 422, "validation", ["title"]),
    ("title with DEL", {"title": "a\u007fb"}, 422, "validation", ["title"]),
    ("title with C1", {"title": "a\u0085b"}, 422, "validation", ["title"]),
    ("notes 101 chars", {"title": "t", "notes": "n" * 101}, 422, "validation", ["notes"]),
    ("notes with a bell", {"title": "t", "notes": "a\u0007b"}, 422, "validation", ["notes"]),
    ("count a string", {"title": "t", "count": "5"}, 422, "validation", ["count"]),
    ("count a float", {"title": "t", "count": 1.5}, 422, "validation", ["count"]),
    ("count 1.0", {"title": "t", "count": 1.0}, 422, "validation", ["count"]),
    ("count below min", {"title": "t", "count": -1}, 422, "validation", ["count"]),
    ("count above max", {"title": "t", "count": 1001}, 422, "validation", ["count"]),
    ("count beyond 64 bits", b'{"title":"t","count":99999999999999999999}', 400, "malformed-json", None),
    ("weight a string", {"title": "t", "weight": "1"}, 422, "validation", ["weight"]),
    ("weight above max", {"title": "t", "weight": 10.001}, 422, "validation", ["weight"]),
    ("weight below min", {"title": "t", "weight": -11}, 422, "validation", ["weight"]),
    ("weight a boolean", {"title": "t", "weight": True}, 422, "validation", ["weight"]),
    ("active a string", {"title": "t", "active": "true"}, 422, "validation", ["active"]),
    ("active 1", {"title": "t", "active": 1}, 422, "validation", ["active"]),
    ("due not a time", {"title": "t", "due": "next week"}, 422, "validation", ["due"]),
    ("due Feb 30", {"title": "t", "due": "2026-02-30T00:00:00Z"}, 422, "validation", ["due"]),
    ("due a number", {"title": "t", "due": 1700000000}, 422, "validation", ["due"]),
    ("status unknown", {"title": "t", "status": "deleted"}, 422, "validation", ["status"]),
    ("status wrong case", {"title": "t", "status": "Draft"}, 422, "validation", ["status"]),
    ("owner missing", {"title": "t", "owner": "ghost-owner"}, 422, "validation", ["owner"]),
    ("owner a number", {"title": "t", "owner": 5}, 422, "validation", ["owner"]),
    ("owner with a slash", {"title": "t", "owner": "a/b"}, 422, "validation", ["owner"]),
    ("cron 3 fields", {"title": "t", "schedule": "* * *"}, 422, "validation", ["schedule"]),
    ("cron 6 fields", {"title": "t", "schedule": "0 * * * * *"}, 422, "validation", ["schedule"]),
    ("cron hour 24", {"title": "t", "schedule": "0 24 * * *"}, 422, "validation", ["schedule"]),
    ("cron day 0", {"title": "t", "schedule": "0 0 0 * *"}, 422, "validation", ["schedule"]),
    ("cron month 13", {"title": "t", "schedule": "0 0 1 13 *"}, 422, "validation", ["schedule"]),
    ("cron weekday 8", {"title": "t", "schedule": "0 0 * * 8"}, 422, "validation", ["schedule"]),
    ("cron step 0", {"title": "t", "schedule": "*/0 * * * *"}, 422, "validation", ["schedule"]),
    ("cron wrapping", {"title": "t", "schedule": "0 0 * * FRI-MON"}, 422, "validation", ["schedule"]),
    ("cron trailing comma", {"title": "t", "schedule": "1, * * * *"}, 422, "validation", ["schedule"]),
    ("cron bad macro", {"title": "t", "schedule": "@minutely"}, 422, "validation", ["schedule"]),
    ("cron empty", {"title": "t", "schedule": ""}, 422, "validation", ["schedule"]),
    ("email without @", {"title": "t", "contact": "ann.example.com"}, 422, "validation", ["contact"]),
    ("email one label", {"title": "t", "contact": "ann@localhost"}, 422, "validation", ["contact"]),
    ("email two @", {"title": "t", "contact": "a@b@example.com"}, 422, "validation", ["contact"]),
    ("email space", {"title": "t", "contact": "ann lee@example.com"}, 422, "validation", ["contact"]),
    ("email label dash", {"title": "t", "contact": "ann@-example.com"}, 422, "validation", ["contact"]),
    ("email underscore domain", {"title": "t", "contact": "ann@ex_ample.com"}, 422, "validation", ["contact"]),
    ("email too long", {"title": "t", "contact": "a" * 250 + "@x.io"}, 422, "validation", ["contact"]),
    ("email a number", {"title": "t", "contact": 5}, 422, "validation", ["contact"]),
    ("private field wrong type", {"title": "t", "secret": 5}, 422, "validation", ["secret"]),
    ("key with a slash", {"id": "a/b", "title": "t"}, 422, "validation", ["id"]),
    ("key with a newline", {"id": "a\nb", "title": "t"}, 422, "validation", ["id"]),
    ("key with a unit separator", {"id": "a\u001fb", "title": "t"}, 422, "validation", ["id"]),
    ("key empty", {"id": "", "title": "t"}, 422, "validation", ["id"]),
    ("key a number", {"id": 5, "title": "t"}, 422, "validation", ["id"]),
    ("key 250 bytes", {"id": "k" * 250, "title": "t"}, 422, "validation", ["id"]),
    ("unknown fields", {"title": "t", "colour": "red", "size": 3}, 422, "validation", ["colour", "size"]),
    ("system fields", {"title": "t", "version": 1, "created_at": "2026-01-01T00:00:00Z", "updated_at": None},
     422, "validation", ["version", "created_at", "updated_at"]),
    ("everything wrong", {"count": "x", "nope": 1, "status": "?", "id": "a/b"}, 422, "validation",
     ["count", "nope", "status", "id", "title"]),
    ("body an array", [{"title": "t"}], 422, "validation", [""]),
    ("body null", b"null", 400, "malformed-json", None),
    ("body a number", b"5", 400, "malformed-json", None),
    ("body empty", b"", 400, "malformed-json", None),
    ("body truncated", b'{"title": "t"', 400, "malformed-json", None),
    ("duplicate keys", b'{"title": "a", "title": "b"}', 400, "malformed-json", None),
    ("NUL in a string", b'{"title": "a\\u0000b"}', 400, "malformed-json", None),
    ("invalid UTF-8", b'{"title": "\xff"}', 400, "malformed-json", None),
    ("lone surrogate", b'{"title": "\\ud800"}', 400, "malformed-json", None),
    ("NaN", b'{"title": "t", "weight": NaN}', 400, "malformed-json", None),
]


def test_bad_creates_are_precise_and_write_nothing(api):
    before = api.head()
    failures = []
    for name, body, status, slug, fields in BAD_CREATES:
        data = body if isinstance(body, bytes) else J(body)
        r = api.call("POST", "/v1/items", raw=data)
        try:
            p = expect_problem(r, status, slug, instance="/v1/items")
            if fields is not None:
                assert problem_fields(p) == fields, p
                if name not in ("owner missing", "key 250 bytes", "body an array"):  # other details
                    n = len(fields)
                    assert p["detail"] == f"{n} field{'s' if n > 1 else ''} failed validation", p
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)
    assert api.head() == before


def test_bad_requests_of_other_kinds_write_nothing(api):
    it = item(api, contact="taken@example.com")
    before = api.head()
    # duplicate unique value
    body = expect_problem(api.call("POST", "/v1/items", {"title": "t", "contact": "taken@example.com"}), 409,
                          "conflict")
    assert body["detail"] == "contact: another items already has this value"
    # media types
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx", None):
        h = {"Content-Type": ctype} if ctype else {}
        r = api.srv.request("POST", "/v1/items", data=J({"title": "t"}), headers=h)
        expect_problem(r, 415, "unsupported-media-type")
        r = api.srv.request("PATCH", f"/v1/items/{it['id']}", data=J({"title": "t"}), headers=h)
        expect_problem(r, 415, "unsupported-media-type")
    # too large
    big = J({"title": "t", "meta": "x" * (1 << 20)})
    expect_problem(api.call("POST", "/v1/items", raw=big), 413, "payload-too-large")
    # keys in paths
    body = expect_problem(api.put("items", "a/b", {"title": "t"}), 422, "validation")
    assert body["errors"] == [{"field": "id", "message": KEY_MSG}]
    body = expect_problem(api.put("items", "k" * 250, {"title": "t"}), 422, "validation")
    assert problem_fields(body) == ["id"]
    for seg in ("a%01b", "a%00b", "%7F", "%C2%85", "%FF", "%2e%2e", "k" * 256):
        for method in ("PUT", "PATCH", "DELETE", "GET"):
            r = api.srv.request(method, f"/v1/items/{seg}", data=J({"title": "t"}),
                                headers={"Content-Type": "application/json"})
            body = expect_problem(r, 400, "bad-request")
            assert problem_fields(body) == ["key"], (seg, method, body)
    raw = raw_request(api.port, build_request("PUT", b"/v1/items/a\x01b", headers=[("Content-Type", "application/json")],
                                              body=b'{"title":"t"}'))
    assert raw is not None and raw.status_code == 400, raw
    # wrong methods and paths
    expect_problem(api.call("POST", f"/v1/items/{it['id']}", {"title": "t"}), 405, "method-not-allowed")
    expect_problem(api.call("POST", "/v1/nothings", {"title": "t"}), 404, "not-found")
    expect_problem(api.call("PATCH", "/v1/items/no-such-item", {"title": "t"}), 404, "not-found")
    expect_problem(api.call("DELETE", "/v1/items/no-such-item"), 404, "not-found")
    assert api.head() == before
    assert expect_json(api.one("items", it["id"]), 200) == it


# --------------------------------------------------------------------------
# restart and rebuild keep the rules


def test_rebuild_after_a_definition_change_keeps_data_and_rules(tmp_path):
    with running_server(args=["--app", APP], name="entities-rebuild") as srv:
        a = Api(srv)
        o = owner(a, "keeper")
        it = item(a, title="kept", contact="kept@example.com", owner="keeper", sku="S", secret="pw")
        v2 = expect_json(a.command("items", it["id"], "publish"), 200)
        dead = item(a, title="dead", contact="dead@example.com")
        expect_json(a.delete("items", dead["id"]), 200)
        head = a.head()

        with open(APP, encoding="utf-8") as f:
            d = json.load(f)
        d["entities"]["items"]["fields"]["colour"] = {"type": "enum", "values": ["red", "blue"]}
        edited = tmp_path / "entities-edited.json"
        edited.write_text(json.dumps(d), encoding="utf-8")
        assert srv.stop() == 0
        srv.extra_args = ["--app", str(edited)]
        first = len(srv.stderr_lines)
        srv.start()
        rebuilt = [json.loads(line) for line in srv.stderr_lines[first:]
                   if '"projections rebuilt from events"' in line]
        assert len(rebuilt) == 1 and rebuilt[0]["events"] == head

        now = expect_json(a.one("items", it["id"]), 200)
        assert now == {**v2, "colour": None} and list(now)[-4:] == ["colour", "version", "created_at", "updated_at"]
        assert expect_json(a.one("owners", "keeper"), 200) == o
        expect_problem(a.one("items", dead["id"]), 404, "not-found")
        # rules still hold on the rebuilt tables
        expect_problem(a.call("POST", "/v1/items", {"title": "t", "contact": "kept@example.com"}), 409, "conflict")
        assert item(a, contact="dead@example.com")["contact"] == "dead@example.com"  # freed by the delete
        expect_problem(a.call("POST", "/v1/items", {"id": dead["id"], "title": "t"}), 409, "conflict")
        expect_problem(a.command("items", it["id"], "publish"), 409, "conflict")
        r = a.patch("items", it["id"], {"colour": "red", "secret": "pw2"})
        assert expect_json(r, 200)["colour"] == "red"
        expect_problem(a.patch("items", it["id"], {"colour": "green"}), 422, "validation")
        got = expect_json(a.list("items", {"colour": "red"}), 200)
        assert [x["id"] for x in got] == [it["id"]]


# --------------------------------------------------------------------------
# raw appends to an entity's stream


def test_a_raw_append_to_an_entity_stream_keeps_the_entity_writable(api):
    # Raw appends would bypass validation and the entity's table: refused.
    it = item(api)
    stream = f"items-{it['id']}"
    r = api.append(stream, [{"type": "NoteAdded", "data": {"note": "from an integration"}}])
    p = expect_problem(r, 422, "validation")
    assert problem_fields(p) == ["stream"] and "/v1/items" in p["detail"]
    assert expect_json(api.one("items", it["id"]), 200)["version"] == 1
    r = api.patch("items", it["id"], {"title": "after"})
    assert expect_json(r, 200)["version"] == 2


def test_a_raw_create_event_is_validated_and_projected_or_refused(api):
    key = uid("raw")
    stream = f"items-{key}"
    r = api.append(stream, [{"type": "ItemCreated", "data": {"id": key, "title": 5, "count": "many"}}])
    expect_problem(r, 422, "validation")
    expect_problem(api.one("items", key), 404, "not-found")


# --------------------------------------------------------------------------
# the ledger (keep this test last in the module)


def test_the_feed_holds_exactly_the_acknowledged_writes(api):
    feed = api.read_feed()
    got = [(e["stream"], e["version"]) for e in feed]
    assert len(got) == len(set(got))
    assert set(got) == api.ledger, (sorted(set(got) - api.ledger)[:10], sorted(api.ledger - set(got))[:10])
    positions = [e["position"] for e in feed]
    assert positions == sorted(positions)
    for e in feed:
        check_event_shape(e)
