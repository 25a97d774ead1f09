"""
test_feed.py - GET /v1/events: the paged global feed and the live SSE feed
(order, catch-up, Last-Event-ID resume, type filter, heartbeats, 200 idle
subscribers while appends keep flowing). Contract: docs/http-api.md.
"""

import threading
import time

import pytest
import requests

from conftest import (SSE, check_event_shape, check_request_id, ev, expect_json, expect_problem, mime,
                      new_id, new_stream, running_server, wait_until)


def append(srv, stream, *types, data=None):
    """Appends one event per type in one request; returns the positions."""
    r = srv.append(stream, [ev(t, data if data is not None else {"t": t}, id_=new_id()) for t in types])
    body = expect_json(r, 201)
    return body["positions"]


def page(srv, query=""):
    body = expect_json(srv.get("/v1/events" + query), 200)
    assert set(body) == {"events", "next_after", "head"}, body
    for e in body["events"]:
        check_event_shape(e)
    return body


def subscriber_count(srv):
    return srv.internal_health("http")["subscribers"]


# --------------------------------------------------------------------------
# paged feed


def test_empty_feed(server):
    assert page(server) == {"events": [], "next_after": 0, "head": 0}
    assert page(server, "?after=5") == {"events": [], "next_after": 5, "head": 0}


def test_feed_holds_every_event_in_position_order(server):
    a, b, c = new_stream("a"), new_stream("b"), new_stream("c")
    pos = append(server, a, "A1", "A2") + append(server, b, "B1") + append(server, c, "C1", "C2", "C3") \
        + append(server, a, "A3")
    body = page(server)
    assert [e["position"] for e in body["events"]] == pos
    assert pos == sorted(set(pos))
    assert [e["type"] for e in body["events"]] == ["A1", "A2", "B1", "C1", "C2", "C3", "A3"]
    assert [(e["stream"], e["version"]) for e in body["events"]] == \
        [(a, 1), (a, 2), (b, 1), (c, 1), (c, 2), (c, 3), (a, 3)]
    assert body["next_after"] == pos[-1]
    assert body["head"] == pos[-1]
    # the feed and the stream show the same event
    stream_events = expect_json(server.get(f"/v1/streams/{a}"), 200)["events"]
    assert [e for e in body["events"] if e["stream"] == a] == stream_events


def test_feed_pages_with_after_and_limit(server):
    s = new_stream()
    pos = append(server, s, *[f"T{i}" for i in range(7)])
    seen, after, sizes = [], 0, []
    while True:
        body = page(server, f"?after={after}&limit=3")
        assert body["head"] == pos[-1]
        if not body["events"]:
            assert body["next_after"] == after
            break
        sizes.append(len(body["events"]))
        assert body["next_after"] == body["events"][-1]["position"]
        seen += [e["position"] for e in body["events"]]
        after = body["next_after"]
    assert sizes == [3, 3, 1]
    assert seen == pos
    mid = page(server, f"?after={pos[2]}")
    assert [e["position"] for e in mid["events"]] == pos[3:]


def test_feed_beyond_head_is_empty(server):
    pos = append(server, new_stream(), "A")
    far = pos[-1] + 100
    assert page(server, f"?after={far}") == {"events": [], "next_after": far, "head": pos[-1]}
    top = 9223372036854775807
    assert page(server, f"?after={top}") == {"events": [], "next_after": top, "head": pos[-1]}


def test_feed_type_filter(server):
    s = new_stream()
    pos = append(server, s, "A", "B", "C", "A", "B")
    body = page(server, "?types=A,C")
    assert [e["type"] for e in body["events"]] == ["A", "C", "A"]
    assert [e["position"] for e in body["events"]] == [pos[0], pos[2], pos[3]]
    assert body["head"] == pos[-1]
    # a page that is not full moves next_after past the other types' events
    assert body["next_after"] == pos[-1]
    none = page(server, "?types=Nope")
    assert none["events"] == [] and none["next_after"] == pos[-1]
    one = page(server, "?types=B&limit=1")
    assert [e["position"] for e in one["events"]] == [pos[1]] and one["next_after"] == pos[1]


