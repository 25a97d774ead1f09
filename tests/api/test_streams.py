"""
test_streams.py - POST/GET /v1/streams/{stream}: appends, reads, expected
versions, idempotent replays, names and payloads round-tripping, limits and
wrong methods. Contract: docs/http-api.md.
"""

import json
import threading
import time
from urllib.parse import unquote

import pytest
import requests

from conftest import (APPEND_KEYS, UUID_RE, UUIDV7_RE, check_event_shape, check_request_id,
                      ev, expect_json, expect_problem, new_id, new_stream, running_server, stream_path)


@pytest.fixture(scope="module")
def srv():
    """The module's server; every 201 from it is recorded in s.ledger for the
    final check that the feed holds exactly the acknowledged events."""
    with running_server(name="streams") as s:
        s.ledger = {}
        for name in ("append", "post"):
            setattr(s, name, _recording(s, getattr(s, name)))
        yield s


def _recording(s, call):
    def wrapped(*args, **kw):
        r = call(*args, **kw)
        if r.status_code == 201 and r.request.url.startswith(s.url + "/v1/streams/"):
            b = r.json()
            for i, p in zip(b["ids"], b["positions"]):
                assert s.ledger.setdefault(i, (b["stream"], p)) == (b["stream"], p)
        return r
    return wrapped


def appended(resp, stream, n):
    """Checks a 201 append response for n events; returns its body."""
    body = expect_json(resp, 201)
    assert set(body) == APPEND_KEYS, body
    assert body["stream"] == stream
    assert len(body["ids"]) == n and len(body["positions"]) == n, body
    assert all(UUID_RE.match(i) for i in body["ids"]), body
    assert all(isinstance(p, int) and p >= 1 for p in body["positions"]), body
    assert body["positions"] == sorted(set(body["positions"])), "positions must be strictly increasing"
    loc = resp.headers.get("Location")
    assert loc and loc.startswith("/v1/streams/"), resp.headers
    seg = loc[len("/v1/streams/"):]
    assert "/" not in seg and unquote(seg) == stream, loc
    return body


def read_stream(srv, stream, query=""):
    body = expect_json(srv.get(stream_path(stream) + query), 200)
    assert set(body) == {"stream", "version", "events"}, body
    assert body["stream"] == stream
    for e in body["events"]:
        check_event_shape(e)
        assert e["stream"] == stream
    return body


# --------------------------------------------------------------------------
# appending


def test_append_one_event(srv):
    s, eid = new_stream(), new_id()
    r = srv.append(s, [ev("OrderPlaced", {"total": 12}, id_=eid)])
    body = appended(r, s, 1)
    assert body["version"] == 1
    assert body["ids"] == [eid]
    assert r.headers["Location"] == f"/v1/streams/{s}"
    assert r.headers.get("Idempotent-Replay", "").lower() != "true"

    got = read_stream(srv, s)
    assert got["version"] == 1
    [e] = got["events"]
    assert (e["id"], e["type"], e["version"], e["position"]) == (eid, "OrderPlaced", 1, body["positions"][0])
    assert e["data"] == {"total": 12}
    assert e["metadata"] == {}


def test_append_without_ids_generates_uuidv7(srv):
    s = new_stream()
    body = appended(srv.append(s, [ev("A"), ev("B")]), s, 2)
    assert all(UUIDV7_RE.match(i) for i in body["ids"]), body["ids"]
    assert body["ids"][0] != body["ids"][1]
    got = read_stream(srv, s)
    assert [e["id"] for e in got["events"]] == body["ids"]


def test_same_body_without_ids_appends_twice(srv):
    s = new_stream()
    a = appended(srv.append(s, [ev("Tick")]), s, 1)
    r = srv.append(s, [ev("Tick")])
    b = appended(r, s, 1)
    assert (a["version"], b["version"]) == (1, 2)
    assert a["ids"] != b["ids"]
    assert r.headers.get("Idempotent-Replay", "").lower() != "true"


