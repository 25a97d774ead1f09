"""
test_split.py - split databases (issue 5, docs/storage.md "Split databases"):
events in one PostgreSQL database, the read model in another, kept by the
asynchronous projector.

Runs under scripts/pg-test.sh (CTest entry split_pg), which provides a
throwaway cluster in CHRONICLE_PG_URL; every test creates its own databases
there. The servers are the real binary over HTTP (tests/api/conftest.py's
Server); the databases are inspected with psql.

The central property, checked again and again while the projector is
killed and restarted: in any snapshot of the projection database, the
read model's rows are exactly the fold of the events up to its checkpoint
(no event applied twice or skipped, and a checkpoint that claims no more and
no less than what the rows hold), and once caught up, exactly the fold of
every event.
"""

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
from urllib.parse import urlsplit

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "api"))
import conftest as api  # noqa: E402  (the API suite's harness, reused)

APP = os.path.join(HERE, "app.json")
APP_V2 = os.path.join(HERE, "app_v2.json")
ENTITY = "counters"

pytestmark = pytest.mark.skipif(not api.PG_URL, reason="needs CHRONICLE_PG_URL (scripts/pg-test.sh run)")


# --------------------------------------------------------------------------
# harness


class Instance(api.Server):
    """One `chronicle serve` on given databases (not created or dropped by
    the instance: the test owns them)."""

    def __init__(self, database, projection_db=None, role="all", app=APP, name="split"):
        os.makedirs(api.TMP_ROOT, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=f"{name}-", dir=api.TMP_ROOT)
        self.backend = "postgres"
        self.db_path = None
        self.pg_database = None  # close() must not drop the shared database
        self.database = database
        self.extra_args = ["--app", app, "--role", role, "--log-level", "info"]
        if projection_db:
            self.extra_args += ["--projection-db", projection_db]
        self.env = {k: v for k, v in os.environ.items() if k not in api.SERVER_ENV_VARS}
        self.env["SSE_HEARTBEAT_MS"] = "200"
        self.proc = None
        self.port = None
        self.url = None
        self.stderr_lines = []
        self.runs = 0
        self.killed = False
        self._reader = None
        self._session = None

    def ready(self):
        r = self.get("/ready")
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def dbs():
    """Two fresh databases in the test cluster: (events URL, projections URL)."""
    names = [api.create_pg_database("split_ev"), api.create_pg_database("split_pj")]
    yield tuple(api.pg_database_url(n) for n in names)
    if not api.KEEP_TMP:
        for n in names:
            api.drop_pg_database(n)


@pytest.fixture
def instances():
    started = []

    def make(*args, **kw):
        srv = Instance(*args, **kw)
        started.append(srv)
        return srv.start()

    yield make
    for srv in reversed(started):
        srv.close()


def q(url, sql):
    """One statement's single JSON value (one snapshot: one statement)."""
    out = api.psql(sql, url).strip()
    return json.loads(out) if out else None


def head(ev):
    return q(ev, "SELECT to_json(position) FROM events.head")


def checkpoint(pj):
    return q(pj, "SELECT to_json(position) FROM projections.chronicle_projector WHERE id = 1")


def read_model(pj):
    """(checkpoint, {key: row}) from one snapshot of the projection database."""
    snap = q(pj, f"""
        SELECT json_build_object(
          'cp', (SELECT position FROM projections.chronicle_projector WHERE id = 1),
          'rows', (SELECT coalesce(json_agg(json_build_object(
                      'key', name, 'n', n, 'note', note, 'tag', tag, 'version', version,
                      'deleted', "_deleted")), '[]'::json)
                   FROM projections.{ENTITY}))""")
    rows = {}
    for r in snap["rows"]:
        assert r["key"] not in rows, f"duplicate row {r['key']}"
        rows[r["key"]] = r
    return snap["cp"], rows


def events_upto(ev, position):
    return q(ev, f"""
        SELECT coalesce(json_agg(json_build_object('s', aggregate_id, 't', type, 'd', data,
                                                   'v', version, 'p', position) ORDER BY position),
                        '[]'::json)
        FROM events.events WHERE position <= {int(position)}""")


def fold(events):
    """The entity rows the events make (the definition's evolve: create and
    update merge the fields they carry; delete leaves a tombstone)."""
    state = {}
    prefix = ENTITY + "-"
    last = 0
    for e in events:
        assert e["p"] > last, "events out of position order"
        last = e["p"]
        if not e["s"].startswith(prefix):
            continue
        key = e["s"][len(prefix):]
        cur = state.get(key)
        if e["t"] == "CounterDeleted":
            cur = dict(cur, deleted=1, n=None, note=None, tag=None)
        else:
            if cur is None or cur["deleted"]:
                cur = {"key": key, "n": None, "note": None, "tag": None, "deleted": 0}
            cur = dict(cur)
            for f in ("n", "note", "tag"):
                if f in e["d"]:
                    cur[f] = e["d"][f]
        cur["version"] = e["v"]
        state[key] = cur
    return state