def test_feed_default_limit_is_100_and_max_1000(server):
    pos = append(server, new_stream(), *["N"] * 150)
    body = page(server)
    assert len(body["events"]) == 100
    assert body["next_after"] == pos[99]
    assert len(page(server, "?limit=1000")["events"]) == 150


@pytest.mark.parametrize("query,param", [
    ("?after=abc", "after"), ("?after=-1", "after"), ("?after=1.5", "after"),
    ("?after=99999999999999999999", "after"),
    ("?limit=0", "limit"), ("?limit=1001", "limit"), ("?limit=x", "limit"), ("?limit=-3", "limit"),
    ("?types=%01", "types"), ("?types=A,%7F", "types"), ("?types=" + "x" * 256, "types"),
])
def test_feed_bad_query_is_400(server, query, param):
    p = expect_problem(server.get("/v1/events" + query), 400, "bad-request", instance="/v1/events")
    assert param in p["detail"], p


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_feed_wrong_method_is_405(server, method):
    r = server.request(method, "/v1/events", data=b"{}", headers={"Content-Type": "application/json"})
    expect_problem(r, 405, "method-not-allowed", instance="/v1/events")
    allow = {m.strip().upper() for m in r.headers.get("Allow", "").split(",")}
    assert "GET" in allow and method not in allow, r.headers.get("Allow")
    assert page(server)["head"] == 0


# --------------------------------------------------------------------------
# live feed (SSE)


def check_sse_event(got, feed_event):
    assert got["id"] == str(feed_event["position"])
    assert got["event"] == feed_event["type"]
    assert "\n" not in got["data"], "event JSON must be on one line"
    assert got["json"] == feed_event


def test_sse_delivers_live_appends_in_order(server):
    with SSE(server.url + "/v1/events", params={"after": 0}) as sub:
        assert sub.resp.status_code == 200
        assert mime(sub.resp.headers) == "text/event-stream"
        check_request_id(sub.resp.headers)
        a, b = new_stream("a"), new_stream("b")
        pos = []
        pos += append(server, a, "First", "Second")
        pos += append(server, b, "Third", data={"text": "line1\nline2\r\n: not a comment", "é": "☕"})
        pos += append(server, a, "Fourth")
        for i in range(4):
            pos += append(server, b if i % 2 else a, f"Loop{i}")
        got = sub.events(len(pos), timeout=10)
    feed = page(server, "?limit=1000")["events"]
    assert [e["position"] for e in feed] == pos
    for g, f in zip(got, feed):
        check_sse_event(g, f)


def test_sse_catches_up_then_follows(server):
    s = new_stream()
    history = append(server, s, "H1", "H2", "H3")
    with SSE(server.url + "/v1/events") as sub:
        first = sub.events(3)
        assert [int(e["id"]) for e in first] == history
        live = append(server, s, "L1") + append(server, s, "L2")
        assert [int(e["id"]) for e in sub.events(2)] == live
        assert [e["event"] for e in first] == ["H1", "H2", "H3"]


def test_sse_resume_with_last_event_id_skips_and_repeats_nothing(server):
    s = new_stream()
    before = [p for t in ("E1", "E2", "E3", "E4", "E5") for p in append(server, s, t)]
    with SSE(server.url + "/v1/events", params={"after": 0}) as sub:
        first = sub.events(3)
    assert [int(e["id"]) for e in first] == before[:3]
    last_id = first[-1]["id"]
    during = [p for t in ("E6", "E7", "E8", "E9") for p in append(server, s, t)]
    with SSE(server.url + "/v1/events", headers={"Last-Event-ID": last_id}) as sub:
        resumed = sub.events(6)
        assert [int(e["id"]) for e in resumed] == before[3:] + during
        # a sentinel proves nothing else was queued between them
        sentinel = append(server, s, "Sentinel")
        nxt = sub.next_event()
        assert int(nxt["id"]) == sentinel[0] and nxt["event"] == "Sentinel"
    feed = {e["position"]: e for e in page(server, "?limit=1000")["events"]}
    for e in first + resumed:
        check_sse_event(e, feed[int(e["id"])])


