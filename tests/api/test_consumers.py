"""
test_consumers.py - the worker role's consumers (docs/worker.md): webhooks
delivered signed to a receiver running inside the test, retries while the
receiver is down, dead letters and their retry, a worker killed with SIGKILL
mid-delivery, GET /v1/consumers (position, lag, last error), reset, the audit
log with rotation, a slow receiver that stalls nobody else, and two workers
on one database (one runs each consumer; the other takes over after SIGKILL).

The definition is tests/api/apps/consumers.json: webhook `hook` (every event,
signed with HOOK_SECRET, 3 attempts), webhook `patient` (only `Pinged`,
unsigned, 100 attempts) and the audit log at $AUDIT_LOG (4096-byte files,
3 kept). The receiver is a tiny http.server on 127.0.0.1 with an ephemeral
port. Runs on both backends (the servers come from conftest).
"""

import hashlib
import hmac
import http.server
import json
import os
import threading
import time

import pytest

from conftest import expect_json, expect_problem, new_stream, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(os.environ.get("CHRONICLE_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE)),
                   "tests", "api", "apps", "consumers.json")
SECRET = "test-secret-\u00e9"


class Receiver:
    """A webhook receiver on 127.0.0.1:<ephemeral>. mode: "ok" answers 204,
    "fail" answers 503, "hold" blocks each request until release() (or
    close). Every request is recorded as (headers, body bytes, status)."""

    def __init__(self, port=0):
        self.requests = []
        self.lock = threading.Lock()
        self.mode = "ok"
        self.is_down = False
        self.delay = 0.0
        self.held = threading.Event()
        self.release_ev = threading.Event()
        self._start(port)

    def _start(self, port):
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                if recv.is_down:  # a kept-alive connection outlived down(): drop it
                    self.close_connection = True
                    return
                mode = recv.mode
                if mode == "hold":
                    recv.held.set()
                    recv.release_ev.wait(30)
                if recv.delay:
                    time.sleep(recv.delay)
                status = 503 if mode == "fail" else 204
                with recv.lock:
                    recv.requests.append((dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def down(self):
        """Stops listening (connections are refused) until up()."""
        self.is_down = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def up(self):
        self.is_down = False
        self._start(self.port)

    def release(self):
        self.mode = "ok"
        self.release_ev.set()

    def close(self):
        self.release_ev.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def delivered(self, consumer=None):
        """Bodies (as dicts) answered 2xx, in arrival order."""
        with self.lock:
            return [json.loads(b) for h, b, s in self.requests
                    if s < 300 and (consumer is None or h.get("X-Chronicle-Consumer") == consumer)]

    def all(self, consumer=None):
        with self.lock:
            return [(h, json.loads(b), s) for h, b, s in self.requests
                    if consumer is None or h.get("X-Chronicle-Consumer") == consumer]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def patient():
    """A second receiver, for the `patient` webhook."""
    r = Receiver()
    yield r
    r.close()


def start(server_factory, receiver, patient=None, extra_env=None, name="consumers"):
    srv_env = {"HOOK_URL": receiver.url, "HOOK_SECRET": SECRET}
    if patient is not None:
        srv_env["PATIENT_URL"] = patient.url
    srv_env.update(extra_env or {})
    srv = server_factory(args=["--app", APP], env=srv_env, name=name)
    return srv


def ping(srv, stream, n, start=0):
    r = srv.append(stream, [{"type": "Pinged", "data": {"i": start + i}} for i in range(n)])
    body = expect_json(r, 201)
    return body["ids"]


def consumers(srv):
    return {c["name"]: c for c in expect_json(srv.get("/v1/consumers"), 200)["consumers"]}


def verify_signature(headers, body_bytes, secret=SECRET):
    sig = headers["X-Chronicle-Signature"]
    parts = dict(p.split("=", 1) for p in sig.split(","))
    assert set(parts) == {"t", "v1"}, sig
    ts = int(parts["t"])
    assert abs(time.time() - ts) < 300
    want = hmac.new(secret.encode(), f"{ts}.".encode() + body_bytes, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, parts["v1"])


# --------------------------------------------------------------------------


def test_webhook_posts_each_event_signed_with_a_stable_delivery_id(server_factory, receiver):
    srv = start(server_factory, receiver)
    stream = new_stream("hook")
    ids = ping(srv, stream, 3)
    acct = expect_json(srv.post("/v1/accounts", json={"name": "ann", "password": "hunter2"}), 201)
    wait_until(lambda: len(receiver.delivered("hook")) >= 4, msg="4 deliveries")
    feed = {e["id"]: e for e in srv.read_feed()}
    with receiver.lock:
        raw = [(h, b) for h, b, s in receiver.requests if h.get("X-Chronicle-Consumer") == "hook"]
    assert [json.loads(b)["id"] for h, b in raw][:3] == ids
    for h, b in raw:
        body = json.loads(b)
        assert body == feed[body["id"]]  # the event exactly as the feed shows it
        assert h["Content-Type"] == "application/json"
        assert h["X-Chronicle-Event-Id"] == body["id"]
        assert h["X-Chronicle-Attempt"] == "1"
        assert len(h["X-Chronicle-Delivery"]) == 32
        assert verify_signature(h, b)
        assert not verify_signature(h, b + b" ")  # the signature covers the body
        assert not verify_signature(h, b, secret="other")
    created = json.loads(raw[3][1])
    assert created["data"]["account_id"] == acct["account_id"]
    assert "password" not in created["data"]  # private fields never leave
    assert len({h["X-Chronicle-Delivery"] for h, b in raw}) == 4


def test_receiver_down_for_a_while_then_everything_arrives_once_in_order(server_factory, receiver, patient):
    srv = start(server_factory, receiver, patient=patient)
    stream = new_stream("down")
    first = ping(srv, stream, 3)
    wait_until(lambda: len(patient.delivered()) == 3, msg="first deliveries")
    patient.down()
    second = ping(srv, stream, 5, start=3)
    wait_until(lambda: consumers(srv)["patient"]["last_error"], msg="a failed attempt recorded")
    c = consumers(srv)["patient"]
    assert c["lag"] > 0 and "POST " in c["last_error"]
    patient.up()
    wait_until(lambda: len(patient.delivered()) == 8, timeout=20, msg="all 8 after the receiver is back")
    got = [e["id"] for e in patient.delivered()]
    assert got == first + second  # per-consumer order, nothing lost, nothing twice
    wait_until(lambda: consumers(srv)["patient"]["lag"] == 0, msg="caught up")
    c = consumers(srv)["patient"]
    assert c["delivered"] == 8 and c["dead_letters"] == 0


def test_dead_letter_after_the_configured_failures_then_retry(server_factory, receiver):
    srv = start(server_factory, receiver)
    receiver.mode = "fail"
    stream = new_stream("dead")
    ids = ping(srv, stream, 2)
    wait_until(lambda: consumers(srv)["hook"]["dead_letters"] == 2, timeout=15, msg="two dead letters")
    c = consumers(srv)["hook"]
    assert c["lag"] == 0  # skipped past the dead letters: the consumer goes on
    assert "503" in c["last_error"]
    attempts = receiver.all("hook")
    assert len(attempts) == 6  # max_attempts 3, for each event
    assert [int(h["X-Chronicle-Attempt"]) for h, b, s in attempts] == [1, 2, 3, 1, 2, 3]
    first_ids = {h["X-Chronicle-Delivery"] for h, b, s in attempts if b["id"] == ids[0]}
    assert len(first_ids) == 1  # the delivery id is stable across retries

    body = expect_json(srv.get("/v1/consumers/hook/dead-letters"), 200)
    dls = body["dead_letters"]
    assert [d["event_id"] for d in dls] == ids
    assert all(d["attempts"] == 3 and "503" in d["error"] and d["event_type"] == "Pinged" for d in dls)
    assert dls[0]["position"] < dls[1]["position"]
    assert body["next_after"] == dls[1]["id"]
    page = expect_json(srv.get(f"/v1/consumers/hook/dead-letters?after={dls[0]['id']}&limit=1"), 200)
    assert [d["event_id"] for d in page["dead_letters"]] == [ids[1]]

    receiver.mode = "ok"
    r = srv.post(f"/v1/consumers/hook/dead-letters/{dls[0]['id']}/retry")
    row = expect_json(r, 202)
    assert row["retry_requested"] is True and row["event_id"] == ids[0]
    wait_until(lambda: [d["event_id"] for d in expect_json(srv.get("/v1/consumers/hook/dead-letters"), 200)
                        ["dead_letters"]] == [ids[1]], msg="the retried dead letter leaves the list")
    ok = [(h, b) for h, b, s in receiver.all("hook") if s < 300]
    assert [b["id"] for h, b in ok] == [ids[0]]
    assert ok[0][0]["X-Chronicle-Delivery"] in first_ids
    assert consumers(srv)["hook"]["delivered"] == 1

    expect_problem(srv.post("/v1/consumers/hook/dead-letters/999999/retry"), 404, "not-found")
    expect_problem(srv.post("/v1/consumers/hook/dead-letters/abc/retry"), 404, "not-found")
    expect_problem(srv.post("/v1/consumers/nope/dead-letters/1/retry"), 404, "not-found")
    expect_problem(srv.get("/v1/consumers/nope/dead-letters"), 404, "not-found")
    expect_problem(srv.get("/v1/consumers/hook/dead-letters?limit=0"), 400, "bad-request")


def test_worker_killed_mid_delivery_redelivers_and_never_checkpoints_ahead(server_factory, receiver, patient):
    srv = start(server_factory, receiver, patient=patient)
    stream = new_stream("kill")
    ids = ping(srv, stream, 10)
    wait_until(lambda: len(patient.delivered()) == 10, msg="first 10")
    patient.mode = "hold"
    patient.held.clear()
    more = ping(srv, stream, 10, start=10)
    assert patient.held.wait(10), "the delivery of event 11 did not arrive"
    srv.kill()  # SIGKILL while the receiver holds a delivery
    held = len(patient.requests)
    patient.release()
    wait_until(lambda: len(patient.requests) == held + 1, msg="the held request recorded")
    run1 = [e["id"] for e in patient.delivered()]
    cut = len(patient.requests)
    srv.start()
    wait_until(lambda: len(set(e["id"] for e in patient.delivered())) == 20, timeout=20,
               msg="every event delivered at least once")
    with patient.lock:
        run2 = [json.loads(b)["id"] for h, b, s in patient.requests[cut:] if s < 300]
    everything = ids + more
    # The restarted worker starts at its checkpoint: whatever it sends
    # first, every event before that was delivered before the kill.
    first = everything.index(run2[0])
    assert set(everything[:first]) <= set(run1)
    assert run2 == everything[first:]  # then in order, each once
    wait_until(lambda: consumers(srv)["patient"]["lag"] == 0, msg="caught up after restart")


def test_consumers_list_lag_last_error_and_reset(server_factory, receiver):
    srv = start(server_factory, receiver)
    listed = expect_json(srv.get("/v1/consumers"), 200)
    names = [c["name"] for c in listed["consumers"]]
    assert names == ["hook", "patient", "audit_log"]
    by = {c["name"]: c for c in listed["consumers"]}
    assert by["patient"]["kind"] == "webhook" and by["audit_log"]["kind"] == "audit_log"
    assert by["patient"]["filter"] == {"events": ["Pinged"]}
    # PATIENT_URL is not set: listed, not run, and says why
    assert "PATIENT_URL" in by["patient"]["last_error"]
    stream = new_stream("lag")
    ping(srv, stream, 4)
    head = srv.head_position()
    wait_until(lambda: consumers(srv)["hook"]["position"] == head, msg="hook caught up")
    c = consumers(srv)
    assert c["hook"]["lag"] == 0 and c["hook"]["delivered"] == 4 and c["hook"]["last_error"] is None
    assert c["patient"]["lag"] == head and c["patient"]["position"] == 0

    # reset to a position: the events after it are delivered again, with new delivery ids
    before = {h["X-Chronicle-Delivery"] for h, b, s in receiver.all("hook")}
    r = srv.post("/v1/consumers/hook/reset", json={"position": 2})
    body = expect_json(r, 200)
    assert body["name"] == "hook" and body["position"] == 2 and body["resets"] == 1
    wait_until(lambda: len(receiver.delivered("hook")) == 6, msg="2 redelivered after reset")
    redone = receiver.all("hook")[4:]
    assert [b["position"] for h, b, s in redone] == [head - 1, head]
    assert not ({h["X-Chronicle-Delivery"] for h, b, s in redone} & before)
    # reset with no body: to 0
    expect_json(srv.post("/v1/consumers/hook/reset"), 200)
    wait_until(lambda: len(receiver.delivered("hook")) == 10, msg="all redelivered after reset to 0")

    for bad in ({"position": -1}, {"position": head + 1}, {"position": "1"}, {"position": 1.5},
                {"position": 1, "x": 1}, [1]):
        expect_problem(srv.post("/v1/consumers/hook/reset", json=bad), 422, "validation")
    expect_problem(srv.post("/v1/consumers/hook/reset", data=b"{", headers={"Content-Type": "application/json"}),
                   400, "malformed-json")
    expect_problem(srv.post("/v1/consumers/nope/reset", json={}), 404, "not-found")


def test_audit_log_lines_and_rotation(server_factory, receiver):
    srv = server_factory(args=["--app", APP], env={"HOOK_URL": receiver.url, "HOOK_SECRET": SECRET},
                         name="audit")
    path = os.path.join(srv.dir, "audit", "audit.log")
    srv.stop()
    os.makedirs(os.path.dirname(path))
    srv.env["AUDIT_LOG"] = path
    srv.start()
    stream = new_stream("audit")
    n = 60
    for i in range(n):
        expect_json(srv.append(stream, [{"type": "Noted", "data": {"i": i, "pad": "x" * 200}}]), 201)
    acct = expect_json(srv.post("/v1/accounts", json={"name": "bob", "password": "secret"}), 201)
    head = srv.head_position()
    wait_until(lambda: consumers(srv)["audit_log"]["position"] == head, msg="audit log caught up")
    files = sorted(os.listdir(os.path.dirname(path)))
    assert files == ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"]
    lines = []
    for name in ["audit.log.3", "audit.log.2", "audit.log.1", "audit.log"]:
        with open(os.path.join(os.path.dirname(path), name), "rb") as f:
            data = f.read()
        assert len(data) <= 4096 and data.endswith(b"\n")
        lines += [json.loads(line) for line in data.splitlines()]
    feed = srv.read_feed()
    # the oldest files were dropped (3 kept); what is kept is the feed's tail, in order
    assert len(lines) < len(feed)
    assert [e["id"] for e in lines] == [e["id"] for e in feed[len(feed) - len(lines):]]
    assert lines[:-1] == feed[len(feed) - len(lines):-1]
    # the last line is the account: its private field stays out of the audit log too
    assert lines[-1]["position"] == head and lines[-1]["type"] == "AccountsCreated"
    assert lines[-1]["data"] == {"account_id": acct["account_id"], "name": "bob"}
    assert lines[-1] == feed[-1]


def test_slow_receiver_stalls_neither_other_consumers_nor_the_api(server_factory, receiver, patient):
    slow = patient
    slow.mode = "hold"  # answers nothing until released (timeout_ms 1000, then retries)
    srv = start(server_factory, receiver, patient=slow)
    stream = new_stream("slow")
    for i in range(5):
        t0 = time.monotonic()
        ping(srv, stream, 1, start=i)
        assert time.monotonic() - t0 < 1.0
    wait_until(lambda: len(receiver.delivered("hook")) == 5, timeout=5, msg="the fast hook keeps delivering")
    wait_until(slow.held.is_set, msg="the slow receiver holds a delivery")
    assert len(slow.delivered()) == 0
    slow.release()
    wait_until(lambda: len({e["id"] for e in slow.delivered()}) == 5, timeout=20, msg="the slow one catches up")


def test_api_role_lists_consumers_but_does_not_run_them(server_factory, receiver):
    srv = server_factory(args=["--app", APP, "--role", "api"],
                         env={"HOOK_URL": receiver.url, "HOOK_SECRET": SECRET}, name="api-role")
    ping(srv, new_stream("api"), 2)
    c = consumers(srv)
    assert set(c) == {"hook", "patient", "audit_log"}
    assert c["hook"]["position"] == 0 and c["hook"]["lag"] == 2 and c["hook"]["updated_at"] is None
    time.sleep(0.3)  # nothing to wait for: the api role runs no consumer
    assert receiver.requests == []


def test_consumers_without_an_app_definition(server):
    body = expect_json(server.get("/v1/consumers"), 200)
    assert body["consumers"] == [] and body["head"] >= 0
    expect_problem(server.post("/v1/consumers/x/reset", json={}), 404, "not-found")


def holder_of(servers, consumer):
    """The servers whose log says they started consumer (its lease holder)."""
    return [s for s in servers if any(r and r.get("msg") == "consumer started" and r.get("consumer") == consumer
                                      for r in s.log_records())]


def test_two_workers_share_a_database_one_runs_each_consumer_the_other_takes_over(server_factory, receiver):
    env = {"HOOK_URL": receiver.url, "HOOK_SECRET": SECRET}
    a = server_factory(args=["--app", APP], env=env, name="worker-a")
    b = server_factory(args=["--app", APP, "--database", a.database], env=env, name="worker-b")
    stream = new_stream("two")
    ids = ping(a, stream, 3) + ping(b, stream, 3, start=3)
    wait_until(lambda: len(receiver.delivered("hook")) >= 6, msg="6 deliveries")
    wait_until(lambda: len(holder_of([a, b], "hook")) == 1, msg="one holder of the hook")
    assert [e["id"] for e in receiver.delivered("hook")] == ids  # one worker delivered, each once
    holder = holder_of([a, b], "hook")[0]
    other = b if holder is a else a
    assert not holder_of([other], "hook")
    holder.kill()  # SIGKILL: the lease goes with the process
    more = ping(other, stream, 3, start=6)
    wait_until(lambda: holder_of([other], "hook"), msg="the other worker takes the hook over")
    wait_until(lambda: set(ids + more) <= {e["id"] for e in receiver.delivered("hook")}, msg="all delivered")
    got = [e["id"] for e in receiver.delivered("hook")]
    assert got[:6] == ids and got[-3:] == more
    wait_until(lambda: consumers(other)["hook"]["lag"] == 0, msg="caught up on the other worker")
