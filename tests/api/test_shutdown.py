"""
test_shutdown.py - acknowledged means durable across SIGTERM (with requests
in flight), SIGKILL and restart; SIGTERM/SIGINT exit 0 after logging
"stopped", also with live subscribers connected. Contract: docs/http-api.md.
"""

import json
import signal
import threading
import time
from collections import Counter, defaultdict

import requests

from conftest import SSE, ev, expect_json, new_id, new_stream, stream_path, wait_until

JSON = {"Content-Type": "application/json"}
GRACE = 5


def check_feed_consistent(feed):
    positions = [e["position"] for e in feed]
    assert positions == sorted(set(positions)), "positions must be strictly increasing"
    versions = defaultdict(list)
    for e in feed:
        versions[e["stream"]].append(e["version"])
    for s, vs in versions.items():
        assert vs == list(range(1, len(vs) + 1)), f"stream {s} has versions {vs}"
    ids = Counter(e["id"] for e in feed)
    assert all(n == 1 for n in ids.values()), "an event is stored twice"


def logged(srv, msg):
    return [r for r in srv.log_records() if isinstance(r, dict) and r.get("msg") == msg]


def test_sigterm_with_appends_in_flight_keeps_every_acknowledged_write(server_factory):
    srv = server_factory(args=["--shutdown-grace", str(GRACE)], name="sigterm")
    url = srv.url
    lock = threading.Lock()
    attempted = []          # one list of ids per request sent
    acked = {}              # id -> (stream, version-in-batch position)
    statuses = Counter()
    unexpected = []
    term_at = [None]
    straddled = [0]
    stop = threading.Event()
    hard_deadline = time.monotonic() + 60

    def worker(w):
        sess = requests.Session()
        stream = new_stream(f"term{w}")
        seq = 0
        try:
            while not stop.is_set() and time.monotonic() < hard_deadline:
                ids = [new_id() for _ in range(1 + seq % 3)]
                body = json.dumps({"events": [ev("Term", {"w": w, "seq": seq}, id_=i) for i in ids]})
                with lock:
                    attempted.append(ids)
                t0 = time.monotonic()
                try:
                    r = sess.post(url + stream_path(stream), data=body, headers=JSON, timeout=GRACE + 15)
                except requests.RequestException as e:
                    if term_at[0] is None:
                        unexpected.append(f"error before SIGTERM: {e!r}")
                    return  # the server is going away
                t1 = time.monotonic()
                with lock:
                    statuses[r.status_code] += 1
                    if term_at[0] is not None and t0 < term_at[0] < t1:
                        straddled[0] += 1
                    if 200 <= r.status_code < 300:
                        b = r.json()
                        assert b["ids"] == ids, b
                        for i, p in zip(b["ids"], b["positions"]):
                            acked[i] = (stream, p)
                    elif r.status_code != 503 or term_at[0] is None:
                        unexpected.append(f"{r.status_code}: {r.text[:200]}")
                seq += 1
        except Exception as e:
            unexpected.append(repr(e))
        finally:
            sess.close()

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(16)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 400 or unexpected, 30, msg="400 acknowledged events before SIGTERM")
        assert not unexpected, unexpected[:5]
        term_at[0] = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        rc = srv.wait(GRACE + 20)
    finally:
        stop.set()
        for t in threads:
            t.join(GRACE + 20)
    assert rc == 0, f"exit code {rc}; stderr tail:\n{srv.stderr_tail()}"
    assert not unexpected, unexpected[:5]
    assert straddled[0] >= 1, "no request was in flight when SIGTERM arrived"
    assert logged(srv, "stopped"), "no 'stopped' log line"

    srv.start()  # same database
    feed = srv.read_feed()
    check_feed_consistent(feed)
    by_id = {e["id"]: e for e in feed}
    missing = [i for i in acked if i not in by_id]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:3]}"
    for i, (stream, pos) in acked.items():
        assert (by_id[i]["stream"], by_id[i]["position"]) == (stream, pos)
    sent = {i for ids in attempted for i in ids}
    assert set(by_id) <= sent, "the feed holds events nobody sent"
    for ids in attempted:  # each request is all or nothing
        present = sum(i in by_id for i in ids)
        assert present in (0, len(ids)), f"partial write: {present} of {len(ids)}"
    # the restarted server keeps appending after the old head
    r = srv.append(new_stream("after"), [ev("AfterRestart")])
    assert expect_json(r, 201)["positions"][0] > max(e["position"] for e in feed)


def test_sigkill_keeps_every_acknowledged_write(server_factory):
    srv = server_factory(name="sigkill")
    acked = {}
    lock = threading.Lock()
    errors = []

    def worker(w):
        sess = requests.Session()
        s = new_stream(f"kill{w}")
        try:
            for i in range(25):
                r = srv.append(s, [ev("K", {"i": i}), ev("L", {"i": i})], session=sess)
                assert r.status_code == 201, r.text
                b = r.json()
                with lock:
                    for eid, p in zip(b["ids"], b["positions"]):
                        acked[eid] = (s, p)
        except Exception as e:
            errors.append(repr(e))
        finally:
            sess.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(acked) == 200
    srv.kill()  # SIGKILL right after the last acknowledgement
    srv.start()
    feed = srv.read_feed()
    check_feed_consistent(feed)
    got = {e["id"]: (e["stream"], e["position"]) for e in feed}
    assert got == acked
    r = srv.append(new_stream("after"), [ev("AfterKill")])
    assert expect_json(r, 201)["positions"][0] > max(p for _, p in acked.values())


def test_sigterm_with_live_subscriber_exits_0(server_factory):
    srv = server_factory(args=["--shutdown-grace", "3"], name="sigterm-sse")
    pos = expect_json(srv.append(new_stream(), [ev("A")]), 201)["positions"]
    sub = SSE(srv.url + "/v1/events")
    try:
        assert int(sub.next_event()["id"]) == pos[0]
        wait_until(lambda: srv.internal_health("http")["subscribers"] == 1, 10, msg="subscriber registered")
        t0 = time.monotonic()
        rc = srv.stop(timeout=20)
        assert rc == 0, srv.stderr_tail()
        assert time.monotonic() - t0 < 3 + 10, "shutdown took far longer than the grace period"
    finally:
        sub.close()
    assert logged(srv, "stopped")


def test_sigint_exits_0_and_data_survives(server_factory):
    srv = server_factory(name="sigint")
    s = new_stream()
    body = expect_json(srv.append(s, [ev("A"), ev("B")]), 201)
    assert srv.stop(sig=signal.SIGINT) == 0
    assert logged(srv, "stopped")
    srv.start()
    got = expect_json(srv.get(stream_path(s)), 200)
    assert [e["id"] for e in got["events"]] == body["ids"]
    assert got["version"] == 2
