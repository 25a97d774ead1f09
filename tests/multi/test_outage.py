"""
test_outage.py - PostgreSQL goes away under load and comes back
(issue 5: "service resumes by itself when it comes back, with no restart").

Two `chronicle serve` processes on one database take appends and entity
commands from many clients, while SSE subscribers follow each instance.
The test stops the cluster's server (`pg_ctl stop -m fast` through
scripts/pg-test.sh, which signals only the PID it recorded), checks that
every instance answers with 503 problems (/ready included) and that no
write sent during the outage is acknowledged, starts the server again and
checks that both instances serve again without being restarted, that
every acknowledged write is stored (read back through the API and with
psql), that no append is stored in part, that the subscribers saw every
event once and in order, and that retrying the writes that got 503 with
the same event ids is safe.
"""

import json
import os
import threading
import time
from urllib.parse import parse_qs, quote, urlsplit

import requests
import urllib3

from conftest import (PG_URL, SOURCE_DIR, SSE, check_problem_body, ev, expect_json, expect_problem, new_id, psql_db,
                      stream_path, wait_until)

PG_HOST = parse_qs(urlsplit(PG_URL).query).get("host", ["/nonexistent"])[0]  # the socket directory
APP = os.path.join(SOURCE_DIR, "tests", "api", "apps", "entities.json")
JSON = {"Content-Type": "application/json"}
APPENDERS = 6
COMMANDERS = 2
DEADLINE = 180.0


class Load:
    """Clients writing through every instance until stopped, recording every
    outcome with the time its request was sent and answered."""

    def __init__(self, srvs):
        self.srvs = srvs
        self.lock = threading.Lock()
        self.appends = []      # (sent, answered, stream, events, status, body)
        self.items = []        # (sent, answered, status, body) of POST /v1/items
        self.unexpected = []
        self.stop = threading.Event()
        self.threads = []

    def acked_events(self):
        with self.lock:
            return sum(len(a[3]) for a in self.appends if a[4] == 201)

    def count(self, status, since=0.0):
        with self.lock:
            return sum(1 for a in self.appends + self.items if a[-2] == status and a[0] >= since)

    def _record_problem(self, what, r):
        """A non-2xx answer must be a 503 service-unavailable problem."""
        try:
            body = r.json()
            check_problem_body(body, r.headers, 503, "service-unavailable")
            assert r.status_code == 503
        except (AssertionError, ValueError):
            with self.lock:
                self.unexpected.append(f"{what}: {r.status_code} {r.text[:300]}")

    def _client(self, w, what, send, records):
        """Sends send(srv, session, i) -> (response, details) through each
        instance in turn until stopped; records (sent, answered, *details,
        status, body)."""
        sessions = [requests.Session() for _ in self.srvs]
        i = 0
        try:
            while not self.stop.is_set():
                k = (w + i) % len(self.srvs)
                sent = time.monotonic()
                try:
                    r, details = send(self.srvs[k], sessions[k], i)
                except requests.RequestException as e:
                    with self.lock:
                        self.unexpected.append(f"{what} via {k}: {e!r}")
                    return
                answered = time.monotonic()
                body = r.json() if r.status_code == 201 else None
                if r.status_code != 201:
                    self._record_problem(f"{what} via {k}", r)
                with self.lock:
                    records.append((sent, answered, *details, r.status_code, body))
                if r.status_code != 201:
                    self.stop.wait(0.02)  # client back-off while the database is away
                i += 1
        finally:
            for sess in sessions:
                sess.close()

    def appender(self, w):
        stream = f"out{w}-{new_id()[:8]}"

        def send(srv, sess, i):
            evs = [ev("Out", {"w": w, "i": i, "j": j}, id_=new_id()) for j in range(1 + i % 3)]
            return srv.append(stream, evs, session=sess), (stream, evs)

        self._client(w, "append", send, self.appends)

    def commander(self, w):
        def send(srv, sess, i):
            return sess.post(srv.url + "/v1/items", data=json.dumps({"title": f"c{w}-{i}", "count": i % 1000}),
                             headers=JSON, timeout=30), ()

        self._client(w, "command", send, self.items)

    def start(self):
        self.threads = [threading.Thread(target=self.appender, args=(w,), daemon=True) for w in range(APPENDERS)]
        self.threads += [threading.Thread(target=self.commander, args=(w,), daemon=True)
                         for w in range(COMMANDERS)]
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not any(t.is_alive() for t in self.threads), "clients did not finish"


