"""
Acceptance test of examples/kanban: two chronicle instances (api and
worker), each with its own database, connected only by reactions to each
other's event feeds, and the processor that stands in for the AI call.

  - tasks created on the api get their hint once the processor ran; one
    agent job and one hint per task;
  - the worker stopped, tasks created meanwhile: started again, it
    catches up;
  - the api stopped: the worker records the feed error and retries; the
    api back, it resumes;
  - the README's commands work as written.

Nothing sleeps as synchronisation: every wait polls with a deadline. Runs on
SQLite and PostgreSQL (the harness's Server picks the backend).
"""

import json
import os
import re
import subprocess
import sys
import uuid

import pytest

from conftest import (SOURCE_DIR, app_server, example_path, expect_json, readme_blocks, same_shape,
                      wait_until)

API_APP = example_path("kanban", "app-api.json")
WORKER_APP = example_path("kanban", "app-worker.json")
PROCESSOR = example_path("kanban", "processor.py")
README = example_path("kanban", "README.md")


def pin_port(srv):
    """Its next starts listen on the port it has now (a later --listen
    wins), so the other instance's feed URL stays valid across restarts."""
    srv.extra_args = [*srv.extra_args, "--listen", f"127.0.0.1:{srv.port}"]


@pytest.fixture
def pair(request):
    """The api and the worker, each pointed at the other's feed."""
    name = request.node.name[:20]
    api = app_server(API_APP, "kanban-api-" + name)
    api.start()
    pin_port(api)
    worker = app_server(WORKER_APP, "kanban-worker-" + name, env={"API_FEED_URL": api.url})
    worker.start()
    pin_port(worker)
    api.env["WORKER_FEED_URL"] = worker.url
    api.restart()
    yield api, worker
    worker.close()
    api.close()


def board(api):
    expect_json(api.post("/v1/boards", json={"board_id": "b1", "name": "Board"}), 201)
    for i, col in enumerate(["todo", "doing", "done"]):
        expect_json(api.post("/v1/columns", json={"column_id": col, "board_id": "b1", "name": col,
                                                 "position": i}), 201)


def create_task(api, title):
    key = "task-" + uuid.uuid4().hex[:10]
    body = {"task_id": key, "board_id": "b1", "column_id": "todo", "title": title}
    expect_json(api.post("/v1/tasks", json=body), 201)
    return key


def open_jobs(worker):
    return {j["job_id"]: j for j in expect_json(worker.get("/v1/agent_jobs", params={"status": "open",
                                                                                    "limit": 1000}), 200)}