def assert_consistent(ev, pj):
    """The read model is exactly the fold of the events up to its checkpoint.
    Returns the checkpoint."""
    cp, rows = read_model(pj)
    assert cp is not None
    assert cp <= head(ev), "checkpoint beyond the events' head"
    want = fold(events_upto(ev, cp))
    assert set(rows) == set(want), (
        f"at checkpoint {cp}: rows without events {sorted(set(rows) - set(want))[:5]}, "
        f"events without rows {sorted(set(want) - set(rows))[:5]}")
    for k, w in want.items():
        assert rows[k] == w, f"at checkpoint {cp}, {k}: read model {rows[k]} != fold {w}"
    return cp


def wait_caught_up(ev, pj, timeout=60):
    def done():
        h = head(ev)
        return h > 0 and checkpoint(pj) == h
    api.wait_until(done, timeout=timeout, interval=0.05, msg="the projector to catch up")


class Load:
    """Commands on the API instance from a few threads until stopped: creates,
    updates (counting up n) and some deletes. Records failures other than
    the 4xx a racing delete may cause."""

    def __init__(self, srv, threads=3, keys=40):
        self.url = srv.url
        self.stop_flag = threading.Event()
        self.errors = []
        self.ok = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(t, keys), daemon=True)
                        for t in range(threads)]

    def run(self, t, keys):
        s = requests.Session()
        rnd = random.Random(t)
        n = 0
        while not self.stop_flag.is_set():
            key = f"t{t}k{rnd.randrange(keys)}"
            n += 1
            try:
                r = s.patch(f"{self.url}/v1/{ENTITY}/{key}", json={"n": n, "note": f"w{n}"}, timeout=10)
                if r.status_code == 404:
                    r = s.post(f"{self.url}/v1/{ENTITY}",
                               json={"name": key, "n": n, "tag": f"{key}-{n}"}, timeout=10)
                elif r.status_code == 200 and rnd.random() < 0.02:
                    r = s.delete(f"{self.url}/v1/{ENTITY}/{key}", timeout=10)
                if r.status_code >= 500:
                    self.errors.append((r.status_code, r.text))
                elif r.status_code < 300:
                    with self.lock:
                        self.ok += 1
            except requests.RequestException as e:
                self.errors.append(repr(e))
        s.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)

    def wait_for(self, n, timeout=60):
        api.wait_until(lambda: self.ok >= n, timeout=timeout, msg=f"{n} commands")