class Follower:
    """An SSE subscriber on one instance that reconnects with Last-Event-ID
    whenever its stream ends or cannot be opened, as EventSource does."""

    def __init__(self, srv, k):
        self.srv = srv
        self.k = k
        self.events = []  # (position, id)
        self.errors = []
        self.reconnects = 0
        self.stop = threading.Event()
        self.target = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def last(self):
        return self.events[-1][0] if self.events else 0

    def done(self):
        return self.target is not None and self.last() >= self.target

    def run(self):
        while not self.stop.is_set() and not self.done():
            try:
                with SSE(self.srv.url + "/v1/events", headers={"Last-Event-ID": str(self.last())},
                         read_timeout=5) as sub:
                    if sub.resp.status_code != 200:
                        if sub.resp.status_code != 503:
                            self.errors.append(f"sse{self.k}: {sub.resp.status_code} {sub.resp.text[:200]}")
                            return
                    else:
                        while not self.stop.is_set() and not self.done():
                            try:
                                e = sub.next_event(timeout=1)
                            except AssertionError:
                                if sub.ended:
                                    break
                                continue
                            pos = e["json"]["position"]
                            if pos <= self.last():
                                self.errors.append(f"sse{self.k}: position {pos} after {self.last()}")
                            self.events.append((pos, e["json"]["id"]))
            except (requests.RequestException, urllib3.exceptions.HTTPError):
                pass  # the stream broke off (the server ends it when a read fails): reconnect
            if not self.stop.is_set() and not self.done():
                self.reconnects += 1
                self.stop.wait(0.1)  # EventSource's retry delay


def probe_down(srv):
    """/ready, a read and a write on srv: each a 503 problem. Returns the
    problem details."""
    details = []
    for resp in (srv.get("/ready"), srv.get("/v1/events?limit=5"), srv.get(stream_path("probe")),
                 srv.append(f"down-{new_id()[:8]}", [ev("Down")])):
        details.append(expect_problem(resp, 503, "service-unavailable")["detail"])
    return details