def test_append_many_events_in_order_with_defaults(srv):
    s = new_stream()
    evs = [ev("Created", {"n": 1}, id_=new_id(), metadata={"actor": "ann"}),
           ev("Renamed", {"name": "x"}, id_=new_id()),
           ev("Closed", id_=new_id())]
    body = appended(srv.append(s, evs), s, 3)
    assert body["version"] == 3
    assert body["ids"] == [e["id"] for e in evs]
    got = read_stream(srv, s)
    assert got["version"] == 3
    assert [e["version"] for e in got["events"]] == [1, 2, 3]
    assert [e["position"] for e in got["events"]] == body["positions"]
    assert [e["type"] for e in got["events"]] == ["Created", "Renamed", "Closed"]
    assert [e["data"] for e in got["events"]] == [{"n": 1}, {"name": "x"}, {}]
    assert [e["metadata"] for e in got["events"]] == [{"actor": "ann"}, {}, {}]
    # appending again continues the versions and the global order
    more = appended(srv.append(s, [ev("Reopened")]), s, 1)
    assert more["version"] == 4
    assert more["positions"][0] > body["positions"][-1]


def test_content_type_parameters_are_accepted(srv):
    s = new_stream()
    r = srv.append(s, [ev("A")], headers={"Content-Type": "application/json; charset=utf-8"})
    assert appended(r, s, 1)["version"] == 1


def test_location_reads_the_stream(srv):
    s = "loc é/☕ " + new_stream()
    r = srv.append(s, [ev("A")])
    appended(r, s, 1)
    got = expect_json(srv.get(r.headers["Location"]), 200)
    assert got["stream"] == s and got["version"] == 1


@pytest.mark.parametrize("name", [
    "café-☕-𝄞", "a/b", "with space", "...", "a..b", ".hidden", "%41", "a+b", "q?x#y", "x" * 255, "é" * 127,
], ids=["unicode", "slash", "space", "three-dots", "inner-dots", "leading-dot", "percent", "plus",
        "query-chars", "255-bytes", "254-bytes-utf8"])
def test_stream_names_round_trip(srv, name):
    name = name if len(name.encode()) >= 200 else f"{name}-{new_stream()}"
    if len(name.encode()) > 255:
        name = name[:255]
    body = appended(srv.append(name, [ev("Named", {"name": name})]), name, 1)
    got = read_stream(srv, name)
    assert got["version"] == 1
    assert got["events"][0]["position"] == body["positions"][0]
    assert got["events"][0]["data"] == {"name": name}


@pytest.mark.parametrize("data", [
    "a string", 42, -7, 1.5, 0, True, False, [1, "a", None, {"k": []}],
    {"nested": {"deep": [{"x": True, "y": None}]}, "n": 9007199254740993},
    {"text": "é☕𝄞 \n\t\"quoted\" \\ </script>", "\u2028": "sep"},
], ids=["string", "int", "negative", "float", "zero", "true", "false", "array", "nested", "unicode"])
def test_data_round_trips(srv, data):
    s = new_stream()
    appended(srv.append(s, [ev("Data", data)]), s, 1)
    [e] = read_stream(srv, s)["events"]
    assert e["data"] == data
    assert type(e["data"]) is type(data)


def test_metadata_round_trips(srv):
    s = new_stream()
    meta = {"correlation_id": new_id(), "actor": {"id": 7, "roles": ["a", "b"]}, "note": "ü"}
    appended(srv.append(s, [ev("M", {}, metadata=meta)]), s, 1)
    [e] = read_stream(srv, s)["events"]
    assert e["metadata"] == meta


# --------------------------------------------------------------------------
# expected_version


def _prepare(srv, existing):
    s = new_stream("ev")
    if existing:
        appended(srv.append(s, [ev("A"), ev("B")]), s, 2)
    return s


@pytest.mark.parametrize("expected,existing,version_after", [
    (None, False, 1), (None, True, 3),
    ("any", False, 1), ("any", True, 3),
    (0, False, 1), ("no_stream", False, 1),
    ("stream_exists", True, 3),
    (2, True, 3),
])
def test_expected_version_accepted(srv, expected, existing, version_after):
    s = _prepare(srv, existing)
    body = appended(srv.append(s, [ev("C")], expected_version=expected), s, 1)
    assert body["version"] == version_after
    assert read_stream(srv, s)["version"] == version_after


@pytest.mark.parametrize("expected,existing,echo", [
    (0, True, (0,)),
    ("no_stream", True, ("no_stream", 0)),
    ("stream_exists", False, ("stream_exists",)),
    (1, True, (1,)),
    (3, True, (3,)),
    (1, False, (1,)),
    (9223372036854775807, True, (9223372036854775807,)),
])
def test_wrong_expected_version_409_and_nothing_written(srv, expected, existing, echo):
    s = _prepare(srv, existing)
    head = srv.head_position()
    r = srv.append(s, [ev("C", id_=new_id())], expected_version=expected)
    p = expect_problem(r, 409, "wrong-expected-version", instance=stream_path(s))
    # "no_stream" and 0 mean the same thing; either spelling may be echoed
    assert p["expected_version"] in echo, p
    assert p["actual_version"] == (2 if existing else 0), p
    assert srv.head_position() == head
    if existing:
        assert read_stream(srv, s)["version"] == 2
    else:
        expect_problem(srv.get(stream_path(s)), 404, "not-found")