class TableLock:
    """A psql session holding EXCLUSIVE on the read model's table: reads go
    on, and a projector's batch, once it has moved the checkpoint (its first
    statement), blocks on its first row write, inside its transaction."""

    def __init__(self, pj):
        self.p = subprocess.Popen([api.PSQL, pj, "-qAtX", "-v", "ON_ERROR_STOP=1"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.p.stdin.write(f"BEGIN; LOCK TABLE projections.{ENTITY} IN EXCLUSIVE MODE; "
                           "SELECT 'locked';\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline().strip()
        assert line == "locked", (line, self.p.stderr.read() if self.p.poll() is not None else "")

    def release(self):
        self.p.stdin.write("COMMIT;\n")
        self.p.stdin.close()
        assert self.p.wait(30) == 0, self.p.stderr.read()


def batch_blocked(pj):
    """True while a session of the projection database (the projector's
    writer) has written in its transaction (an xid) and waits for a lock."""
    dbname = urlsplit(pj).path.lstrip("/")
    return q(api.PG_URL, f"""
        SELECT to_json(count(*) > 0) FROM pg_stat_activity
        WHERE datname = '{dbname}' AND backend_xid IS NOT NULL AND wait_event_type = 'Lock'""")


# --------------------------------------------------------------------------
# tests


def test_reads_come_from_the_read_model_with_staleness_headers(dbs, instances):
    ev, pj = dbs
    srv = instances(ev, pj)
    r = srv.post(f"/v1/{ENTITY}", json={"name": "a", "n": 1})
    assert r.status_code == 201, r.text
    assert "Chronicle-Projection-Position" not in r.headers  # a command: the write model answers
    wait_caught_up(ev, pj)
    r = srv.get(f"/v1/{ENTITY}/a")
    assert r.status_code == 200
    assert r.json()["n"] == 1
    assert r.headers["Chronicle-Projection-Position"] == str(head(ev))
    assert r.headers["Chronicle-Projection-Lag"] == "0"
    r = srv.get(f"/v1/{ENTITY}")
    assert r.status_code == 200 and [i["name"] for i in r.json()] == ["a"]
    assert int(r.headers["Chronicle-Projection-Position"]) == head(ev)
    # The rows are in the projection database; the events database keeps
    # its inline write model.
    assert q(pj, f"SELECT to_json(count(*)) FROM projections.{ENTITY}") == 1
    assert q(pj, "SELECT to_json(count(*)) FROM events.events") == 0
    assert q(ev, f"SELECT to_json(count(*)) FROM projections.{ENTITY}") == 1
    body = srv.ready()
    p = body["projector"]
    assert body["status"] == "ready"
    assert p["mode"] == "async" and p["runs_here"] is True and p["lease_held"] is True
    assert p["checkpoint"] == p["head"] == head(ev) and p["lag"] == 0
    assert p["holder"].endswith(f":{srv.proc.pid}")
    # Time travel folds the log: no staleness header.
    r = srv.get(f"/v1/{ENTITY}/a?version=1")
    assert r.status_code == 200 and "Chronicle-Projection-Position" not in r.headers


def test_commands_decide_on_the_write_model_not_the_read_model(dbs, instances):
    ev, pj = dbs
    api_srv = instances(ev, pj, role="api")  # no projector anywhere: the read model stays empty
    assert api_srv.post(f"/v1/{ENTITY}", json={"name": "x", "n": 1, "tag": "t1"}).status_code == 201
    # Not in the read model yet ...
    r = api_srv.get(f"/v1/{ENTITY}/x")
    assert r.status_code == 404
    assert r.headers["Chronicle-Projection-Position"] == "0"
    assert r.headers["Chronicle-Projection-Lag"] == "1"
    # ... but commands see it: update works, a duplicate create and a
    # duplicate unique value are refused.
    r = api_srv.request("PATCH", f"/v1/{ENTITY}/x", json={"n": 2})
    assert r.status_code == 200 and r.json()["n"] == 2
    assert api_srv.post(f"/v1/{ENTITY}", json={"name": "x", "n": 1}).status_code == 409
    r = api_srv.post(f"/v1/{ENTITY}", json={"name": "y", "n": 1, "tag": "t1"})
    assert r.status_code == 409, r.text
    p = api_srv.ready()["projector"]
    assert p["runs_here"] is False and p["lease_held"] is False and p["lag"] == 2
    # A worker brings the read model up to date.
    instances(ev, pj, role="worker", name="worker")
    wait_caught_up(ev, pj)
    r = api_srv.get(f"/v1/{ENTITY}/x")
    assert r.status_code == 200 and r.json()["n"] == 2
    api.wait_until(lambda: api_srv.get(f"/v1/{ENTITY}/x").headers["Chronicle-Projection-Lag"] == "0",
                   timeout=10, msg="the API instance to see the new checkpoint")


def test_worker_role_serves_operations_only(dbs, instances):
    ev, pj = dbs
    w = instances(ev, pj, role="worker")
    assert w.get("/health").status_code == 200
    assert w.get("/ready").status_code == 200
    assert w.get("/metrics").status_code == 200
    assert w.get("/internal/health/store").status_code == 200
    for path in (f"/v1/{ENTITY}", "/v1/events", "/openapi.json"):
        r = w.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert "--role worker" in r.json()["detail"]
    r = w.post(f"/v1/{ENTITY}", json={"name": "a", "n": 1})
    assert r.status_code == 404


def test_kill_the_projector_mid_batch_no_duplicates_no_gaps(dbs, instances):
    ev, pj = dbs
    api_srv = instances(ev, pj, role="api", name="api")
    kills = 0
    with Load(api_srv) as load:
        load.wait_for(1500, timeout=120)  # a backlog for the first worker
        worker = instances(ev, pj, role="worker", name="worker")
        for round_ in range(3):
            # Kill while a batch's transaction has moved the checkpoint and
            # not committed: blocked on a row write by a lock we hold.
            lock = TableLock(pj)
            try:
                api.wait_until(lambda: batch_blocked(pj), timeout=60, interval=0.05,
                               msg="the projector blocked inside a batch")
                worker.kill()
                kills += 1
            finally:
                lock.release()
            # The killed batch's session ends with its transaction rolled back.
            api.wait_until(lambda: not batch_blocked(pj), timeout=30, msg="the batch to end")
            assert_consistent(ev, pj)
            load.wait_for(load.ok + 300, timeout=60)  # appends go on without a projector
            assert checkpoint(pj) < head(ev)
            worker.start()
            # Consistent at every checkpoint seen while it catches up.
            for _ in range(3):
                assert_consistent(ev, pj)
        load.wait_for(load.ok + 200, timeout=60)
    assert not load.errors, load.errors[:5]
    assert kills == 3
    wait_caught_up(ev, pj)
    cp = assert_consistent(ev, pj)
    assert cp == head(ev)
    _, rows = read_model(pj)
    assert rows == fold(events_upto(ev, cp))
    # Every event of the load is in the log, and the read model folds all.
    assert len(rows) > 0
    # The API instance serves the same state it reports.
    listed = {i["name"]: i["n"] for i in api_srv.get(f"/v1/{ENTITY}?limit=1000").json()}
    assert listed == {k: r["n"] for k, r in rows.items() if not r["deleted"]}


def test_another_instance_takes_over_the_projector(dbs, instances):
    ev, pj = dbs
    a = instances(ev, pj, name="a")
    b = instances(ev, pj, name="b")
    api.wait_until(lambda: a.ready()["projector"]["lease_held"] or b.ready()["projector"]["lease_held"],
                   timeout=15, msg="one instance to take the projector lease")
    ra, rb = a.ready()["projector"], b.ready()["projector"]
    assert ra["lease_held"] != rb["lease_held"], (ra, rb)
    holder, other = (a, b) if ra["lease_held"] else (b, a)
    for i in range(20):
        assert other.post(f"/v1/{ENTITY}", json={"name": f"k{i}", "n": i}).status_code == 201
    wait_caught_up(ev, pj)
    assert other.ready()["projector"]["holder"].endswith(f":{holder.proc.pid}")
    holder.kill()
    api.wait_until(lambda: other.ready()["projector"]["lease_held"], timeout=20,
                   msg="the surviving instance to take over the projector")
    for i in range(20, 40):
        assert other.post(f"/v1/{ENTITY}", json={"name": f"k{i}", "n": i}).status_code == 201
    wait_caught_up(ev, pj)
    assert other.ready()["projector"]["holder"].endswith(f":{other.proc.pid}")
    assert assert_consistent(ev, pj) == head(ev)
    assert len(other.get(f"/v1/{ENTITY}?limit=100").json()) == 40


def test_sqlite_with_a_projection_database_is_a_configuration_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in api.SERVER_ENV_VARS}
    env["PROJECTION_DB_URL"] = api.PG_URL
    p = subprocess.run([api.BIN, "serve", "--listen", "127.0.0.1:0", "--database",
                        f"sqlite:{tmp_path}/x.db", "--app", APP], env=env, capture_output=True,
                       timeout=30)
    assert p.returncode != 0
    assert b"PROJECTION_DB_URL needs a PostgreSQL DATABASE_URL" in p.stderr, p.stderr


def test_the_same_database_twice_is_refused(dbs, tmp_path):
    ev, _ = dbs
    env = {k: v for k, v in os.environ.items() if k not in api.SERVER_ENV_VARS}
    # Another spelling of the same database: an extra connection parameter.
    same = ev + "&application_name=other"
    p = subprocess.run([api.BIN, "serve", "--listen", "127.0.0.1:0", "--database", ev,
                        "--projection-db", same, "--app", APP], env=env, capture_output=True,
                       timeout=30)
    assert p.returncode != 0
    assert b"names the same database as DATABASE_URL" in p.stderr, p.stderr


def test_instances_starting_with_a_changed_definition_rebuild_once(dbs, instances):
    ev, _ = dbs
    first = instances(ev, name="v1")
    for i in range(300):
        assert first.post(f"/v1/{ENTITY}", json={"name": f"k{i}", "n": i}).status_code == 201
    assert first.stop() == 0
    # Three instances with a definition whose layout differs, started at once.
    group = [Instance(ev, app=APP_V2, name=f"v2-{i}") for i in range(3)]
    threads = [threading.Thread(target=s.start) for s in group]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for s in group:
            assert s.alive() and s.port, s.stderr_tail()
        rebuilt = [s for s in group
                   if any(r and r.get("msg") == "projections rebuilt from events" for r in s.log_records())]
        assert len(rebuilt) == 1, [s.stderr_tail(5) for s in group]
        for s in group:
            r = s.get(f"/v1/{ENTITY}?limit=1000")
            assert r.status_code == 200 and len(r.json()) == 300
    finally:
        for s in group:
            s.close()
