#!/usr/bin/env python3
"""
processor.py - the kanban example's stand-in for the AI call.

Reads the worker's open agent jobs (GET /v1/agent_jobs?status=open) and
posts one result per job (POST /v1/agent_results, result_id = the job's
id, so posting twice is a 409 that the processor skips). The worker's
reactions then complete the job and draft the hint (HintDrafted), which
the api instance picks up from the worker's feed and sets on the task.

    python3 processor.py [--worker URL] [--once] [--interval SECONDS]

--worker defaults to $WORKER_URL or http://localhost:8082; $WORKER_SECRET
(when set) is sent as the bearer token. Without --once it keeps polling.
Standard library only.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request


def request(base, method, path, body=None, secret=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if secret:
        req.add_header("Authorization", "Bearer " + secret)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def draft_hint(job):
    """The 'AI': a deterministic hint from the job's title (and description)."""
    hint = f"Start with the smallest part of \"{job['title']}\" you can finish today"
    if job.get("description"):
        hint += f", keeping in mind: {job['description']}"
    return hint + "."


def run_once(base, secret):
    """Posts a result for every open job; returns how many it posted."""
    status, jobs = request(base, "GET", "/v1/agent_jobs?status=open&limit=1000", secret=secret)
    if status != 200:
        raise RuntimeError(f"GET /v1/agent_jobs answered {status}: {jobs}")
    posted = 0
    for job in jobs:
        body = {"result_id": job["job_id"], "job_id": job["job_id"], "task_id": job["task_id"],
                "hint": draft_hint(job)}
        status, answer = request(base, "POST", "/v1/agent_results", body, secret)
        if status == 201:
            posted += 1
            print(f"job {job['job_id']}: hint posted for task {job['task_id']}", flush=True)
        elif status != 409:  # 409: a result for this job exists already
            raise RuntimeError(f"POST /v1/agent_results answered {status}: {answer}")
    return posted


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--worker", default=os.environ.get("WORKER_URL", "http://localhost:8082"))
    p.add_argument("--once", action="store_true", help="process the open jobs once and exit")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    args = p.parse_args()
    secret = os.environ.get("WORKER_SECRET") or None
    if args.once:
        n = run_once(args.worker, secret)
        print(f"{n} result(s) posted", flush=True)
        return 0
    while True:
        try:
            run_once(args.worker, secret)
        except (OSError, RuntimeError) as e:
            print(f"processor: {e}", file=sys.stderr, flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