def test_database_outage_under_load(shared_database, instances, cluster):
    db = shared_database
    srvs = instances(2, db, args=["--app", APP], name="out")
    pids = [s.proc.pid for s in srvs]
    load = Load(srvs)
    followers = [Follower(s, k) for k, s in enumerate(srvs)]
    deadline = time.monotonic() + DEADLINE
    try:
        for f in followers:
            f.thread.start()
        load.start()
        wait_until(lambda: load.acked_events() >= 300 or load.unexpected, 60, msg="300 acknowledged events")
        assert not load.unexpected, load.unexpected[:5]

        # -- the outage ---------------------------------------------------
        cluster.pause()  # returns once the server has exited
        down_at = time.monotonic()
        for srv in srvs:
            wait_until(lambda: srv.get("/ready").status_code == 503, 30, msg="/ready 503")
            details = probe_down(srv)
            assert all("PostgreSQL" in d and "unavailable" in d for d in details), details
            # Clients are told why, not where the database server lives.
            assert not any(PG_HOST in d or ".s.PGSQL" in d for d in details), details
        # The outage lasts long enough for every connection's reconnect
        # attempts to fail a few times and back off.
        wait_until(lambda: load.count(503, since=down_at) >= 200 and time.monotonic() - down_at >= 1.5, 30,
                   msg="writes refused during the outage")
        up_at = time.monotonic()
        cluster.resume()

        # -- service resumes by itself ---------------------------------------
        for srv in srvs:
            wait_until(lambda: srv.get("/ready").status_code == 200, 30, msg="/ready 200 again")
        acked_before = load.acked_events()
        wait_until(lambda: load.acked_events() >= acked_before + 300 or load.unexpected, 60,
                   msg="300 more acknowledged events after the outage")
    finally:
        load.finish()
    assert not load.unexpected, load.unexpected[:5]
    assert [s.proc.pid for s in srvs] == pids and all(s.alive() and s.runs == 1 for s in srvs), "restarted"

    # The operator's log says when each instance's writer lost PostgreSQL
    # (with libpq's whole message) and got it back, once each.
    for srv in srvs:
        logged = [(r["msg"], r.get("error", "")) for r in srv.log_records() if isinstance(r, dict)
                  and r.get("connection") == "writer" and r.get("msg", "").startswith("PostgreSQL connection")]
        assert [m for m, _ in logged] == ["PostgreSQL connection lost", "PostgreSQL connection restored"], logged
        assert logged[0][1], logged

    # No write sent once the server was gone and answered before it was
    # back was acknowledged: whatever got 2xx then had not been stored.
    in_outage = [a for a in load.appends + load.items if a[0] > down_at and a[1] < up_at]
    assert in_outage and all(a[-2] == 503 for a in in_outage), [a[-2] for a in in_outage if a[-2] != 503]

    # Every acknowledged write is stored, through either instance and psql.
    log = srvs[0].read_feed()
    assert srvs[1].read_feed() == log
    by_id = {e["id"]: e for e in log}
    acked = {}
    for _, _, stream, evs, status, body in load.appends:
        stored = [e["id"] in by_id for e in evs]
        assert all(stored) or not any(stored), f"append to {stream} stored in part"
        if status == 201:
            assert all(stored), f"acknowledged append to {stream} lost"
            for i, p in zip(body["ids"], body["positions"]):
                assert by_id[i]["position"] == p
                acked[i] = p
    rows = psql_db("SELECT id, position FROM events.events ORDER BY position", db).split()
    assert [r.split("|") for r in rows] == [[e["id"], str(e["position"])] for e in log]
    assert int(psql_db("SELECT position FROM events.head", db)) == log[-1]["position"]
    positions = [e["position"] for e in log]
    assert positions == sorted(set(positions))

    items_acked = [b for _, _, st, b in load.items if st == 201]
    assert items_acked and load.count(503) > 0
    stored_versions = {(e["stream"], e["version"]) for e in log}
    lost = [b["id"] for b in items_acked if (f"items-{b['id']}", b["version"]) not in stored_versions]
    assert not lost, f"{len(lost)} acknowledged commands lost, e.g. {lost[:3]}"
    for b in items_acked[:: max(1, len(items_acked) // 50)] + items_acked[-5:]:
        got = expect_json(srvs[1].get(f"/v1/items/{quote(b['id'], safe='')}"), 200)
        assert (got["title"], got["version"]) == (b["title"], b["version"])
    # The projection was written in the events' transactions: one row per
    # stored ItemCreated, acknowledged or not.
    n_rows = int(psql_db("SELECT count(*) FROM projections.items", db))
    assert n_rows == sum(e["type"] == "ItemCreated" for e in log) >= len(items_acked)

    # The subscribers followed through the outage: each saw the whole log,
    # once, in order (reconnecting with Last-Event-ID when needed).
    for f in followers:
        f.target = log[-1]["position"]
    for f in followers:
        f.thread.join(max(1.0, deadline - time.monotonic()))
        f.stop.set()
        assert not f.errors, f.errors[:5]
        assert f.events == [(e["position"], e["id"]) for e in log], \
            f"sse{f.k} saw {len(f.events)} of {len(log)} events"

    # A 503 left the outcome open; retrying with the same ids settles it
    # exactly once: replayed if it had been stored, stored now if not.
    refused = [(stream, evs) for _, _, stream, evs, status, _ in load.appends if status == 503]
    replays = 0
    for stream, evs in refused:
        r = srvs[0].append(stream, evs)
        body = expect_json(r, 201)
        assert body["ids"] == [e["id"] for e in evs]
        replays += r.headers.get("Idempotent-Replay") == "true"
        assert (r.headers.get("Idempotent-Replay") == "true") == (evs[0]["id"] in by_id)
    final = srvs[1].read_feed()
    assert len({e["id"] for e in final}) == len(final)
    assert len(final) == len(log) + sum(len(evs) for _, evs in refused) - \
        sum(len(evs) for _, evs in refused if evs[0]["id"] in by_id)