def test_concurrent_optimistic_appends_serialise(srv):
    """Writers racing with exact expected versions: every version is won by
    exactly one of them, no gaps, no duplicates."""
    s = new_stream("race")
    writers, per_writer = 6, 5
    acked, errors, lock = [], [], threading.Lock()
    deadline = time.monotonic() + 40

    def writer(w):
        sess = requests.Session()
        version, done = 0, 0
        try:
            while done < per_writer and time.monotonic() < deadline:
                eid = new_id()
                r = srv.append(s, [ev("Raced", {"w": w}, id_=eid)], expected_version=version, session=sess)
                if r.status_code == 201:
                    b = r.json()
                    assert b["version"] == version + 1, b
                    with lock:
                        acked.append((b["version"], eid))
                    version, done = b["version"], done + 1
                elif r.status_code == 409:
                    p = r.json()
                    assert p["type"] == "/problems/wrong-expected-version", p
                    assert p["actual_version"] > version, p
                    version = p["actual_version"]
                else:
                    raise AssertionError(f"unexpected {r.status_code}: {r.text}")
        except Exception as e:  # reported by the main thread
            errors.append(repr(e))
        finally:
            sess.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    total = writers * per_writer
    assert len(acked) == total
    assert sorted(v for v, _ in acked) == list(range(1, total + 1))
    got = read_stream(srv, s, "?limit=1000")
    assert got["version"] == total
    assert [(e["version"], e["id"]) for e in got["events"]] == sorted(acked)


# --------------------------------------------------------------------------
# idempotency


def test_idempotent_replay_returns_identical_201(srv):
    s = new_stream("idem")
    body = json.dumps({"events": [ev("A", {"x": 1}, id_=new_id()), ev("B", id_=new_id())]}).encode()
    h = {"Content-Type": "application/json"}
    r1 = srv.post(stream_path(s), data=body, headers=h)
    b1 = appended(r1, s, 2)
    head = srv.head_position()
    r2 = srv.post(stream_path(s), data=body, headers=h)
    b2 = appended(r2, s, 2)
    assert b2 == b1
    assert r2.headers.get("Idempotent-Replay") == "true"
    assert r2.headers["Location"] == r1.headers["Location"]
    assert srv.head_position() == head
    assert read_stream(srv, s)["version"] == 2


def test_idempotent_replay_after_later_appends_is_identical(srv):
    s = new_stream("idem")
    evs = [ev("A", {"x": 1}, id_=new_id())]
    b1 = appended(srv.append(s, evs), s, 1)
    appended(srv.append(s, [ev("Later")]), s, 1)
    r = srv.append(s, evs)
    assert appended(r, s, 1) == b1
    assert r.headers.get("Idempotent-Replay") == "true"
    assert read_stream(srv, s)["version"] == 2


@pytest.mark.parametrize("change", ["data", "type"])
def test_same_id_different_content_is_409_conflict(srv, change):
    s = new_stream("idem")
    eid = new_id()
    appended(srv.append(s, [ev("A", {"x": 1}, id_=eid)]), s, 1)
    head = srv.head_position()
    other = ev("A", {"x": 2}, id_=eid) if change == "data" else ev("Z", {"x": 1}, id_=eid)
    expect_problem(srv.append(s, [other]), 409, "conflict", instance=stream_path(s))
    assert srv.head_position() == head
    got = read_stream(srv, s)
    assert got["version"] == 1 and got["events"][0]["data"] == {"x": 1} and got["events"][0]["type"] == "A"


# --------------------------------------------------------------------------
# reading


@pytest.fixture(scope="module")
def ten(srv):
    s = new_stream("ten")
    body = appended(srv.append(s, [ev(f"E{i}", {"i": i}) for i in range(1, 11)]), s, 10)
    return s, body


