"""
test_ordering.py - global order without skips across instances
(docs/internals/ordering.md).

Three `chronicle serve` processes share one PostgreSQL database and take
concurrent appends: many small transactions, about one in six held open
inside the transaction by a trigger the test installs on events.events
(pg_sleep for events whose data carries "sleep_ms"; nothing test-only is in
the binary). Meanwhile readers follow the log: a poller paging
`/v1/events?after=<cursor>` with small random page sizes from each instance
in turn, and one SSE subscriber per instance. At the end every reader must
have seen every acknowledged event exactly once, in increasing position
order, and never skipped one: its sequence equals the whole log read
afterwards, so no event it had moved past appeared later below its cursor.

A design that hands out positions before commit without ordering commits
(a sequence, max+1 without a lock) fails here: a slowed transaction keeps
its low position while faster ones commit higher positions, a reader
moves its cursor past the slow one, and the final log holds an event the
reader never saw. docs/testing.md says how that was checked.
"""

import random
import threading
import time

import requests

from conftest import SSE, ev, expect_json, new_id, psql_db, stream_path, wait_until

SLOW_TRIGGER = """
CREATE FUNCTION public.chronicle_test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.data ? 'sleep_ms' THEN
    PERFORM pg_sleep((NEW.data->>'sleep_ms')::numeric / 1000);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER chronicle_test_slow BEFORE INSERT ON events.events
  FOR EACH ROW EXECUTE FUNCTION public.chronicle_test_slow();
"""

WRITERS = 9
APPENDS_PER_WRITER = 50
STREAMS_PER_WRITER = 3
SLOW_EVERY = 6
DEADLINE = 120.0


class Follower:
    """What one reader saw, in order, and what was wrong with it."""

    def __init__(self, name):
        self.name = name
        self.events = []  # (position, id)
        self.errors = []
        self.reads = 0    # reads that returned events while writers ran

    def take(self, e):
        last = self.events[-1][0] if self.events else 0
        if e["position"] <= last:
            self.errors.append(f"{self.name}: position {e['position']} ({e['id']}) after {last}")
        self.events.append((e["position"], e["id"]))

    @property
    def last(self):
        return self.events[-1][0] if self.events else 0


