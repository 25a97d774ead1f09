"""
test_reactions.py - reactions (definition key `reactions`) and feeds
(`feeds`), over HTTP against the real binary (docs/worker.md#reactions).

A reaction on this instance's feed runs a command per source event, with
causation and correlation ids in the new event's metadata, exactly one
effect per source event even across a SIGKILL and restart, and a command
that is refused becomes a dead letter with the reason at once. A reaction
on another instance's feed (two servers) follows it with a stored
checkpoint, records the error while the remote is down, and catches up
without duplicates once it is back. Runs on SQLite and PostgreSQL (the
harness's Server picks the backend).
"""

import os
import uuid

from conftest import expect_json, wait_until

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
APP = os.path.join(APPS, "reactions.json")
FEED_APP = os.path.join(APPS, "reactions-feed.json")


def consumers(srv, headers=None):
    return {c["name"]: c for c in expect_json(srv.get("/v1/consumers", headers=headers), 200)["consumers"]}


def create_task(srv, title, headers=None):
    key = "t-" + uuid.uuid4().hex[:12]
    expect_json(srv.post("/v1/tasks", json={"task_id": key, "title": title}, headers=headers), 201)
    return key


def jobs_opened(srv):
    return srv.read_feed(types=["JobOpened"])


def jobs_by_task(srv):
    out = {}
    for e in jobs_opened(srv):
        out.setdefault(e["data"]["task_id"], []).append(e)
    return out


def pin_port(srv):
    """Makes the server's next starts listen on the port it has now (a
    later --listen wins), so that another server's URL stays valid."""
    srv.extra_args = [*srv.extra_args, "--listen", f"127.0.0.1:{srv.port}"]


def test_reaction_runs_a_command_with_causation_and_correlation(server_factory):
    srv = server_factory(args=["--app", APP], name="reactions")
    key = create_task(srv, "Write the docs")
    task_ev = [e for e in srv.read_feed(types=["TaskCreated"]) if e["stream"] == f"tasks-{key}"][0]
    got = wait_until(lambda: jobs_by_task(srv).get(key), 10, msg="the job")
    assert len(got) == 1
    job_ev = got[0]
    assert job_ev["data"]["title"] == "Write the docs"
    assert job_ev["metadata"] == {"causation_id": task_ev["id"], "correlation_id": task_ev["id"],
                                  "reaction": "open_job"}
    job_key = job_ev["stream"][len("jobs-"):]
    job = expect_json(srv.get(f"/v1/jobs/{job_key}"), 200)
    assert (job["task_id"], job["title"]) == (key, "Write the docs")

    # A source event with a correlation id passes it on; the mapping reads data.
    r = srv.append("proposals-1", [{"type": "HintProposed", "data": {"task_id": key, "hint": "Start small"},
                                    "metadata": {"correlation_id": "req-42"}}])
    src_id = expect_json(r, 201)["ids"][0]
    wait_until(lambda: expect_json(srv.get(f"/v1/tasks/{key}"), 200).get("hint") == "Start small", 10,
               msg="the hint")
    upd = [e for e in srv.read_feed(types=["TaskUpdated"]) if e["stream"] == f"tasks-{key}"]
    assert len(upd) == 1
    assert upd[0]["metadata"] == {"causation_id": src_id, "correlation_id": "req-42", "reaction": "set_hint"}
    assert upd[0]["data"]["hint"] == "Start small"

    c = wait_until(lambda: consumers(srv)["set_hint"]["delivered"] >= 1 and consumers(srv), 10)
    assert c["set_hint"]["kind"] == "reaction" and c["set_hint"]["feed"] is None
    assert c["set_hint"]["filter"] == {"events": ["HintProposed"]}
    assert c["open_job"]["dead_letters"] == 0


def test_a_refused_command_is_dead_lettered_at_once_with_the_reason(server_factory):
    srv = server_factory(args=["--app", APP], name="reactions-dead")
    missing = "nope-" + uuid.uuid4().hex[:8]
    srv.append("proposals-2", [{"type": "HintProposed", "data": {"task_id": missing, "hint": "x"}}])
    long_title = create_task(srv, "x" * 60)  # the job's title allows 40 characters: 422
    ok = create_task(srv, "Fine")
    wait_until(lambda: jobs_by_task(srv).get(ok), 10, msg="the job after the refused one")

    def dead(name):
        return expect_json(srv.get(f"/v1/consumers/{name}/dead-letters"), 200)["dead_letters"]

    d = wait_until(lambda: dead("set_hint"), 10, msg="the set_hint dead letter")
    assert len(d) == 1 and d[0]["attempts"] == 1 and d[0]["event_type"] == "HintProposed"
    assert "not-found" in d[0]["error"] or "does not exist" in d[0]["error"], d[0]["error"]
    d = wait_until(lambda: dead("open_job"), 10, msg="the open_job dead letter")
    assert len(d) == 1 and d[0]["attempts"] == 1
    assert "title" in d[0]["error"], d[0]["error"]
    assert long_title not in jobs_by_task(srv)
    c = consumers(srv)
    assert c["open_job"]["dead_letters"] == 1 and c["open_job"]["last_error"] == d[0]["error"]

    # Retrying once the cause is fixed: the task now exists, the hint lands.
    expect_json(srv.post("/v1/tasks", json={"task_id": missing, "title": "Late"}), 201)
    dl = dead("set_hint")[0]
    assert srv.post(f"/v1/consumers/set_hint/dead-letters/{dl['id']}/retry").status_code == 202
    wait_until(lambda: expect_json(srv.get(f"/v1/tasks/{missing}"), 200).get("hint") == "x", 10,
               msg="the retried hint")
    wait_until(lambda: dead("set_hint") == [], 10, msg="the dead letter gone")