def run_processor(worker):
    p = subprocess.run([sys.executable, PROCESSOR, "--once", "--worker", worker.url],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def hints(api, keys):
    return {k: expect_json(api.get(f"/v1/tasks/{k}"), 200)["hint"] for k in keys}


def want_hint(title):
    return f"Start with the smallest part of \"{title}\" you can finish today."


# Deadlines, not sleeps: a feed that failed while the other instance was
# down backs off for up to 10 s before it reads again, and on a loaded CI
# machine each hop of the chain (api feed -> worker -> worker's own
# reactions -> api feed) can take seconds.
CHAIN_S = 60


def process_until_hinted(api, worker, titles):
    """Waits for the jobs of titles (key -> title), runs the processor and
    waits for every hint."""
    wait_until(lambda: set(titles) <= set(open_jobs(worker)), CHAIN_S, msg="the agent jobs")
    out = run_processor(worker)
    assert f"{len(titles)} result(s) posted" in out, out
    want = {k: want_hint(t) for k, t in titles.items()}
    wait_until(lambda: hints(api, titles) == want, CHAIN_S, msg="the hints")


def one_of_each(api, worker, keys):
    """Exactly one job, result, draft and hint event per task."""
    def count(srv, type_, field):
        n = {}
        for e in srv.read_feed(types=[type_]):
            k = e["data"].get(field) or e["stream"].split("-", 1)[1]
            n[k] = n.get(k, 0) + 1
        return n
    for srv, type_, field in [(worker, "AgentJobOpened", "task_id"), (worker, "AgentResultPosted", "task_id"),
                              (worker, "HintDrafted", "task_id"), (api, "TaskHintSet", "task_id")]:
        n = count(srv, type_, field)
        assert n == {k: 1 for k in keys}, (type_, n)


def test_hints_appear_on_tasks_after_the_processor_runs(pair):
    api, worker = pair
    board(api)
    titles = {}
    for t in ["Write the docs", "Fix the build", "Plan the release"]:
        titles[create_task(api, t)] = t
    process_until_hinted(api, worker, titles)
    assert open_jobs(worker) == {}
    one_of_each(api, worker, titles)

    # The chain's metadata: TaskHintSet <- HintDrafted <- AgentResultPosted.
    key = next(iter(titles))
    hint_ev = [e for e in api.read_feed(types=["TaskHintSet"]) if e["stream"] == f"tasks-{key}"][0]
    drafted = {e["id"]: e for e in worker.read_feed(types=["HintDrafted"])}
    results = {e["id"]: e for e in worker.read_feed(types=["AgentResultPosted"])}
    d = drafted[hint_ev["metadata"]["causation_id"]]
    assert d["data"]["task_id"] == key and d["metadata"]["reaction"] == "draft_hint"
    r = results[d["metadata"]["causation_id"]]
    assert hint_ev["metadata"]["correlation_id"] == d["metadata"]["correlation_id"] == r["id"]
    assert hint_ev["metadata"]["reaction"] == "apply_hint"
    job = [e for e in worker.read_feed(types=["AgentJobOpened"]) if e["data"]["task_id"] == key][0]
    task_ev = [e for e in api.read_feed(types=["TaskCreated"]) if e["stream"] == f"tasks-{key}"][0]
    assert job["metadata"] == {"causation_id": task_ev["id"], "correlation_id": task_ev["id"],
                               "reaction": "open_job"}

    # Moving a task is the api's own business.
    moved = expect_json(api.post(f"/v1/tasks/{key}/move", json={"column_id": "doing"}), 200)
    assert moved["column_id"] == "doing" and moved["hint"] == want_hint(titles[key])


def test_worker_stopped_then_started_catches_up(pair):
    api, worker = pair
    board(api)
    first = {create_task(api, "First"): "First"}
    process_until_hinted(api, worker, first)
    assert worker.stop() == 0
    later = {}
    for i in range(4):
        later[create_task(api, f"Later {i}")] = f"Later {i}"
    assert set(hints(api, later).values()) == {None}
    worker.start()
    process_until_hinted(api, worker, later)
    one_of_each(api, worker, {**first, **later})


def test_api_stopped_the_worker_retries_its_feed_and_resumes(pair):
    api, worker = pair
    board(api)
    first = {create_task(api, "Before"): "Before"}
    wait_until(lambda: set(first) <= set(open_jobs(worker)), CHAIN_S, msg="the first job")
    assert api.stop() == 0

    def feed_error():
        c = {c["name"]: c for c in expect_json(worker.get("/v1/consumers"), 200)["consumers"]}["open_job"]
        return c["last_error"] and "GET" in c["last_error"] and c["last_error_at"] and c

    err = wait_until(feed_error, CHAIN_S, msg="the worker's feed error")
    assert api.url.split("//")[1] in err["last_error"]
    # The worker keeps serving meanwhile, and its results queue up for the api.
    out = run_processor(worker)
    assert "1 result(s) posted" in out, out
    assert worker.alive()

    api.start()
    after = {create_task(api, "After"): "After"}
    wait_until(lambda: hints(api, first) == {k: want_hint(t) for k, t in first.items()}, CHAIN_S,
               msg="the hint drafted while the api was down")
    process_until_hinted(api, worker, after)
    one_of_each(api, worker, {**first, **after})


def test_readme_commands_work_as_written(pair):
    api, worker = pair
    ports = {"8081": api.port, "8082": worker.port}
    blocks = readme_blocks(README)
    assert len(blocks) >= 8
    for script, documented in blocks:
        script = re.sub(r"localhost:(808[12])", lambda m: f"127.0.0.1:{ports[m.group(1)]}", script)
        p = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True, cwd=SOURCE_DIR,
                           timeout=60)
        assert p.returncode == 0, f"{script!r} failed: {p.stderr}"
        if documented is None:
            continue
        got = json.loads(p.stdout)
        doc = json.loads(documented)
        assert same_shape(doc, got), f"{script}\ndocumented: {documented}\ngot: {p.stdout}"
        if isinstance(doc, dict) and "hint" in doc:
            assert got["hint"] == doc["hint"]