def test_three_instances_readers_see_every_event_once_in_order(shared_database, instances):
    db = shared_database
    srvs = instances(3, db, name="ord")
    psql_db(SLOW_TRIGGER, db)

    # The trigger holds a transaction open: the append takes at least that long.
    t0 = time.monotonic()
    r = srvs[0].append(f"probe-{new_id()}", [ev("Probe", {"sleep_ms": 300})])
    assert expect_json(r, 201)["positions"] == [1]
    assert time.monotonic() - t0 >= 0.3

    lock = threading.Lock()
    acked = {}            # event id -> position
    acked_by = [0, 0, 0]  # events acknowledged per instance
    versions = {}         # stream -> last acknowledged version
    problems = []
    writing = threading.Event()
    writing.set()
    stop = threading.Event()
    final_head = [None]
    deadline = time.monotonic() + DEADLINE

    def writer(w):
        rnd = random.Random(w)
        sessions = [requests.Session() for _ in srvs]
        streams = [f"w{w}-s{k}-{new_id()[:8]}" for k in range(STREAMS_PER_WRITER)]
        known = {s: 0 for s in streams}
        try:
            for i in range(APPENDS_PER_WRITER):
                s = streams[i % len(streams)]
                k = (w + i) % len(srvs)  # a stream's appends go to every instance in turn
                evs = []
                for j in range(1 + rnd.randrange(3)):
                    data = {"w": w, "i": i, "j": j}
                    if i % SLOW_EVERY == w % SLOW_EVERY and j == 0:
                        data["sleep_ms"] = rnd.randrange(10, 60)
                    evs.append(ev("Ordered", data, id_=new_id()))
                r = srvs[k].append(s, evs, expected_version=known[s], session=sessions[k])
                if r.status_code != 201:
                    with lock:
                        problems.append(f"append to {s} via {k}: {r.status_code} {r.text[:300]}")
                    return
                body = r.json()
                with lock:
                    for eid, pos in zip(body["ids"], body["positions"]):
                        acked[eid] = pos
                    acked_by[k] += len(evs)
                known[s] = body["version"]
                with lock:
                    versions[s] = body["version"]
        finally:
            for sess in sessions:
                sess.close()

    poller_seen = Follower("poller")

    def poller():
        rnd = random.Random(99)
        sessions = [requests.Session() for _ in srvs]
        k = 0
        try:
            while time.monotonic() < deadline:
                if final_head[0] is not None and poller_seen.last >= final_head[0]:
                    return
                limit = rnd.randrange(1, 40)
                r = sessions[k].get(f"{srvs[k].url}/v1/events?after={poller_seen.last}&limit={limit}", timeout=10)
                if r.status_code != 200:
                    poller_seen.errors.append(f"poller via {k}: {r.status_code} {r.text[:300]}")
                    return
                body = r.json()
                if len(body["events"]) > limit:
                    poller_seen.errors.append(f"poller: {len(body['events'])} events for limit {limit}")
                for e in body["events"]:
                    poller_seen.take(e)
                if body["events"] and writing.is_set():
                    poller_seen.reads += 1
                if body["events"] and body["next_after"] != body["events"][-1]["position"]:
                    poller_seen.errors.append(f"poller: next_after {body['next_after']} is not the last position")
                k = (k + 1) % len(srvs)
                if not body["events"]:
                    time.sleep(0.005)  # pacing while caught up, not synchronisation
        finally:
            for sess in sessions:
                sess.close()

    sse_seen = [Follower(f"sse{k}") for k in range(len(srvs))]

    def subscriber(k):
        f = sse_seen[k]
        with SSE(srvs[k].url + "/v1/events", read_timeout=30) as sub:
            if sub.resp.status_code != 200:
                f.errors.append(f"sse{k}: {sub.resp.status_code}")
                return
            while not stop.is_set() and time.monotonic() < deadline:
                if final_head[0] is not None and f.last >= final_head[0]:
                    return
                try:
                    e = sub.next_event(timeout=2)
                except AssertionError:
                    if sub.ended:
                        f.errors.append(f"sse{k}: the stream ended after position {f.last}")
                        return
                    continue  # nothing new within 2 s: check the end condition again
                if str(e["json"]["position"]) != e["id"]:
                    f.errors.append(f"sse{k}: id {e['id']} for position {e['json']['position']}")
                f.take(e["json"])
                if writing.is_set():
                    f.reads += 1

    readers = [threading.Thread(target=poller, daemon=True)]
    readers += [threading.Thread(target=subscriber, args=(k,), daemon=True) for k in range(len(srvs))]
    for t in readers:
        t.start()
    writers = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(WRITERS)]
    try:
        for t in writers:
            t.start()
        for t in writers:
            t.join(max(1.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in writers), "writers did not finish"
        writing.clear()
        assert not problems, problems[:5]

        head = expect_json(srvs[0].get("/v1/events?limit=1"), 200)["head"]
        with lock:
            final_head[0] = head
        for t in readers:
            t.join(max(1.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in readers), \
            f"readers did not reach head {head}: " + ", ".join(f"{f.name} at {f.last}" for f in [poller_seen, *sse_seen])
    finally:
        stop.set()

    n_events = WRITERS * APPENDS_PER_WRITER  # at least; plus the probe
    assert len(acked) >= n_events
    assert all(n > 0 for n in acked_by), acked_by  # every instance wrote

    # The whole log, read afterwards: every acknowledged event (and the
    # probe) once, in increasing positions.
    log = srvs[1].read_feed()
    ids = [e["id"] for e in log]
    positions = [e["position"] for e in log]
    assert len(set(ids)) == len(ids)
    assert set(ids) == set(acked) | {log[0]["id"]}
    assert positions == sorted(set(positions))

    # Each reader saw exactly that sequence: nothing twice, nothing skipped.
    expected = list(zip(positions, ids))
    for f in [poller_seen, *sse_seen]:
        assert not f.errors, f.errors[:5]
        missing = sorted(set(expected) - set(f.events))
        assert not missing, f"{f.name} never saw {len(missing)} events, e.g. {missing[:3]} (skipped past them)"
        assert f.events == expected, f"{f.name} saw a different sequence"
        # It was following while the writers ran, not only reading at the end.
        assert f.reads >= 10, f"{f.name} read only {f.reads} times during the writes"

    # Positions are the acknowledged ones, and dense (no gaps in normal operation).
    assert all(positions[ids.index(i)] == p for i, p in acked.items()), "an event's position changed"
    assert positions == list(range(1, len(log) + 1)), "positions are not 1..n"
    assert head == len(log)

    # Stream versions were exact across instances: 1..n per stream.
    for s, v in versions.items():
        got = expect_json(srvs[2].get(stream_path(s) + "?limit=1000"), 200)
        assert [e["version"] for e in got["events"]] == list(range(1, v + 1)), s

    # The database agrees: one row per event, head = last position.
    row = psql_db("SELECT count(*), count(DISTINCT position), max(position) FROM events.events", db).split("|")
    assert [int(x) for x in row] == [len(log)] * 3
    assert int(psql_db("SELECT position FROM events.head", db)) == len(log)
    slow = int(psql_db("SELECT count(*) FROM events.events WHERE data ? 'sleep_ms'", db))
    assert slow >= WRITERS * APPENDS_PER_WRITER // SLOW_EVERY, slow
