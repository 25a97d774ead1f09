"""
test_async_writes.py - writes wait for their group commit (and entity
commands for their entity's turn) with the connection suspended, not in a
worker thread: with one or two worker threads many writes share one
commit; a client that hangs up while its write waits leaves the server
healthy (the write lands whole or not at all, nothing leaks, later writes
to the same entity are not stuck behind it); SIGTERM answers writes still
queued when the grace runs out (and refuses new ones with 503) before it
stops; and SIGTERM with many writes waiting keeps every acknowledged one
and exits 0. Writes are held back deterministically by holding the store's
write lock from outside (WriteLock), never by sleeping. Runs on SQLite and
on PostgreSQL (CHRONICLE_TEST_DATABASE). Contract: docs/http.md ("How
writes wait"), docs/http-api.md.
"""

import json
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from urllib.parse import quote

import requests

from conftest import PSQL, build_request, ev, expect_json, new_id, new_stream, stream_path, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(os.environ.get("CHRONICLE_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE)),
                   "tests", "api", "apps", "entities.json")
JSON = {"Content-Type": "application/json"}


def requests_logged(srv, route):
    return [r for r in srv.log_records()
            if isinstance(r, dict) and r.get("msg") == "request" and r.get("route") == route]


def max_batch(srv):
    """The largest commit-batch bucket (units of work per commit) that saw a
    commit: 1 means every commit held a single write."""
    best = 0
    prev = 0.0
    for labels, count in sorted(srv.metrics().select("chronicle_store_commit_batch_size_bucket"),
                                key=lambda lv: float("inf") if lv[0]["le"] == "+Inf" else float(lv[0]["le"])):
        if count > prev:
            best = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
        prev = count
    return best


def in_flight(srv):
    """Requests in flight, the asking one included."""
    return srv.internal_health("http")["in_flight"]


class WriteLock:
    """Holds what the server's store writer must take to commit, from a
    connection of our own, as a writer in another process would: SQLite's
    write lock (the writer's BEGIN IMMEDIATE waits, up to its 10 s busy
    timeout), or on PostgreSQL the events.head row each batch locks first.
    Every write sent meanwhile is read, queued and left waiting until the
    block ends."""

    def __init__(self, srv):
        self.srv = srv
        self.db = None
        self.psql = None

    def __enter__(self):
        if self.srv.backend == "postgres":
            self.psql = subprocess.Popen([PSQL, self.srv.database, "-qAtX", "-v", "ON_ERROR_STOP=1"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
            self.psql.stdin.write("BEGIN;\nSELECT 'locked' FROM events.head FOR UPDATE;\n")
            self.psql.stdin.flush()
            line = self.psql.stdout.readline()  # once printed, the row lock is ours
            assert line.strip() == "locked", f"psql: {line!r} {self.psql.stderr.read()!r}"
        else:
            self.db = sqlite3.connect(self.srv.db_path, timeout=10, isolation_level=None)
            self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc):
        if self.psql:
            self.psql.communicate("ROLLBACK;\n", timeout=30)
        else:
            self.db.execute("ROLLBACK")
            self.db.close()


def send(port, data):
    """Sends one request on a new connection; returns the socket."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data)
    return s


def reset(sock):
    """Hangs up with a reset (SO_LINGER 0): no answer can be delivered."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_one_worker_thread_serves_many_waiting_appends(server_factory):
    srv = server_factory(args=["--threads", "1"], name="one-thread")
    results = []
    lock = threading.Lock()

    def client(w):
        r = srv.append(new_stream(f"w{w}"), [ev("A", {"w": w})], session=requests.Session())
        with lock:
            results.append(r)

    with WriteLock(srv):
        threads = [threading.Thread(target=client, args=(w,)) for w in range(20)]
        for t in threads:
            t.start()
        # Twenty appends wait for a commit that cannot start, and the one
        # worker thread still answers: none of them holds it.
        wait_until(lambda: in_flight(srv) == 21, 10, msg="20 appends waiting")
        assert expect_json(srv.get("/health"), 200)["status"] == "ok"
        assert not results
    for t in threads:
        t.join(30)
    assert [r.status_code for r in results] == [201] * 20, [r.text for r in results if r.status_code != 201]
    # They were all queued at once, so they shared commits.
    assert max_batch(srv) > 7
    assert len(srv.read_feed()) == 20
    wait_until(lambda: in_flight(srv) == 1, 10, msg="no request in flight")


def test_client_leaving_while_its_append_waits(server_factory):
    srv = server_factory(args=["--threads", "1"], name="leave-append")
    victims = []
    socks = []
    with WriteLock(srv):
        for i in range(20):
            s = new_stream(f"gone{i}")
            ids = [new_id(), new_id()]
            body = json.dumps({"events": [ev("Gone", id_=ids[0]), ev("Gone", id_=ids[1])]}).encode()
            victims.append((s, ids))
            socks.append(send(srv.port, build_request("POST", stream_path(s),
                                                      [("Content-Type", "application/json")], body)))
        wait_until(lambda: in_flight(srv) == 21, 10, msg="20 appends waiting")
        for sock in socks:  # every client hangs up while its append waits
            reset(sock)
    wait_until(lambda: in_flight(srv) == 1, 20, msg="every abandoned append finished")

    # The appends were queued: they commit, whole, without anyone to answer.
    stored = {e["id"] for e in srv.read_feed()}
    for s, ids in victims:
        assert all(i in stored for i in ids), f"append to {s} lost or partial"
    # Each was logged once, as not answered to the end.
    logged = requests_logged(srv, "/v1/streams/{stream}")
    assert len(logged) == 20, logged
    assert all(r.get("termination") not in (None, "ok") for r in logged), logged
    # The server stays healthy and keeps writing.
    r = srv.append(new_stream("after"), [ev("After")])
    assert expect_json(r, 201)["version"] == 1


def test_client_leaving_while_its_command_waits_for_its_turn(server_factory):
    srv = server_factory(args=["--threads", "1", "--app", APP], name="leave-command")
    it = expect_json(srv.post("/v1/items", data=json.dumps({"title": "hot"}), headers=JSON), 201)
    path = f"/v1/items/{quote(it['id'], safe='')}"
    socks = []
    with WriteLock(srv):
        # The first update holds the item's turn while its commit waits; the
        # other nine queue for the turn; three creates wait for the commit.
        for i in range(10):
            socks.append(send(srv.port, build_request("PATCH", path, [("Content-Type", "application/json")],
                                                      json.dumps({"count": i}).encode())))
            wait_until(lambda: in_flight(srv) == len(socks) + 1, 10, msg=f"update {i} waiting")
        for i in range(3):
            socks.append(send(srv.port, build_request("POST", "/v1/items", [("Content-Type", "application/json")],
                                                      json.dumps({"title": f"new{i}"}).encode())))
        wait_until(lambda: in_flight(srv) == 14, 10, msg="13 commands waiting")
        for sock in socks:
            reset(sock)
    wait_until(lambda: in_flight(srv) == 1, 20, msg="every abandoned command finished")

    # The first update and the creates were committed; each update that was
    # handed the turn after its client left gave it up without writing.
    hist = expect_json(srv.get(path + "/history"), 200)
    assert [e["version"] for e in hist] == [1, 2]
    assert len(srv.read_feed(types=["ItemCreated"])) == 1 + 3
    # The turn was passed on: a new update goes through at once.
    body = expect_json(srv.request("PATCH", path, data=json.dumps({"count": 999}).encode(), headers=JSON), 200)
    assert (body["version"], body["count"]) == (3, 999)


def test_commands_on_one_entity_take_turns_with_one_thread(server_factory):
    srv = server_factory(args=["--threads", "1", "--app", APP], name="turns")
    it = expect_json(srv.post("/v1/items", data=json.dumps({"title": "turns"}), headers=JSON), 201)
    path = f"/v1/items/{quote(it['id'], safe='')}"
    results = []
    lock = threading.Lock()

    def client(w):
        sess = requests.Session()
        try:
            for i in range(5):
                r = sess.patch(srv.url + path, data=json.dumps({"count": w * 10 + i}), headers=JSON, timeout=30)
                with lock:
                    results.append((r.status_code, r.json()))
        finally:
            sess.close()

    threads = [threading.Thread(target=client, args=(w,)) for w in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [st for st, _ in results] == [200] * 120, [b for st, b in results if st != 200][:3]
    # Every update applied exactly once, each its own version.
    assert sorted(b["version"] for _, b in results) == list(range(2, 122))
    assert len(expect_json(srv.get(path + "/history"), 200)) == 121


def read_response(sock, timeout=10.0):
    """One response read from a kept-alive connection (Content-Length)."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:])}
            need = head_end + 4 + int(headers.get("content-length", "0"))
            if len(buf) >= need:
                return int(head[0].split(" ")[1]), headers, buf[head_end + 4:need]
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {buf[:200]!r}"
        buf += chunk


def test_sigterm_waits_for_writes_still_queued_after_the_grace(server_factory):
    srv = server_factory(args=["--threads", "2", "--shutdown-grace", "1"], name="sigterm-queued")
    keep = send(srv.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # kept alive
    assert read_response(keep)[0] == 200
    results = []
    lock = threading.Lock()

    def client(w):
        r = srv.append(new_stream(f"q{w}"), [ev("Queued", {"w": w})], session=requests.Session())
        with lock:
            results.append(r)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(30)]
    try:
        with WriteLock(srv):
            for t in threads:
                t.start()
            wait_until(lambda: in_flight(srv) == 31, 10, msg="30 appends waiting")
            srv.send_signal(signal.SIGTERM)
            # The grace passes with the 30 appends still queued: the server
            # neither answers them nor stops; it waits for their commit.
            waiting = wait_until(lambda: [r for r in srv.log_records() if isinstance(r, dict) and
                                          r.get("msg") == "waiting for requests whose writes are queued"],
                                 10, msg="the server waiting for queued writes")
            assert waiting[0]["requests"] == 30
            assert srv.alive() and not results
            # A new write now is refused rather than queued.
            body = json.dumps({"events": [ev("Late")]}).encode()
            keep.sendall(b"POST /v1/streams/late HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                         b"\r\n\r\n" + body)
            status, headers, text = read_response(keep)
            assert status == 503, text
            assert json.loads(text)["type"] == "/problems/service-unavailable"
            assert headers.get("connection", "").lower() == "close"
    finally:
        keep.close()
        for t in threads:
            t.join(30)
    assert sorted(r.status_code for r in results) == [201] * 30
    assert srv.wait(30) == 0, srv.stderr_tail()

    srv.start()
    feed = srv.read_feed()
    assert sorted(e["stream"] for e in feed) == sorted(r.json()["stream"] for r in results)
    assert [e["position"] for e in feed] == sorted(p for r in results for p in r.json()["positions"])


def test_sigterm_with_many_waiting_writes_keeps_every_acknowledged_one(server_factory):
    grace = 5
    srv = server_factory(args=["--threads", "2", "--shutdown-grace", str(grace), "--app", APP],
                         name="sigterm-async")
    url = srv.url
    hot = expect_json(srv.post("/v1/items", data=json.dumps({"title": "hot"}), headers=JSON), 201)["id"]
    lock = threading.Lock()
    attempted = []        # ids per append request
    acked_events = {}     # event id -> position
    acked_items = set()   # (stream, version) of acknowledged commands
    unexpected = []
    term_at = [None]
    stop = threading.Event()
    deadline = time.monotonic() + 60

    def appender(w):
        sess = requests.Session()
        s = new_stream(f"a{w}")
        seq = 0
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                ids = [new_id() for _ in range(1 + seq % 2)]
                with lock:
                    attempted.append(ids)
                try:
                    r = sess.post(url + stream_path(s), data=json.dumps({"events": [ev("T", id_=i) for i in ids]}),
                                  headers=JSON, timeout=grace + 20)
                except requests.RequestException as e:
                    if term_at[0] is None:
                        unexpected.append(repr(e))
                    return
                with lock:
                    if r.status_code == 201:
                        for i, p in zip(r.json()["ids"], r.json()["positions"]):
                            acked_events[i] = p
                    elif r.status_code != 503 or term_at[0] is None:
                        unexpected.append(f"{r.status_code}: {r.text[:200]}")
                seq += 1
        finally:
            sess.close()

    def commander(w):
        sess = requests.Session()
        i = 0
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                key = hot if w % 2 else None
                try:
                    if key:
                        r = sess.patch(f"{url}/v1/items/{quote(key, safe='')}", data=json.dumps({"count": i % 1000}),
                                       headers=JSON, timeout=grace + 20)
                    else:
                        r = sess.post(f"{url}/v1/items", data=json.dumps({"title": f"c{w}-{i}"}), headers=JSON,
                                      timeout=grace + 20)
                except requests.RequestException as e:
                    if term_at[0] is None:
                        unexpected.append(repr(e))
                    return
                with lock:
                    if r.status_code in (200, 201):
                        acked_items.add((f"items-{r.json()['id']}", r.json()["version"]))
                    elif r.status_code != 503 or term_at[0] is None:
                        unexpected.append(f"{r.status_code}: {r.text[:200]}")
                i += 1
        finally:
            sess.close()

    threads = [threading.Thread(target=appender, args=(w,), daemon=True) for w in range(32)]
    threads += [threading.Thread(target=commander, args=(w,), daemon=True) for w in range(16)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked_events) >= 600 or unexpected, 30, msg="600 acknowledged events")
        assert not unexpected, unexpected[:5]
        # With two worker threads, commits held far more than two writes:
        # many writes were waiting suspended at once when SIGTERM came.
        assert max_batch(srv) > 3
        term_at[0] = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        rc = srv.wait(grace + 30)
    finally:
        stop.set()
        for t in threads:
            t.join(grace + 30)
    assert rc == 0, f"exit code {rc}; stderr tail:\n{srv.stderr_tail()}"
    assert not unexpected, unexpected[:5]
    assert any(isinstance(r, dict) and r.get("msg") == "stopped" for r in srv.log_records())

    srv.start()
    feed = srv.read_feed()
    by_id = {e["id"]: e for e in feed}
    lost = [i for i in acked_events if i not in by_id]
    assert not lost, f"{len(lost)} acknowledged events lost"
    assert all(by_id[i]["position"] == p for i, p in acked_events.items())
    for ids in attempted:
        assert sum(i in by_id for i in ids) in (0, len(ids)), "partial append"
    stored = {(e["stream"], e["version"]) for e in feed}
    missing = acked_items - stored
    assert not missing, f"{len(missing)} acknowledged commands lost, e.g. {sorted(missing)[:3]}"
    # The hot item's versions have no gap and its row agrees with the log.
    hot_versions = sorted(v for s, v in stored if s == f"items-{hot}")
    assert hot_versions == list(range(1, len(hot_versions) + 1))
    assert expect_json(srv.get(f"/v1/items/{quote(hot, safe='')}"), 200)["version"] == hot_versions[-1]
