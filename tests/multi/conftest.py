"""
conftest.py - harness of the multi-instance suite (PostgreSQL only).

Several `chronicle serve` processes share one PostgreSQL database of the
throwaway cluster that scripts/pg-test.sh started for this suite, and some
tests take that cluster away and bring it back. This file loads the API
harness (tests/api/conftest.py, under the module name
`chronicle_api_harness`, as examples/conftest.py does), re-exports it, and
adds:

  shared_database   fixture: a fresh database (dropped at teardown unless
                    CHRONICLE_KEEP_TMP=1) for several servers
  instances         fixture: start(n, db, ...) starts n servers on db, one
                    after the other or (together=True) all at once, each its
                    own process; all are closed (and must exit 0) at teardown
  cluster           fixture: pause() stops the cluster's server (pg_ctl stop
                    -m fast, by its recorded PID), resume() starts it again;
                    teardown resumes a paused cluster
  psql_db(sql, db)  psql on one database of the cluster

Environment (scripts/pg-test.sh run sets all but the first):
  CHRONICLE_TEST_DATABASE  must be `postgres`: without it every test skips
  CHRONICLE_PG_URL, CHRONICLE_PSQL   as for tests/api
  CHRONICLE_PG_TEST, CHRONICLE_PG_DIR   the script and its state directory,
                    for `pg-test.sh pause|resume DIR`
"""

import importlib.util
import os
import subprocess
import sys
import threading

import pytest

SOURCE_DIR = os.environ.get("CHRONICLE_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# Loaded once per pytest run: tests/multi and examples/ (which loads it the
# same way) are never collected together.
_spec = importlib.util.spec_from_file_location("chronicle_api_harness",
                                               os.path.join(SOURCE_DIR, "tests", "api", "conftest.py"))
harness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = harness
_spec.loader.exec_module(harness)
globals().update({k: v for k, v in vars(harness).items() if not k.startswith("_") and k not in ("pytest", "requests")})

PG_TEST = os.environ.get("CHRONICLE_PG_TEST") or ""
PG_DIR = os.environ.get("CHRONICLE_PG_DIR") or ""
ON_POSTGRES = harness.TEST_DATABASE == "postgres"


def pytest_collection_modifyitems(config, items):
    if ON_POSTGRES:
        return
    skip = pytest.mark.skip(reason="multi-instance tests need CHRONICLE_TEST_DATABASE=postgres under "
                                   "scripts/pg-test.sh run (CTest entry multi_pg)")
    for item in items:
        item.add_marker(skip)


def psql_db(sql, dbname):
    """psql on database dbname of the cluster; its unaligned output."""
    return harness.psql(sql, harness.pg_database_url(dbname))


@pytest.fixture
def shared_database(request):
    dbname = harness.create_pg_database(request.node.name[:24])
    yield dbname
    if not harness.KEEP_TMP:
        harness.drop_pg_database(dbname)


@pytest.fixture
def instances():
    """start(n, db, args=(), name=...) -> n running Servers on database db."""
    started = []

    def start(n, db, args=(), env=None, name="inst", together=False):
        srvs = [harness.Server(args=args, env=env, name=f"{name}{i}", pg_database=db) for i in range(n)]
        started.extend(srvs)
        if not together:
            for srv in srvs:
                try:
                    srv.start()
                except harness.ServerStartError as e:
                    pytest.fail(str(e), pytrace=False)
            return srvs
        # All processes are spawned at once (a barrier), then each waits
        # for its own "listening" line.
        barrier = threading.Barrier(n)
        failed = []

        def run(srv):
            barrier.wait(30)
            try:
                srv.start()
            except harness.ServerStartError as e:
                failed.append(str(e))

        threads = [threading.Thread(target=run, args=(srv,)) for srv in srvs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(harness.START_DEADLINE + 30)
        if failed:
            pytest.fail("\n".join(failed), pytrace=False)
        return srvs

    yield start
    errors = []
    for srv in started:
        try:
            srv.close()
        except BaseException as e:  # pytest.fail raises Failed, a BaseException
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


class Cluster:
    """The suite's throwaway PostgreSQL server, stopped and started by
    scripts/pg-test.sh (which signals only the PID it recorded)."""

    def __init__(self):
        if not PG_TEST or not PG_DIR:
            raise RuntimeError("CHRONICLE_PG_TEST / CHRONICLE_PG_DIR are not set: run the suite under "
                               "`scripts/pg-test.sh run DIR -- python3 -m pytest tests/multi`")
        self.paused = False

    def _run(self, what):
        p = subprocess.run([PG_TEST, what, PG_DIR], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"pg-test.sh {what} failed ({p.returncode}): {p.stderr}")

    def pause(self):
        """Stops the server (pg_ctl stop -m fast: sessions are terminated,
        open transactions roll back). Returns once it has exited."""
        self.paused = True
        self._run("pause")

    def resume(self):
        """Starts the server again on the same data, socket and port;
        returns once it accepts connections."""
        self._run("resume")
        self.paused = False


@pytest.fixture
def cluster():
    c = Cluster()
    yield c
    if c.paused:
        c.resume()