@pytest.mark.parametrize("query,versions", [
    ("", list(range(1, 11))),
    ("?from=3&limit=4", [3, 4, 5, 6]),
    ("?from=10", [10]),
    ("?limit=1", [1]),
    ("?limit=1000", list(range(1, 11))),
    ("?direction=forward&from=9", [9, 10]),
    ("?direction=backward", list(range(10, 0, -1))),
    ("?direction=backward&limit=3", [10, 9, 8]),
    ("?direction=backward&from=5&limit=2", [5, 4]),
    ("?direction=backward&from=1", [1]),
    ("?from=11", []),
    ("?from=9223372036854775807", []),
])
def test_read_stream_windows(srv, ten, query, versions):
    s, body = ten
    got = read_stream(srv, s, query)
    assert got["version"] == 10
    assert [e["version"] for e in got["events"]] == versions
    pos = dict(zip(range(1, 11), body["positions"]))
    assert [e["position"] for e in got["events"]] == [pos[v] for v in versions]
    assert [e["data"] for e in got["events"]] == [{"i": v} for v in versions]


def test_read_stream_default_limit_is_100(srv):
    s = new_stream("big")
    appended(srv.append(s, [ev("N", {"i": i}) for i in range(150)]), s, 150)
    got = read_stream(srv, s)
    assert got["version"] == 150
    assert [e["version"] for e in got["events"]] == list(range(1, 101))
    assert len(read_stream(srv, s, "?limit=1000")["events"]) == 150


def test_read_missing_stream_is_404(srv):
    s = new_stream("missing")
    expect_problem(srv.get(stream_path(s)), 404, "not-found", instance=stream_path(s))


@pytest.mark.parametrize("query,param", [
    ("?limit=0", "limit"), ("?limit=1001", "limit"), ("?limit=-1", "limit"), ("?limit=ten", "limit"),
    ("?limit=99999999999999999999", "limit"), ("?limit=1.5", "limit"),
    ("?from=-1", "from"), ("?from=abc", "from"), ("?from=99999999999999999999", "from"),
    ("?direction=sideways", "direction"),
])
def test_read_stream_bad_query_is_400_naming_the_parameter(srv, ten, query, param):
    s, _ = ten
    p = expect_problem(srv.get(stream_path(s) + query), 400, "bad-request", instance=stream_path(s))
    assert param in p["detail"], p


# --------------------------------------------------------------------------
# sizes under the default limits (1 MiB body, 1 MiB event)


def test_large_event_under_default_limits_is_accepted(srv):
    s = new_stream("large")
    data = {"blob": "x" * 1_000_000}
    appended(srv.append(s, [ev("Big", data)]), s, 1)
    [e] = read_stream(srv, s)["events"]
    assert e["data"] == data


def test_body_over_default_limit_is_413_and_nothing_written(srv):
    s = new_stream("toolarge")
    head = srv.head_position()
    r = srv.append(s, [ev("Big", {"blob": "x" * 1_100_000})])
    expect_problem(r, 413, "payload-too-large")
    assert srv.head_position() == head
    expect_problem(srv.get(stream_path(s)), 404, "not-found")


def test_thousand_events_accepted_and_1001_rejected(srv):
    s = new_stream("batch")
    body = appended(srv.append(s, [ev("N", {"i": i}) for i in range(1000)]), s, 1000)
    assert body["version"] == 1000
    head = srv.head_position()
    t = new_stream("batch")
    expect_problem(srv.append(t, [ev("N", {"i": i}) for i in range(1001)]), 413, "payload-too-large")
    assert srv.head_position() == head
    expect_problem(srv.get(stream_path(t)), 404, "not-found")


# --------------------------------------------------------------------------
# methods


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_wrong_method_on_stream_is_405_with_allow(srv, method):
    s = new_stream()
    r = srv.request(method, stream_path(s), data=b"{}", headers={"Content-Type": "application/json"})
    expect_problem(r, 405, "method-not-allowed", instance=stream_path(s))
    allow = {m.strip().upper() for m in r.headers.get("Allow", "").split(",")}
    assert {"GET", "POST"} <= allow and method not in allow, r.headers.get("Allow")
    expect_problem(srv.get(stream_path(s)), 404, "not-found")


def test_every_response_has_request_id(srv):
    s = new_stream()
    for r in (srv.append(s, [ev("A")]), srv.get(stream_path(s)), srv.get(stream_path(new_stream()))):
        check_request_id(r.headers)


# --------------------------------------------------------------------------
# must run last in this module


def test_zz_feed_holds_exactly_the_acknowledged_events(srv):
    assert len(srv.ledger) > 1000
    feed = srv.read_feed()
    got = {e["id"]: (e["stream"], e["position"]) for e in feed}
    assert len(got) == len(feed), "an event id appears twice in the feed"
    assert got == srv.ledger
