"""
test_startup.py - instances starting together on an empty database
(issue 5: migrations "applied on start under an advisory lock so two
instances starting together do not race").

Two `chronicle serve` processes with an app definition are spawned at the
same moment on a database with nothing in it, several times over. Both
must come up; chronicle's migrations must be recorded exactly once each
(events.chronicle_migrations, checked with psql and against `chronicle
migrate status`); the one-row tables stay one row; the entity tables exist
once; and each instance then serves writes the other one reads.
"""

import json
import os
import subprocess

from conftest import (BIN, SOURCE_DIR, create_pg_database, drop_pg_database, ev, expect_json, new_stream,
                      pg_database_url, psql_db, KEEP_TMP)

APP = os.path.join(SOURCE_DIR, "tests", "api", "apps", "entities.json")
ROUNDS = 3


def migrate_status(db):
    p = subprocess.run([BIN, "migrate", "status", "--json", "--database", pg_database_url(db)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_two_instances_start_together_on_an_empty_database(instances):
    for round_ in range(ROUNDS):
        db = create_pg_database(f"start{round_}")
        try:
            assert psql_db("SELECT count(*) FROM pg_namespace WHERE nspname IN ('events', 'projections')",
                           db).strip() == "0"
            a, b = instances(2, db, args=["--app", APP], name=f"start{round_}-", together=True)

            rows = [r.split("|") for r in psql_db(
                "SELECT version, name FROM events.chronicle_migrations ORDER BY version", db).split("\n") if r]
            status = migrate_status(db)
            assert status and all(m["applied"] for m in status), status
            assert rows == [[str(m["version"]), m["name"]] for m in status], (rows, status)
            assert psql_db("SELECT count(*), min(position) FROM events.head", db).strip() == "1|0"
            assert psql_db("SELECT count(*) FROM projections.chronicle_projection_layout", db).strip() == "1"
            tables = psql_db("SELECT tablename FROM pg_tables WHERE schemaname = 'projections' "
                             "ORDER BY tablename", db).split()
            assert {"items", "owners", "chronicle_projection_layout"} <= set(tables), tables

            # Both serve, on the same data.
            s = new_stream("both")
            expect_json(a.append(s, [ev("FromA")]), 201)
            expect_json(b.append(s, [ev("FromB")], expected_version=1), 201)
            it = expect_json(b.post("/v1/items", data=json.dumps({"title": "x"}),
                                    headers={"Content-Type": "application/json"}), 201)
            assert expect_json(a.get(f"/v1/items/{it['id']}"), 200)["title"] == "x"
            assert [e["type"] for e in a.read_feed()] == ["FromA", "FromB", "ItemCreated"]
            assert [e["type"] for e in b.read_feed()] == ["FromA", "FromB", "ItemCreated"]
            for srv in (a, b):
                srv.close()
        finally:
            if not KEEP_TMP:
                drop_pg_database(db)
