#!/usr/bin/env python3
"""
consumer_latency.py - end-to-end latency from a 2xx append to delivery, at a
fixed rate: to a local webhook receiver (the worker role's webhook consumer,
signed, checkpointed) and to a live-feed (SSE) subscriber.

Usage: bench/consumer_latency.py [--bin ./build/chronicle] [--rate 1000] [--seconds 10]

Starts, in a temporary directory: chronicle (`serve --role all`, SQLite with
the durable default synchronous=FULL, --log-level warn) with an app
definition whose one webhook posts every event to a receiver process
(http.server, HTTP/1.1 keep-alive, answers 204); an SSE subscriber process
on GET /v1/events; and a load process that appends one event per request
(POST /v1/streams/{stream}, a client-chosen UUID id) open-loop at --rate
requests/s from 4 threads. Each process notes time.time_ns() when it sees an
event: the loader when the 2xx answer is read, the receiver when a POST
body is read, the subscriber when a `data:` line is parsed. The latency of
an event is receipt minus acknowledgement (all processes on one machine,
one clock). Prints p50/p99/max per path. Stops everything it started by
PID and deletes the directory.
"""
import argparse
import http.client
import http.server
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid


def receiver_main(port_q, out_path, stop_ev):
    seen = []

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            t = time.time_ns()
            seen.append((self.headers.get("X-Chronicle-Event-Id"), t))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    port_q.put(srv.server_address[1])
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    stop_ev.wait()
    with open(out_path, "w") as f:
        json.dump(seen, f)


def sse_main(port, ready_ev, out_path, stop_ev):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    s.settimeout(0.2)
    seen = []
    buf = b""
    ready_ev.set()
    while not stop_ev.is_set():
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        t = time.time_ns()
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.startswith(b"data: "):
                try:
                    seen.append((json.loads(line[6:])["id"], t))
                except (ValueError, KeyError):
                    pass
    with open(out_path, "w") as f:
        json.dump(seen, f)


def load_main(port, rate, seconds, threads, out_path):
    acks = []
    lock = threading.Lock()
    start = time.monotonic() + 0.2

    def run(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        interval = threads / rate
        i = 0
        mine = []
        while True:
            due = start + (i * threads + k) / rate
            if due - start >= seconds:
                break
            d = due - time.monotonic()
            if d > 0:
                time.sleep(d)
            eid = str(uuid.uuid4())
            body = json.dumps({"events": [{"id": eid, "type": "BenchEvent",
                                           "data": {"n": i, "text": "x" * 150}}]})
            conn.request("POST", f"/v1/streams/bench-{k}-{i % 64}", body,
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            t = time.time_ns()
            if 200 <= r.status < 300:
                mine.append((eid, t))
            i += 1
        del interval
        with lock:
            acks.extend(mine)

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    with open(out_path, "w") as f:
        json.dump(acks, f)


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("CHRONICLE_BIN", "./build/chronicle"))
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="chronicle-bench-consumers.")
    procs = []
    chron = None
    stop_ev = mp.Event()
    try:
        port_q = mp.Queue()
        rp = mp.Process(target=receiver_main, args=(port_q, f"{tmp}/recv.json", stop_ev))
        rp.start()
        procs.append(rp)
        hook_port = port_q.get(timeout=10)
        app = {"app": "bench-consumers", "entities": {"notes": {"fields": {"t": {"type": "string"}}}},
               "webhooks": [{"name": "bench", "url_env": "BENCH_HOOK_URL", "secret_env": "BENCH_HOOK_SECRET",
                             "timeout_ms": 5000}]}
        with open(f"{tmp}/app.json", "w") as f:
            json.dump(app, f)
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "APP", "PORT", "API_SECRET", "ROLE", "LOG_LEVEL")}
        env.update(BENCH_HOOK_URL=f"http://127.0.0.1:{hook_port}/hook", BENCH_HOOK_SECRET="bench-secret")
        log = open(f"{tmp}/chronicle.log", "wb")
        chron = subprocess.Popen([a.bin, "serve", "--listen", "127.0.0.1:0", "--database", f"sqlite:{tmp}/bench.db",
                                  "--app", f"{tmp}/app.json", "--log-level", "warn", "--role", "all"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port = None
        for raw in chron.stderr:
            log.write(raw)
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if obj.get("msg") == "listening":
                port = obj["port"]
                break
        if port is None:
            sys.exit("chronicle did not start; see its log")
        threading.Thread(target=lambda: [log.write(x) for x in chron.stderr], daemon=True).start()
        ready = mp.Event()
        sp = mp.Process(target=sse_main, args=(port, ready, f"{tmp}/sse.json", stop_ev))
        sp.start()
        procs.append(sp)
        ready.wait(10)
        time.sleep(0.3)  # let the subscriber's request reach the server before the load starts
        lp = mp.Process(target=load_main, args=(port, a.rate, a.seconds, a.threads, f"{tmp}/acks.json"))
        t0 = time.monotonic()
        lp.start()
        lp.join()
        elapsed = time.monotonic() - t0
        with open(f"{tmp}/acks.json") as f:
            acks = dict(json.load(f))
        # wait (bounded) for the consumer and the subscriber to see the last event
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/v1/consumers")
            st = json.loads(c.getresponse().read())["consumers"][0]
            c.close()
            if st["lag"] == 0 and st["delivered"] >= len(acks):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        stop_ev.set()
        for p in procs:
            p.join(10)
        with open(f"{tmp}/recv.json") as f:
            recv = {}
            for eid, t in json.load(f):
                recv.setdefault(eid, t)  # the first delivery counts
        with open(f"{tmp}/sse.json") as f:
            sse = dict(json.load(f))
        print(f"appends: {len(acks)} acknowledged in {elapsed:.1f} s "
              f"({len(acks) / a.seconds:.0f}/s offered {a.rate}/s)")
        for name, seen in (("sse", sse), ("webhook", recv)):
            lat = [(seen[e] - t) / 1e6 for e, t in acks.items() if e in seen]
            missing = sum(1 for e in acks if e not in seen)
            if os.environ.get("BENCH_VERBOSE"):
                t_first = min(acks.values())
                worst = sorted(((seen[e] - t) / 1e6, (t - t_first) / 1e9) for e, t in acks.items() if e in seen)[-40:]
                print(name, "worst (latency ms, at s):", " ".join(f"{l:.0f}@{w:.2f}" for l, w in worst))
            print(f"{name:8s} delivered {len(lat)} missing {missing}  "
                  f"p50 {pct(lat, 50):.2f} ms  p99 {pct(lat, 99):.2f} ms  max {max(lat) if lat else float('nan'):.2f} ms")
        log.flush()
        with open(f"{tmp}/chronicle.log", "rb") as f:
            failed = [json.loads(x) for x in f if b'"delivery failed"' in x]
        print(f"failed webhook attempts (retried): {len(failed)}"
              + (f"; first: {failed[0].get('error')}" if failed else ""))
    finally:
        stop_ev.set()
        if chron and chron.poll() is None:
            chron.send_signal(signal.SIGTERM)
            try:
                chron.wait(30)
            except subprocess.TimeoutExpired:
                chron.kill()
                chron.wait()
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
