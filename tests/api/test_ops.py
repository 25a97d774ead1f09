"""
test_ops.py - operational routes and cross-cutting behaviour: /health, /ready,
/internal/health/{component}, /metrics (names, types, counters moving),
X-Request-Id, unknown paths and wrong methods, JSON log lines.
Contract: docs/http-api.md.
"""

import pytest

from conftest import (SSE, UUIDV7_RE, build_request, check_request_id, ev, expect_json, expect_problem,
                      expect_raw_problem, mime, new_stream, raw_request, wait_until)


def test_health(server):
    r = server.get("/health")
    assert expect_json(r, 200) == {"status": "ok"}


def test_ready(server):
    assert expect_json(server.get("/ready"), 200) == {"status": "ready"}


def test_internal_health_store_reports_head(server):
    assert server.internal_health("store") == {"component": "store", "status": "ok", "head_position": 0}
    r = server.append(new_stream(), [ev("A"), ev("B")])
    last = expect_json(r, 201)["positions"][-1]
    body = server.internal_health("store")
    assert body == {"component": "store", "status": "ok", "head_position": last}
    assert server.head_position() == last


def test_internal_health_http(server):
    body = server.internal_health("http")
    assert set(body) == {"component", "status", "in_flight", "subscribers"}, body
    assert (body["component"], body["status"]) == ("http", "ok")
    assert isinstance(body["in_flight"], int) and 0 <= body["in_flight"] <= 2, body
    assert body["subscribers"] == 0
    with SSE(server.url + "/v1/events"):
        wait_until(lambda: server.internal_health("http")["subscribers"] == 1, 10, msg="subscribers == 1")
    wait_until(lambda: server.internal_health("http")["subscribers"] == 0, 10, msg="subscribers == 0")


def test_internal_health_unknown_component(server):
    expect_problem(server.get("/internal/health/warp-drive"), 404, "not-found",
                   instance="/internal/health/warp-drive")


@pytest.mark.parametrize("path", ["/", "/nope", "/v1", "/v1/streams", "/v1/streams/a/b", "/v1/eventsx",
                                  "/healthz", "/internal/health", "/v2/events"])
def test_unknown_path_is_404(server, path):
    expect_problem(server.get(path), 404, "not-found", instance=path)


@pytest.mark.parametrize("method,path,allowed", [
    ("POST", "/health", "GET"), ("DELETE", "/ready", "GET"), ("POST", "/metrics", "GET"),
    ("PUT", "/internal/health/store", "GET"),
])
def test_wrong_method_is_405_with_allow(server, method, path, allowed):
    r = server.request(method, path, data=b"{}", headers={"Content-Type": "application/json"})
    expect_problem(r, 405, "method-not-allowed", instance=path)
    allow = {m.strip().upper() for m in r.headers.get("Allow", "").split(",")}
    assert allowed in allow and method not in allow, r.headers.get("Allow")


# --------------------------------------------------------------------------
# X-Request-Id


@pytest.mark.parametrize("rid", ["abc-123", "Req.42_~!*()", "x" * 128, "0"])
def test_request_id_is_echoed(server, rid):
    r = server.get("/health", headers={"X-Request-Id": rid})
    assert r.status_code == 200
    assert r.headers["X-Request-Id"] == rid
    p = server.get("/nope", headers={"X-Request-Id": rid})
    assert expect_problem(p, 404, "not-found")["request_id"] == rid
    assert p.headers["X-Request-Id"] == rid


@pytest.mark.parametrize("value", [b"x" * 129, b"", b"caf\xe9", b"\xe2\x98\x95"],
                         ids=["129-chars", "empty", "latin1", "utf8"])
def test_unacceptable_request_id_is_replaced(server, value):
    req = build_request("GET", "/nope", headers=[("X-Request-Id", value)])
    r = raw_request(server.port, req)
    body = expect_raw_problem(r, 404, "not-found")
    rid = r.headers["X-Request-Id"]
    assert UUIDV7_RE.match(rid), rid
    assert body["request_id"] == rid


def test_generated_request_ids_are_unique_uuidv7(server):
    ids = [check_request_id(server.get("/health").headers) for _ in range(20)]
    assert all(UUIDV7_RE.match(i) for i in ids), ids
    assert len(set(ids)) == 20


# --------------------------------------------------------------------------
# metrics

REQUIRED = ["chronicle_http_requests_total", "chronicle_http_request_duration_seconds_bucket",
            "chronicle_http_request_duration_seconds_sum", "chronicle_http_request_duration_seconds_count",
            "chronicle_http_requests_in_flight", "chronicle_events_appended_total",
            "chronicle_store_commits_total", "chronicle_store_commit_batch_size_bucket",
            "chronicle_feed_subscribers", "chronicle_store_errors_total"]