def test_one_effect_per_source_event_across_sigkill_and_restart(server_factory):
    srv = server_factory(args=["--app", APP], name="reactions-kill")
    keys = [create_task(srv, f"Task {i}") for i in range(40)]
    # Kill while the reaction is (likely) half way: whatever it had done,
    # the restart must neither lose nor repeat a job.
    wait_until(lambda: len(jobs_opened(srv)) >= 5, 10, msg="some jobs")
    srv.kill()
    srv.start()
    keys += [create_task(srv, f"Task {i}") for i in range(40, 60)]
    by = wait_until(lambda: (lambda b: len(b) == 60 and b)(jobs_by_task(srv)), 30, msg="60 jobs")
    assert sorted(by) == sorted(keys)
    assert all(len(v) == 1 for v in by.values()), {k: len(v) for k, v in by.items() if len(v) != 1}
    # A rewind redelivers everything: still one job each (the ids are derived).
    expect_json(srv.post("/v1/consumers/open_job/reset", json={"position": 0}), 200)
    wait_until(lambda: consumers(srv)["open_job"]["lag"] == 0 and consumers(srv)["open_job"]["delivered"] >= 60, 30,
               msg="the replay")
    by = jobs_by_task(srv)
    assert len(by) == 60 and all(len(v) == 1 for v in by.values())
    listed = expect_json(srv.get("/v1/jobs", params={"limit": 1000}), 200)
    assert len(listed) == 60


def test_reaction_on_another_instances_feed_survives_it_being_down(server_factory):
    secret = "feed-" + uuid.uuid4().hex
    auth = {"Authorization": f"Bearer {secret}"}
    up = server_factory(args=["--app", APP], env={"API_SECRET": secret}, name="upstream")
    pin_port(up)
    down = server_factory(args=["--app", FEED_APP], name="downstream",
                          env={"UPSTREAM_URL": up.url, "UPSTREAM_SECRET": secret})
    first = [create_task(up, f"Up {i}", headers=auth) for i in range(5)]
    by = wait_until(lambda: (lambda b: len(b) == 5 and b)(jobs_by_task(down)), 15, msg="5 jobs downstream")
    assert sorted(by) == sorted(first)
    src = {e["id"]: e for e in up.read_feed(types=["TaskCreated"], headers=auth)}
    for e in jobs_opened(down):
        assert e["metadata"]["causation_id"] in src
        assert e["metadata"]["reaction"] == "job_per_task"
    c = consumers(down)["job_per_task"]
    assert c["feed"] == "upstream" and c["head"] is None and c["lag"] is None
    # its position is the upstream's: at least past every task, at most its head
    head = up.head_position(headers=auth)
    c = wait_until(lambda: (lambda c: c["position"] >= max(e["position"] for e in src.values()) and c)(
        consumers(down)["job_per_task"]), 10, msg="the checkpoint")
    assert c["position"] <= head

    # Upstream down: the downstream records the error and keeps trying.
    assert up.stop() == 0
    c = wait_until(lambda: (lambda c: c["last_error"] and "GET" in c["last_error"] and c)(
        consumers(down)["job_per_task"]), 15, msg="the feed error")
    assert up.url.split("//")[1] in c["last_error"]
    assert down.alive()

    # Back up with more tasks: it catches up, nothing twice.
    up.start()
    more = [create_task(up, f"Up {i}", headers=auth) for i in range(5, 12)]
    by = wait_until(lambda: (lambda b: len(b) == 12 and b)(jobs_by_task(down)), 30, msg="12 jobs downstream")
    assert sorted(by) == sorted(first + more)
    assert all(len(v) == 1 for v in by.values())

    # The downstream restarts from its stored checkpoint: no duplicates.
    down.restart()
    last = create_task(up, "After the restart", headers=auth)
    by = wait_until(lambda: (lambda b: last in b and b)(jobs_by_task(down)), 15, msg="the job after the restart")
    assert len(by) == 13 and all(len(v) == 1 for v in by.values())


def test_a_feed_reaction_without_its_url_does_not_run_and_says_why(server_factory):
    srv = server_factory(args=["--app", FEED_APP], name="feed-unset")
    c = wait_until(lambda: consumers(srv)["job_per_task"]["last_error"], 10, msg="the reason")
    assert "UPSTREAM_URL" in c