@pytest.mark.parametrize("after_idx,last_idx", [(1, 3), (3, 1)])
def test_sse_starts_after_max_of_after_and_last_event_id(server, after_idx, last_idx):
    s = new_stream()
    pos = append(server, s, *[f"E{i}" for i in range(6)])
    start = max(after_idx, last_idx)
    with SSE(server.url + "/v1/events", params={"after": pos[after_idx]},
             headers={"Last-Event-ID": str(pos[last_idx])}) as sub:
        got = sub.events(len(pos) - start - 1)
        assert [int(e["id"]) for e in got] == pos[start + 1:]
        sentinel = append(server, s, "Sentinel")
        assert int(sub.next_event()["id"]) == sentinel[0]


def test_sse_type_filter(server):
    s = new_stream()
    with SSE(server.url + "/v1/events", params={"types": "Keep,Also"}) as sub:
        pos = append(server, s, "Drop", "Keep", "Drop", "Also", "Drop", "Keep")
        got = sub.events(3)
        assert [(int(e["id"]), e["event"]) for e in got] == \
            [(pos[1], "Keep"), (pos[3], "Also"), (pos[5], "Keep")]
        append(server, s, "Drop")
        sentinel = append(server, s, "Keep")
        nxt = sub.next_event()
        assert (int(nxt["id"]), nxt["event"]) == (sentinel[0], "Keep")


def test_sse_heartbeat_on_idle_feed(server):
    with SSE(server.url + "/v1/events") as sub:
        deadline = time.monotonic() + 5
        comments = []
        while len(comments) < 2:
            item = sub.next_item(deadline)
            assert item is not None, f"no heartbeat within 5s (SSE_HEARTBEAT_MS=200); got {comments}"
            assert item[0] == "comment", f"unexpected item on an empty feed: {item}"
            comments.append(item[1])
        assert comments == ["heartbeat", "heartbeat"]


def test_sse_bad_after_is_a_problem_not_a_stream(server):
    r = requests.get(server.url + "/v1/events?after=abc", headers={"Accept": "text/event-stream"}, timeout=10)
    p = expect_problem(r, 400, "bad-request", instance="/v1/events")
    assert "after" in p["detail"]


def test_sse_subscribers_see_identical_sequences(server):
    subs = [SSE(server.url + "/v1/events", params={"after": 0}) for _ in range(3)]
    try:
        pos = []
        for i in range(5):
            pos += append(server, new_stream(), f"T{i}", "U")
        seqs = [[(e["id"], e["event"], e["data"]) for e in sub.events(len(pos))] for sub in subs]
        assert seqs[0] == seqs[1] == seqs[2]
        assert [int(x[0]) for x in seqs[0]] == pos
    finally:
        for sub in subs:
            sub.close()


def test_subscriber_count_follows_connections(server):
    assert subscriber_count(server) == 0
    sub = SSE(server.url + "/v1/events")
    try:
        wait_until(lambda: subscriber_count(server) == 1, 10, msg="subscribers == 1")
        assert server.metrics().sum("chronicle_feed_subscribers") == 1
    finally:
        sub.close()
    wait_until(lambda: subscriber_count(server) == 0, 10, msg="subscribers back to 0 after disconnect")
    assert server.metrics().sum("chronicle_feed_subscribers") == 0


# --------------------------------------------------------------------------
# 200 idle subscribers while appends keep flowing


N_SUBSCRIBERS = 200


def test_200_idle_subscribers_while_appending():
    with running_server(name="sse200") as srv:
        _run_200_subscribers(srv)