TYPES = {"chronicle_http_requests_total": "counter",
         "chronicle_http_request_duration_seconds": "histogram",
         "chronicle_http_requests_in_flight": "gauge",
         "chronicle_events_appended_total": "counter",
         "chronicle_store_commits_total": "counter",
         "chronicle_feed_subscribers": "gauge",
         "chronicle_store_errors_total": "counter"}
STREAM_ROUTE = "/v1/streams/{stream}"


def test_metrics_format_and_names(server):
    expect_json(server.get("/health"), 200)
    r = server.get("/metrics")
    assert r.status_code == 200
    check_request_id(r.headers)
    assert mime(r.headers) == "text/plain"
    assert "version=0.0.4" in r.headers["Content-Type"].replace(" ", ""), r.headers["Content-Type"]
    m = server.metrics()
    missing = [n for n in REQUIRED if n not in m.names()]
    assert not missing, f"missing metrics {missing}\n{m.text}"
    for name, kind in TYPES.items():
        assert m.types.get(name) == kind, f"# TYPE {name} should be {kind}, got {m.types.get(name)}"
    les = {l.get("le") for l, _ in m.select("chronicle_store_commit_batch_size_bucket")}
    assert les == {"1", "3", "7", "15", "31", "63", "127", "+Inf"}, les
    assert m.sum("chronicle_store_errors_total") == 0
    assert m.sum("chronicle_feed_subscribers") == 0
    assert m.sum("chronicle_http_requests_in_flight") >= 0
    health = m.select("chronicle_http_requests_total", method="GET", route="/health", status="200")
    assert len(health) == 1 and health[0][1] >= 1, health


def _buckets_cumulative(m, name):
    series = {}
    for labels, v in m.select(name):
        key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
        series.setdefault(key, []).append((le, v))
    for key, pts in series.items():
        pts.sort()
        vals = [v for _, v in pts]
        assert vals == sorted(vals), f"{name}{dict(key)} buckets not cumulative: {pts}"
        assert pts[-1][0] == float("inf"), f"{name}{dict(key)} lacks le=+Inf"
    return series


def test_metrics_counters_move(server):
    before = server.metrics()
    s = new_stream()
    for i in range(5):
        expect_json(server.append(s, [ev("A"), ev("B")]), 201)
    expect_problem(server.get("/nope-at-all"), 404, "not-found")
    for _ in range(3):
        expect_json(server.get("/health"), 200)

    def settled():
        # a server may count a request just after its response is sent: poll
        m = server.metrics()
        done = m.sum("chronicle_http_requests_total", method="GET", route="/health", status="200") - \
            before.sum("chronicle_http_requests_total", method="GET", route="/health", status="200")
        return m if done >= 3 else None
    after = wait_until(settled, 5, msg="the three /health requests counted")

    def delta(name, **labels):
        return after.sum(name, **labels) - before.sum(name, **labels)

    assert delta("chronicle_http_requests_total", method="POST", route=STREAM_ROUTE, status="201") == 5
    assert delta("chronicle_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert delta("chronicle_http_requests_total", method="GET", route="/health", status="200") == 3
    assert delta("chronicle_http_requests_total", method="GET", route="/metrics", status="200") >= 1
    assert delta("chronicle_events_appended_total") == 10
    commits = delta("chronicle_store_commits_total")
    assert 1 <= commits <= 5, commits
    assert delta("chronicle_store_commit_batch_size_bucket", le="+Inf") == commits
    assert delta("chronicle_store_commit_batch_size_bucket", le="1") == commits  # sequential: 1 unit each
    assert delta("chronicle_http_request_duration_seconds_count") >= 10
    assert delta("chronicle_http_request_duration_seconds_sum") > 0
    assert after.sum("chronicle_store_errors_total") == 0

    _buckets_cumulative(after, "chronicle_store_commit_batch_size_bucket")
    series = _buckets_cumulative(after, "chronicle_http_request_duration_seconds_bucket")
    routes = {dict(k).get("route") for k in series}
    assert STREAM_ROUTE in routes and "/health" in routes, routes
    inf_total = sum(pts[-1][1] for pts in series.values())
    assert inf_total == after.sum("chronicle_http_request_duration_seconds_count"), \
        "le=+Inf buckets must add up to _count"


# --------------------------------------------------------------------------
# logs


def test_logs_are_json_lines(server):
    expect_json(server.get("/health"), 200)
    records = server.log_records()
    assert records, "no log lines"
    bad = [line for line, rec in zip(server.stderr_lines, records) if not isinstance(rec, dict)]
    assert not bad, f"non-JSON log lines: {bad[:5]}"
    for rec in records:
        assert {"ts", "level", "msg"} <= set(rec), rec
        assert rec["level"] in ("debug", "info", "warn", "error"), rec
    listening = [r for r in records if r["msg"] == "listening"]
    assert len(listening) == 1 and listening[0]["port"] == server.port
