"""
test_schedules.py - the definition's `schedules` run by the real binary
(docs/schedules.md): per-row cron ticks (`for_each` an entity's cron field)
and fixed ones, driven by the test-only clock file
(CHRONICLE_TEST_CLOCK_FILE), so minutes pass when the test says so.

Checked: each due tick fires exactly once, with the event's stream, data
template, metadata and deterministic id; a restart neither repeats a tick
nor loses the ones missed while down (they fire once, as one event with the
latest tick and the count); two instances on one database fire each tick
once, and the second takes over when the first is killed; a changed or
removed cron value changes or stops the firing; an invalid cron value is a
422 naming the mistake; `--role api` runs no schedules.

Every wait polls with a deadline. "Nothing more fired" is shown with a
barrier: the clock moves on once more and the test waits for exactly the
next expected event, which the scheduler can only emit after finishing the
pass that would have fired anything extra.

The definition is tests/api/apps/schedules.json. Runs on SQLite, and on
PostgreSQL under api_pg (the second instance shares the first one's
database whatever the backend).
"""

import json
import os
import re
import time
from datetime import datetime, timezone

import pytest

from conftest import Server, ServerStartError, drop_pg_database, expect_json, expect_problem, problem_fields, \
    wait_until, check_event_shape

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(os.environ.get("CHRONICLE_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE)),
                   "tests", "api", "apps", "schedules.json")
UUIDV8_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
RUNNING = "schedules: running on this instance"
WAIT = 15.0


def iso(s):
    return datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def seconds(ts):
    d = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return int(d.timestamp())


class Clock:
    """The scheduler's "now": a file holding an RFC 3339 time, replaced
    atomically so the server never reads half a write."""

    def __init__(self, directory):
        self.path = os.path.join(str(directory), "clock")
        self.now = None

    def set(self, s):
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(iso(s) + "\n")
        os.replace(tmp, self.path)
        self.now = s


class Expect:
    """What the scheduler must have fired, computed from the rules: for a
    schedule with period p (seconds, aligned to the epoch as */N minutes and
    hours are in UTC), at clock x the due tick is x//p*p; it fires when later
    than the baseline (the last fired tick, or when the row last changed),
    counting the ticks in between."""

    def __init__(self):
        self.last = {}
        self.events = []  # (key, tick, missed)

    def start(self, key, baseline, period, phase=0):
        """phase: where ticks sit within the period (07:00 UTC daily is
        period 86400, phase 25200)."""
        self.last[key] = (baseline, period, phase)

    def stop(self, key):
        self.last.pop(key, None)

    def advance(self, x):
        for key, (base, p, ph) in sorted(self.last.items()):
            due = (x - ph) // p * p + ph
            if due > base:
                self.events.append((key, due, (due - ph) // p - (base - ph) // p))
                self.last[key] = (due, p, ph)


@pytest.fixture
def servers(tmp_path):
    """Makes servers of the schedules app sharing one clock; every one is
    closed at teardown (a second instance on the same database leaves the
    database to the first)."""
    clock = Clock(tmp_path)
    clock.set(int(time.time()))
    made = []

    def make(name="sched", args=(), like=None, start=True, env=None):
        srv = Server(args=["--app", APP, *args], env={"CHRONICLE_TEST_CLOCK_FILE": clock.path, **(env or {})},
                     name=name)
        if like is not None:  # the same database as `like`
            if srv.pg_database:
                drop_pg_database(srv.pg_database)
                srv.pg_database = None
            srv.database = like.database
            srv.db_path = like.db_path
        made.append(srv)
        if start:
            try:
                srv.start()
            except ServerStartError as e:
                pytest.fail(str(e), pytrace=False)
        return srv

    make.clock = clock
    yield make
    errors = []
    for srv in reversed(made):  # the database owner last
        try:
            srv.close()
        except BaseException as e:  # pytest.fail raises Failed (a BaseException)
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


def log_count(srv, msg):
    n = 0
    for line in srv.stderr_lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("msg") == msg:
            n += 1
    return n


def wait_running(srv, count=1):
    """Waits until srv has finished its first pass under the lease (the
    count-th time it took it)."""
    wait_until(lambda: log_count(srv, RUNNING) >= count, WAIT, msg=f"{RUNNING!r} x{count}")


def team(srv, key, cron, channel=None, token="tok"):
    body = {"team_id": key, "poll_schedule": cron, "token": token}
    if channel:
        body["channel"] = channel
    r = srv.post("/v1/teams", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return expect_json(r, 201)


def patch(srv, key, body):
    r = srv.request("PATCH", f"/v1/teams/{key}", data=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"})
    return expect_json(r, 200)


def events(srv, type_):
    return srv.read_feed(types=[type_])


def polls(srv):
    return [(e["data"]["team_id"], seconds(e["data"]["tick"]), e["data"]["missed"])
            for e in events(srv, "StatusPollRequested")]


def wait_polls(srv, want):
    """Waits until the poll events are exactly want (in order of firing per
    team; the feed may interleave teams of one pass differently)."""
    def same():
        got = polls(srv)
        return got if len(got) >= len(want) else None
    got = wait_until(same, WAIT, msg=f"{len(want)} poll events")
    assert sorted(got) == sorted(want)
    assert len(got) == len(want)
    return got


def test_per_team_ticks_fire_once_each(servers):
    clock = servers.clock
    srv = servers()
    wait_running(srv)
    first_seen = clock.now
    a = team(srv, "a", "* * * * *", channel="#a")
    b = team(srv, "b", "*/5 * * * *")
    team(srv, "c", None)  # no schedule: never polled
    want = Expect()
    want.start("a", seconds(a["updated_at"]), 60)
    want.start("b", seconds(b["updated_at"]), 300)
    hourly = Expect()  # a fixed schedule counts from when it was first seen
    hourly.start("hourly", first_seen, 3600)
    morning = Expect()  # 09:00 at +02:00 is 07:00 UTC
    morning.start("morning", first_seen, 86400, 7 * 3600)

    # Minute by minute, a few seconds into each minute, over eleven minutes.
    t0 = (max(want.last["a"][0], want.last["b"][0]) // 60 + 1) * 60
    for i in range(11):
        clock.set(t0 + 60 * i + 7)
        want.advance(clock.now)
        hourly.advance(clock.now)
        morning.advance(clock.now)
        wait_polls(srv, want.events)
    assert sum(1 for e in want.events if e[0] == "b") >= 2

    # The shape of one event: its own stream, the data template filled in,
    # the tick in the metadata, a deterministic (version 8) id.
    last_a = [e for e in events(srv, "StatusPollRequested") if e["data"]["team_id"] == "a"][-1]
    check_event_shape(last_a)
    tick = iso(t0 + 600)
    assert last_a["stream"] == "schedule:poll:a"
    assert last_a["data"] == {"team_id": "a", "channel": "#a", "tick": tick, "missed": 1, "schedule": "poll",
                              "source": "scheduler"}
    assert last_a["metadata"] == {"schedule": "poll", "tick": tick, "missed": 1, "key": "a"}
    assert UUIDV8_RE.match(last_a["id"]), last_a["id"]
    hist = expect_json(srv.get("/v1/streams/schedule%3Apoll%3Aa"), 200)
    assert [e["version"] for e in hist["events"]] == list(range(1, 12))
    b_evs = [e for e in events(srv, "StatusPollRequested") if e["data"]["team_id"] == "b"]
    assert all(e["data"]["channel"] is None and "token" not in e["data"] for e in b_evs)

    # Jump past the next 07:00 UTC (09:00 at +02:00): each schedule fires
    # once for everything it missed, with the latest tick and the count.
    now = clock.now
    seven = now // 86400 * 86400 + 7 * 3600
    if seven <= now:
        seven += 86400
    clock.set(seven + 90)
    want.advance(clock.now)
    hourly.advance(clock.now)
    morning.advance(clock.now)
    wait_polls(srv, want.events)
    assert want.events[-1][2] > 1
    assert hourly.events[-1][1] == clock.now // 3600 * 3600

    # Barrier: one more minute fires exactly the next tick of a, and nothing
    # of the earlier clock came twice.
    clock.set(clock.now + 60)
    want.advance(clock.now)
    hourly.advance(clock.now)
    wait_polls(srv, want.events)
    assert morning.events[-1] == ("morning", seven, 1)
    assert [e["data"] for e in events(srv, "MorningTick")] == [{"at": iso(t), "missed": n}
                                                               for _, t, n in morning.events]
    got = events(srv, "HourlyTick")
    assert [e["data"] for e in got] == [{"tick": iso(t)} for _, t, _ in hourly.events]  # the default template
    assert [e["metadata"] for e in got] == [{"schedule": "hourly", "tick": iso(t), "missed": n}
                                            for _, t, n in hourly.events]
    assert {e["stream"] for e in got} == {"schedule:hourly"}
    ids = [e["id"] for e in events(srv, "StatusPollRequested")]
    assert len(set(ids)) == len(ids)


def test_invalid_poll_schedule_is_422(servers):
    srv = servers()
    r = srv.post("/v1/teams", data=json.dumps({"team_id": "x", "poll_schedule": "0 24 * * *"}).encode(),
                 headers={"Content-Type": "application/json"})
    body = expect_problem(r, 422, "validation")
    assert problem_fields(body) == ["poll_schedule"]
    assert body["errors"][0]["message"] == \
        "must be a cron expression of 5 fields (minute hour day month weekday): hour: 24 is out of range 0-23"
    team(srv, "x", "0 9 * * MON-FRI")
    r = srv.request("PATCH", "/v1/teams/x", data=json.dumps({"poll_schedule": "0 0 31 4 *"}).encode(),
                    headers={"Content-Type": "application/json"})
    body = expect_problem(r, 422, "validation")
    assert body["errors"][0]["message"].endswith(
        "never fires: no listed month has any of the listed days of month")


def test_restart_fires_missed_ticks_once(servers):
    clock = servers.clock
    srv = servers()
    wait_running(srv)
    a = team(srv, "a", "* * * * *")
    b = team(srv, "b", "*/5 * * * *")
    want = Expect()
    want.start("a", seconds(a["updated_at"]), 60)
    want.start("b", seconds(b["updated_at"]), 300)
    t0 = (max(want.last["a"][0], want.last["b"][0]) // 300 + 1) * 300
    for i in range(3):
        clock.set(t0 + 60 * i + 1)
        want.advance(clock.now)
        wait_polls(srv, want.events)

    # A restart with the clock unchanged fires nothing again.
    srv.restart()
    wait_running(srv, 2)
    clock.set(clock.now + 60)  # barrier: exactly the next minute of a
    want.advance(clock.now)
    wait_polls(srv, want.events)

    # Down for 17 minutes: on start each team fires once, for the latest
    # missed tick, with the number missed.
    assert srv.stop() == 0
    clock.set(clock.now + 17 * 60)
    before = len(want.events)
    want.advance(clock.now)
    assert [e[0] for e in want.events[before:]] == ["a", "b"]
    assert want.events[before][2] == 17
    srv.start()
    wait_polls(srv, want.events)
    wait_running(srv, 3)

    # And a restart right after does not repeat them.
    srv.restart()
    wait_running(srv, 4)
    clock.set(clock.now + 60)
    want.advance(clock.now)
    wait_polls(srv, want.events)
    ids = [e["id"] for e in events(srv, "StatusPollRequested")]
    assert len(set(ids)) == len(ids)


def test_foreign_events_in_a_schedule_stream_fire_nothing_twice(servers):
    """Others may append to a schedule's stream (it is an ordinary stream).
    When they bury the last tick deeper than the scheduler looks, it fires
    the current tick again after a restart: the same event id, so the store
    keeps the first one (an idempotent replay, or a conflict on the id when
    the data differs, taken as "fired")."""
    clock = servers.clock
    srv = servers(env={"LOG_LEVEL": "debug"})
    wait_running(srv)
    a = team(srv, "a", "* * * * *")
    want = Expect()
    want.start("a", seconds(a["updated_at"]), 60)
    t0 = (want.last["a"][0] // 60 + 1) * 60
    for i in range(2):
        clock.set(t0 + 60 * i + 1)
        want.advance(clock.now)
        wait_polls(srv, want.events)
    r = srv.append("schedule:poll:a", [{"type": "Note", "data": {"n": i}} for i in range(20)])
    assert r.status_code == 201, r.text
    srv.restart()
    wait_running(srv, 2)
    assert log_count(srv, "schedule tick already fired") == 1
    clock.set(clock.now + 60)  # barrier
    want.advance(clock.now)
    wait_polls(srv, want.events)
    assert want.events[-1] == ("a", t0 + 120, 1)
    types = [e["type"] for e in expect_json(srv.get("/v1/streams/schedule%3Apoll%3Aa?limit=100"), 200)["events"]]
    assert types == ["StatusPollRequested"] * 2 + ["Note"] * 20 + ["StatusPollRequested"]


def test_two_instances_fire_once(servers):
    clock = servers.clock
    one = servers(name="one")
    wait_running(one)
    two = servers(name="two", like=one)
    a = team(one, "a", "* * * * *")
    b = team(one, "b", "*/2 * * * *")
    want = Expect()
    want.start("a", seconds(a["updated_at"]), 60)
    want.start("b", seconds(b["updated_at"]), 120)
    t0 = (max(want.last["a"][0], want.last["b"][0]) // 120 + 1) * 120
    for i in range(4):
        clock.set(t0 + 60 * i + 3)
        want.advance(clock.now)
        wait_polls(one, want.events)
        wait_polls(two, want.events)  # the same database
    assert log_count(two, RUNNING) == 0  # the lease is the first one's

    # The holder dies: the other takes the lease over and carries on from
    # the last fired tick, firing nothing twice.
    one.kill()
    wait_running(two)
    for i in range(4, 7):
        clock.set(t0 + 60 * i + 3)
        want.advance(clock.now)
        wait_polls(two, want.events)
    ids = [e["id"] for e in events(two, "StatusPollRequested")]
    assert len(set(ids)) == len(ids)


def test_changed_and_removed_schedules(servers):
    clock = servers.clock
    srv = servers()
    wait_running(srv)
    want = Expect()
    for key in ("a", "b", "c", "d"):
        t = team(srv, key, "* * * * *")
        want.start(key, seconds(t["updated_at"]), 60)
    t0 = (max(v[0] for v in want.last.values()) // 600 + 1) * 600
    clock.set(t0 + 5)
    want.advance(clock.now)
    wait_polls(srv, want.events)

    patch(srv, "a", {"poll_schedule": "*/10 * * * *"})  # every ten minutes from now on
    want.last["a"] = (t0, 600, 0)
    patch(srv, "b", {"poll_schedule": None})  # no longer polled
    want.stop("b")
    r = srv.request("DELETE", "/v1/teams/c")
    assert r.status_code in (200, 204), r.text
    want.stop("c")
    patch(srv, "d", {"channel": "#d"})  # another field: polling goes on
    for i in range(1, 12):
        clock.set(t0 + 60 * i + 5)
        want.advance(clock.now)
        wait_polls(srv, want.events)
    got = polls(srv)
    assert [e[1:] for e in got if e[0] == "a"][1:] == [(t0 + 600, 1)]
    assert [e[1] for e in got if e[0] in ("a", "b", "c")] == [t0, t0, t0, t0 + 600]
    assert [e[1] for e in got if e[0] == "d"] == [t0 + 60 * i for i in range(12)]
    # A team created now starts with its own schedule.
    t = team(srv, "e", "*/2 * * * *")
    want.start("e", seconds(t["updated_at"]), 120)
    clock.set(clock.now + 120)
    want.advance(clock.now)
    wait_polls(srv, want.events)
    assert want.events[-1][0] == "e"


def test_api_role_runs_no_schedules(servers):
    clock = servers.clock
    api = servers(name="api", args=["--role", "api"])
    a = team(api, "a", "* * * * *")
    base = seconds(a["updated_at"])
    clock.set((base // 60 + 2) * 60)
    # The api role has no scheduler; a worker on the same database fires.
    worker = servers(name="worker", like=api, args=["--role", "worker"])
    wait_running(worker)
    wait_polls(api, [("a", (base // 60 + 2) * 60, 2)])
    assert log_count(api, RUNNING) == 0