def _run_200_subscribers(srv):
    head0 = srv.head_position()
    stop_subs, stop_appends = threading.Event(), threading.Event()
    lock = threading.Lock()
    connected = [False] * N_SUBSCRIBERS
    received = [[] for _ in range(N_SUBSCRIBERS)]
    errors = {}
    acked = []
    append_errors = []

    def subscriber(i):
        sub = None
        try:
            sub = SSE(srv.url + "/v1/events", params={"after": head0}, read_timeout=15)
            assert sub.resp.status_code == 200, sub.resp.status_code
            assert mime(sub.resp.headers) == "text/event-stream"
            connected[i] = True
            while not stop_subs.is_set():
                item = sub.next_item(time.monotonic() + 1.0)
                if item is None:
                    if sub.ended:
                        raise AssertionError("the server ended the stream")
                    continue
                if item[0] == "event":
                    with lock:
                        received[i].append(int(item[1]["id"]))
        except Exception as e:
            errors[i] = repr(e)
        finally:
            if sub is not None:
                sub.close()

    def appender():
        sess = requests.Session()
        s = new_stream("flow")
        try:
            while not stop_appends.is_set() and len(acked) < 2000:
                r = srv.append(s, [ev("Flow", {"n": len(acked)}, id_=new_id())], session=sess)
                if r.status_code != 201:
                    append_errors.append((r.status_code, r.text))
                    return
                acked.append(r.json()["positions"][0])
                stop_appends.wait(0.05)  # pacing: ~20 appends/s, not synchronisation
        except Exception as e:
            append_errors.append(repr(e))
        finally:
            sess.close()

    threads = [threading.Thread(target=subscriber, args=(i,), daemon=True) for i in range(N_SUBSCRIBERS)]
    feeder = threading.Thread(target=appender, daemon=True)
    try:
        feeder.start()
        for t in threads:
            t.start()
        wait_until(lambda: all(connected) or errors, 30, msg="200 subscribers connected")
        assert not errors, list(errors.items())[:5]
        wait_until(lambda: subscriber_count(srv) == N_SUBSCRIBERS, 15, msg="server counts 200 subscribers")
        assert srv.metrics().sum("chronicle_feed_subscribers") == N_SUBSCRIBERS

        # the server stays responsive with 200 open subscriptions
        worst = 0.0
        for _ in range(20):
            t0 = time.monotonic()
            assert expect_json(srv.get("/health"), 200) == {"status": "ok"}
            expect_json(srv.get("/v1/events?limit=10"), 200)
            worst = max(worst, time.monotonic() - t0)
        assert worst < 2.0, f"a request took {worst:.2f}s with 200 subscribers"

        target = len(acked) + 40
        wait_until(lambda: len(acked) >= target or append_errors, 30, msg="40 more appends while subscribed")
        stop_appends.set()
        feeder.join(15)
        assert not feeder.is_alive() and not append_errors, append_errors
        assert len(acked) >= 40

        def all_received():
            with lock:
                return all(len(r) >= len(acked) for r in received) or bool(errors)
        wait_until(all_received, 30, msg="every subscriber received every append")
        assert not errors, list(errors.items())[:5]
    finally:
        stop_appends.set()
        stop_subs.set()
        for t in threads:
            t.join(15)
        feeder.join(15)
    assert not any(t.is_alive() for t in threads), "subscriber threads did not finish"
    feed = [e["position"] for e in srv.read_feed(after=head0)]
    assert feed == acked, "the feed holds exactly the acknowledged appends"
    for i, r in enumerate(received):
        assert r == acked, f"subscriber {i}: got {len(r)} events, {len(acked)} acknowledged; " \
                           f"got[:5]={r[:5]} acked[:5]={acked[:5]}"
    wait_until(lambda: subscriber_count(srv) == 0, 15, msg="subscribers back to 0 after closing all")
