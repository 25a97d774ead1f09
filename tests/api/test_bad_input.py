"""
test_bad_input.py - bad input never produces a 5xx, a crash or a partial
write. A table of cases (method, path, headers, raw body -> acceptable status
and problem type) is sent over raw sockets, so requests' own checks and URL
normalisation cannot hide anything; then malformed framing (Content-Length
larger than the body, truncated chunks, oversized headers) is tried, and the
last test checks that the feed holds exactly the events that were
acknowledged (201) during the module. Contract: docs/http-api.md.

The module's server runs with small limits so the cases stay fast:
--max-body-bytes 262144 --max-event-bytes 65536 --connection-timeout 2.
"""

import json
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import pytest

from conftest import (build_request, check_request_id, expect_json, expect_raw_problem, mime, raw_request,
                      running_server, stream_path)

MAX_BODY = 262144
MAX_EVENT = 65536
CONN_TIMEOUT = 2


@pytest.fixture(scope="module")
def bad():
    with running_server(args=["--max-body-bytes", str(MAX_BODY), "--max-event-bytes", str(MAX_EVENT),
                              "--connection-timeout", str(CONN_TIMEOUT)], name="badinput") as srv:
        srv.ledger = {}  # event id -> stream, for every event acknowledged with 201
        yield srv


def J(obj):
    return json.dumps(obj).encode()


def one(**kw):
    e = {"type": "Bad"}
    e.update(kw)
    return J({"events": [e]})


VALID = J({"events": [{"type": "Valid", "data": {"k": "v"}}]})
MALFORMED = ((400, "malformed-json"),)
VALIDATION = ((422, "validation"),)
MALFORMED_OR_VALIDATION = MALFORMED + VALIDATION
TOO_LARGE = ((413, "payload-too-large"),)
MEDIA = ((415, "unsupported-media-type"),)
BAD_REQUEST = ((400, "bad-request"),)
CREATED = ((201, None),)


@dataclass
class Case:
    name: str
    body: bytes = VALID
    expect: tuple = VALIDATION          # acceptable (status, problem slug) pairs
    method: str = "POST"
    path: object = None                 # None: a fresh valid stream; str/bytes: sent verbatim
    headers: tuple = (("Content-Type", "application/json"),)
    fields: tuple = ()                  # for 422: one of these must be an errors[].field
    mention: str = None                 # must appear in detail or errors
    chunked: bool = False


def path_cases():
    out = []
    bad_segments = {
        "nul": "%00", "nul-inside": "a%00b", "dotdot": "..", "dot": ".", "dotdot-encoded": "%2E%2E",
        "dot-encoded": "%2e", "dotdot-mixed": ".%2E", "invalid-utf8-ff": "%FF", "invalid-utf8-seq": "a%C3%28",
        "overlong-utf8": "%C0%AF", "surrogate-utf8": "%ED%A0%80", "bad-escape": "%ZZ", "short-escape": "abc%2",
        "bare-percent": "abc%", "control-01": "a%01b", "control-1f": "a%1Fb", "del": "a%7Fb",
        "c1-nel": "a%C2%85b", "256-bytes": "n" * 256, "10000-bytes": "n" * 10000,
        "256-bytes-encoded": "%C3%A9" * 128,
    }
    for name, seg in bad_segments.items():
        for method in ("GET", "POST"):
            out.append(Case(f"path-{name}-{method}", method=method, path="/v1/streams/" + seg,
                            body=VALID if method == "POST" else b"", expect=BAD_REQUEST))
    for name, raw in {"raw-ff": b"/v1/streams/\xff\xfe", "raw-truncated-utf8": b"/v1/streams/caf\xc3",
                      "raw-latin1": b"/v1/streams/caf\xe9"}.items():
        for method in ("GET", "POST"):
            out.append(Case(f"path-{name}-{method}", method=method, path=raw,
                            body=VALID if method == "POST" else b"", expect=BAD_REQUEST))
    return out


CASES = [
    # ---- not JSON at all, or not UTF-8
    Case("empty-body", body=b"", expect=MALFORMED),
    Case("lone-brace", body=b"{", expect=MALFORMED),
    Case("truncated-document", body=VALID[:-7], expect=MALFORMED),
    Case("truncated-in-string", body=b'{"events":[{"type":"Abc', expect=MALFORMED),
    Case("trailing-comma", body=b'{"events":[{"type":"A",}]}', expect=MALFORMED),
    Case("single-quotes", body=b"{'events':[{'type':'A'}]}", expect=MALFORMED),
    Case("trailing-garbage", body=VALID + b" x", expect=MALFORMED),
    Case("two-documents", body=VALID + VALID, expect=MALFORMED),
    Case("nan", body=b'{"events":[{"type":"A","data":NaN}]}', expect=MALFORMED),
    Case("infinity", body=b'{"events":[{"type":"A","data":-Infinity}]}', expect=MALFORMED),
    Case("comment", body=b'{"events":[{"type":"A"}] /* c */}', expect=MALFORMED),
    Case("bare-word", body=b"events", expect=MALFORMED),
    Case("invalid-utf8-ff", body=b'{"events":[{"type":"A\xff"}]}', expect=MALFORMED),
    Case("invalid-utf8-in-data", body=b'{"events":[{"type":"A","data":{"s":"\xfe\xff"}}]}', expect=MALFORMED),
    Case("invalid-utf8-truncated", body=b'{"events":[{"type":"A\xc3"}]}', expect=MALFORMED),
    Case("overlong-utf8", body=b'{"events":[{"type":"\xc0\xaf"}]}', expect=MALFORMED),
    Case("surrogate-utf8-bytes", body=b'{"events":[{"type":"A","data":"\xed\xa0\x80"}]}', expect=MALFORMED),
    Case("lone-surrogate-escape", body=b'{"events":[{"type":"A","data":{"s":"\\udc00"}}]}', expect=MALFORMED),
    Case("utf16-body", body='{"events":[{"type":"A"}]}'.encode("utf-16"), expect=MALFORMED),
    Case("bom", body=b"\xef\xbb\xbf" + VALID, expect=CREATED + MALFORMED),
    Case("deep-nesting", body=b'{"events":[{"type":"A","data":' + b"[" * 20000 + b"]" * 20000 + b"}]}",
         expect=MALFORMED + VALIDATION + CREATED),
    # ---- JSON of the wrong shape
    Case("top-level-array", body=b"[]"),
    Case("top-level-array-of-events", body=b'[{"type":"A"}]'),
    Case("top-level-string", body=b'"events"', expect=MALFORMED_OR_VALIDATION),
    Case("top-level-null", body=b"null", expect=MALFORMED_OR_VALIDATION),
    Case("top-level-number", body=b"42", expect=MALFORMED_OR_VALIDATION),
    Case("no-events", body=J({}), fields=("events",)),
    Case("events-null", body=J({"events": None}), fields=("events",)),
    Case("events-object", body=J({"events": {"type": "A"}}), fields=("events",)),
    Case("events-string", body=J({"events": "A"}), fields=("events",)),
    Case("events-empty", body=J({"events": []}), fields=("events",)),
    Case("event-number", body=J({"events": [1]}), fields=("events[0]",)),
    Case("event-null", body=J({"events": [None]}), fields=("events[0]",)),
    Case("event-array", body=J({"events": [["A"]]}), fields=("events[0]",)),
    Case("event-empty-object", body=J({"events": [{}]}), fields=("events[0].type",)),
    Case("type-empty", body=one(type=""), fields=("events[0].type",)),
    Case("type-number", body=one(type=5), fields=("events[0].type",)),
    Case("type-null", body=one(type=None), fields=("events[0].type",)),
    Case("type-object", body=one(type={"a": 1}), fields=("events[0].type",)),
    Case("type-256-bytes", body=one(type="t" * 256), fields=("events[0].type",)),
    Case("type-control", body=one(type="a\u0001b"), fields=("events[0].type",)),
    Case("type-newline", body=one(type="a\nb"), fields=("events[0].type",)),
    Case("type-del", body=one(type="a\u007fb"), fields=("events[0].type",)),
    Case("type-c1", body=one(type="a\u0085b"), fields=("events[0].type",)),
    Case("type-nul-escape", body=one(type="a\u0000b"), expect=MALFORMED_OR_VALIDATION),
    Case("id-not-uuid", body=one(id="not-a-uuid"), fields=("events[0].id",)),
    Case("id-number", body=one(id=123), fields=("events[0].id",)),
    Case("id-no-dashes", body=one(id=uuid.uuid4().hex), fields=("events[0].id",)),
    Case("id-braces", body=one(id="{" + str(uuid.uuid4()) + "}"), fields=("events[0].id",)),
    Case("id-too-long", body=one(id=str(uuid.uuid4()) + "0"), fields=("events[0].id",)),
    Case("id-non-hex", body=one(id="zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"), fields=("events[0].id",)),
    Case("id-null", body=one(id=None), expect=CREATED + VALIDATION),
    Case("id-empty", body=one(id=""), expect=CREATED + VALIDATION),
    Case("metadata-array", body=one(metadata=[]), fields=("events[0].metadata",)),
    Case("metadata-string", body=one(metadata="m"), fields=("events[0].metadata",)),
    Case("metadata-number", body=one(metadata=1), fields=("events[0].metadata",)),
    Case("unknown-event-member", body=one(colour="red"), mention="colour"),
    Case("unknown-top-member", body=J({"events": [{"type": "A"}], "extra": 1}), mention="extra"),
    Case("misspelled-expected-version", body=J({"events": [{"type": "A"}], "expectedVersion": 0}),
         mention="expectedVersion"),
    Case("third-event-invalid", body=J({"events": [{"type": "A"}, {"type": "B"}, {"type": ""}]}),
         fields=("events[2].type",)),
    Case("event-500-of-501-invalid",
         body=J({"events": [{"type": "N", "data": {"i": i}} for i in range(500)] + [{"type": "X", "id": "nope"}]}),
         fields=("events[500].id",)),
    # ---- expected_version of the wrong type or out of range
    *[Case(f"expected-version-{n}", body=J({"expected_version": v, "events": [{"type": "A"}]}),
           fields=("expected_version",))
      for n, v in [("digit-string", "1"), ("true", True), ("false", False), ("float", 1.5), ("minus-1", -1),
                   ("minus-2", -2), ("minus-big", -9000), ("array", []), ("object", {}), ("upper-any", "ANY"),
                   ("empty-string", ""), ("none-word", "none"), ("padded", " any")]],
    Case("expected-version-exponent", body=b'{"expected_version":1e2,"events":[{"type":"A"}]}',
         fields=("expected_version",)),
    # ---- numbers that overflow
    Case("expected-version-int64-overflow", body=b'{"expected_version":9223372036854775808,"events":[{"type":"A"}]}',
         expect=MALFORMED_OR_VALIDATION),
    Case("expected-version-negative-overflow",
         body=b'{"expected_version":-9223372036854775809,"events":[{"type":"A"}]}', expect=MALFORMED_OR_VALIDATION),
    Case("expected-version-huge", body=b'{"expected_version":123456789012345678901234567890,"events":[{"type":"A"}]}',
         expect=MALFORMED_OR_VALIDATION),
    Case("expected-version-1e400", body=b'{"expected_version":1e400,"events":[{"type":"A"}]}',
         expect=MALFORMED_OR_VALIDATION),
    Case("data-int-overflow", body=b'{"events":[{"type":"A","data":{"n":123456789012345678901234567890}}]}',
         expect=CREATED + MALFORMED_OR_VALIDATION),
    Case("data-float-overflow", body=b'{"events":[{"type":"A","data":{"n":1e400}}]}',
         expect=CREATED + MALFORMED_OR_VALIDATION),
    Case("data-float-max", body=b'{"events":[{"type":"A","data":{"n":1.7976931348623157e308,"m":-5e-324}}]}',
         expect=CREATED),
    # ---- media types
    Case("no-content-type", headers=(), expect=MEDIA),
    Case("empty-content-type", headers=(("Content-Type", ""),), expect=MEDIA),
    Case("text-plain", headers=(("Content-Type", "text/plain"),), expect=MEDIA),
    Case("form-urlencoded", headers=(("Content-Type", "application/x-www-form-urlencoded"),), expect=MEDIA),
    Case("multipart", headers=(("Content-Type", "multipart/form-data; boundary=x"),), expect=MEDIA),
    Case("json-patch", headers=(("Content-Type", "application/json-patch+json"),), expect=MEDIA),
    Case("jsonx", headers=(("Content-Type", "application/jsonx"),), expect=MEDIA),
    Case("bare-json", headers=(("Content-Type", "json"),), expect=MEDIA),
    Case("charset-param", headers=(("Content-Type", "application/json; charset=utf-8"),), expect=CREATED),
    # ---- sizes
    Case("1000-events", body=J({"events": [{"type": "N", "data": {"i": i}} for i in range(1000)]}), expect=CREATED),
    Case("1001-events", body=J({"events": [{"type": "N"} for _ in range(1001)]}), expect=TOO_LARGE),
    Case("event-data-over-max-event", body=one(data={"s": "x" * (MAX_EVENT + 10)}), expect=TOO_LARGE),
    Case("event-metadata-over-max-event", body=one(metadata={"s": "x" * (MAX_EVENT + 10)}), expect=TOO_LARGE),
    Case("second-event-over-max-event", body=J({"events": [{"type": "A"}, {"type": "B", "data": "y" * (MAX_EVENT + 10)}]}),
         expect=TOO_LARGE),
    Case("body-over-max-body", body=J({"events": [{"type": "N", "data": "z" * 50000} for _ in range(6)]}),
         expect=TOO_LARGE),
    Case("chunked-body-over-max-body", body=J({"events": [{"type": "N", "data": "z" * 50000} for _ in range(6)]}),
         expect=TOO_LARGE, chunked=True),
    Case("chunked-valid", body=VALID, expect=CREATED, chunked=True),
    # ---- valid oddities
    Case("whitespace-everywhere", body=b' \n\t{ "events" :\r\n [ { "type" : "A" } ] } \n', expect=CREATED),
    Case("unicode-escapes", body=b'{"events":[{"type":"\\u00e9v\\u00e9nement","data":"\\ud834\\udd1e"}]}',
         expect=CREATED),
    Case("nesting-100", body=b'{"events":[{"type":"A","data":' + b"[" * 100 + b"]" * 100 + b"}]}", expect=CREATED),
    Case("expected-version-any", body=J({"expected_version": "any", "events": [{"type": "A"}]}), expect=CREATED),
    Case("expected-version-zero", body=J({"expected_version": 0, "events": [{"type": "A"}]}), expect=CREATED),
    # ---- query parameters that overflow or are not UTF-8
    Case("feed-after-overflow", method="GET", path="/v1/events?after=99999999999999999999", body=b"",
         expect=BAD_REQUEST, mention="after"),
    Case("feed-limit-overflow", method="GET", path="/v1/events?limit=18446744073709551617", body=b"",
         expect=BAD_REQUEST, mention="limit"),
    Case("feed-limit-nul", method="GET", path="/v1/events?limit=1%00", body=b"", expect=BAD_REQUEST, mention="limit"),
    Case("feed-types-invalid-utf8", method="GET", path="/v1/events?types=%FF", body=b"", expect=BAD_REQUEST,
         mention="types"),
    Case("feed-after-negative-overflow", method="GET", path="/v1/events?after=-9223372036854775809", body=b"",
         expect=BAD_REQUEST, mention="after"),
    *path_cases(),
]


def _send(srv, case, stream):
    path = case.path if case.path is not None else stream_path(stream)
    headers = list(case.headers)
    if case.chunked:
        headers.append(("Transfer-Encoding", "chunked"))
        body = b"".join(b"%x\r\n%s\r\n" % (len(case.body[i:i + 16384]), case.body[i:i + 16384])
                        for i in range(0, len(case.body), 16384)) + b"0\r\n\r\n"
        req = build_request(case.method, path, headers, body, content_length=None)
    else:
        req = build_request(case.method, path, headers, case.body)
    return raw_request(srv.port, req, timeout=15, send_in=65536)


def record(srv, body):
    for i in body["ids"]:
        assert i not in srv.ledger or srv.ledger[i] == body["stream"]
        srv.ledger[i] = body["stream"]


def assert_alive(srv):
    assert srv.alive(), f"chronicle died; stderr tail:\n{srv.stderr_tail()}"
    assert expect_json(srv.get("/health"), 200) == {"status": "ok"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_case(bad, case):
    stream = f"bad-{case.name}-{uuid.uuid4().hex[:8]}"
    head = bad.head_position()
    r = _send(bad, case, stream)
    assert r is not None, "connection closed without a response"
    if r.status_code == 201 and mime(r.headers) == "application/json":
        record(bad, r.json())  # first, so the final ledger check stays exact even when this case fails
    allowed = {s for s, _ in case.expect}
    assert r.status_code < 500, f"5xx for bad input: {r!r}"
    assert r.status_code in allowed, f"expected one of {case.expect}, got {r!r}"
    check_request_id(r.headers)
    if r.status_code == 201:
        assert mime(r.headers) == "application/json", r
        body = r.json()
        assert body["stream"] == stream and len(body["ids"]) == len(body["positions"]) >= 1, body
        assert bad.head_position() == body["positions"][-1]
    elif r.status_code == 200:
        assert mime(r.headers) == "application/json", r
    else:
        slug = dict(case.expect)[r.status_code]
        p = expect_raw_problem(r, r.status_code, slug)
        if r.status_code == 422 and case.fields:
            assert set(case.fields) & set(f.get("field") for f in p.get("errors", [])), p
        if case.mention:
            text = p["detail"] + json.dumps(p.get("errors", []))
            assert case.mention in text, p
        assert bad.head_position() == head, "a rejected request changed the log"
        if case.path is None:
            g = bad.get(stream_path(stream))
            assert g.status_code == 404, f"rejected request left data: {g.text[:300]}"
    assert_alive(bad)


# --------------------------------------------------------------------------
# broken framing


def _no_success(r):
    """A framing error may be answered 400/408/413 or just closed."""
    if r is None:
        return
    assert r.status_code in (400, 408, 413), r


def test_content_length_larger_than_body_then_half_close(bad):
    stream = f"bad-cl-{uuid.uuid4().hex[:8]}"
    head = bad.head_position()
    req = build_request("POST", stream_path(stream), [("Content-Type", "application/json")], VALID,
                        content_length=len(VALID) + 100)
    t0 = time.monotonic()
    r = raw_request(bad.port, req, half_close=True, timeout=10)
    _no_success(r)
    assert time.monotonic() - t0 < CONN_TIMEOUT + 5
    assert bad.head_position() == head
    assert bad.get(stream_path(stream)).status_code == 404
    assert_alive(bad)


def test_content_length_larger_than_body_times_out_without_blocking_others(bad):
    stream = f"bad-slow-{uuid.uuid4().hex[:8]}"
    head = bad.head_position()
    req = build_request("POST", stream_path(stream), [("Content-Type", "application/json")], VALID,
                        content_length=len(VALID) + 100)
    s = socket.create_connection(("127.0.0.1", bad.port), timeout=15)
    try:
        s.sendall(req)
        # while that request waits for its body, the server keeps serving others
        assert expect_json(bad.get("/health"), 200) == {"status": "ok"}
        t0 = time.monotonic()
        data = b""
        while True:  # the connection timeout (2 s) must end it
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert time.monotonic() - t0 < CONN_TIMEOUT + 8
    finally:
        s.close()
    if data:
        status = int(data.split(b" ", 2)[1])
        assert status in (400, 408), data[:300]
    assert bad.head_position() == head
    assert bad.get(stream_path(stream)).status_code == 404
    assert_alive(bad)


def test_declared_length_over_limit_is_refused_before_reading(bad):
    stream = f"bad-declared-{uuid.uuid4().hex[:8]}"
    req = build_request("POST", stream_path(stream), [("Content-Type", "application/json")], b"",
                        content_length=10_000_000)
    t0 = time.monotonic()
    r = raw_request(bad.port, req, timeout=CONN_TIMEOUT + 5)
    assert r is not None, "no answer: the server waited for a body it should have refused"
    expect_raw_problem(r, 413, "payload-too-large", instance=stream_path(stream))
    assert time.monotonic() - t0 < CONN_TIMEOUT, "413 must come from Content-Length, not a timeout"
    assert_alive(bad)


def test_truncated_chunked_body(bad):
    stream = f"bad-chunk-{uuid.uuid4().hex[:8]}"
    head = bad.head_position()
    req = build_request("POST", stream_path(stream),
                        [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")],
                        b"%x\r\n" % (len(VALID) + 50) + VALID, content_length=None)
    r = raw_request(bad.port, req, half_close=True, timeout=10)
    _no_success(r)
    assert bad.head_position() == head
    assert bad.get(stream_path(stream)).status_code == 404
    assert_alive(bad)


@pytest.mark.parametrize("req", [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /v1/streams/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nContent-Type: application/json\r\n\r\n",
    b"POST /v1/streams/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nContent-Type: application/json\r\n\r\n",
    b"POST /v1/streams/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n"
    b"Content-Type: application/json\r\n\r\n",
    b"GET /v1/events HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 100_000 + b"\r\n\r\n",
    b"GET /" + b"p" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["garbage", "bad-version", "negative-length", "text-length", "overflow-length", "huge-header", "huge-url"])
def test_malformed_requests_are_refused_cleanly(bad, req):
    head = bad.head_position()
    r = raw_request(bad.port, req, half_close=False, timeout=CONN_TIMEOUT + 8)
    if r is not None:
        assert 400 <= r.status_code < 500 or r.status_code == 505, r
    assert bad.head_position() == head
    assert_alive(bad)


def test_ten_thousand_byte_stream_name_never_creates_anything(bad):
    name = "n" * 10000
    head = bad.head_position()
    for method, body in (("POST", VALID), ("GET", b"")):
        r = raw_request(bad.port, build_request(method, "/v1/streams/" + name,
                                                [("Content-Type", "application/json")], body))
        p = expect_raw_problem(r, 400, "bad-request")
        assert "255" in p["detail"] or "long" in p["detail"].lower() or "stream" in p["detail"].lower(), p
    assert bad.head_position() == head
    assert_alive(bad)


# --------------------------------------------------------------------------
# must run last in this module: the log holds exactly what was acknowledged


def test_zz_feed_holds_exactly_the_acknowledged_events(bad):
    assert bad.ledger, "no case was acknowledged; the check would be empty"
    feed = bad.read_feed()
    ids = Counter(e["id"] for e in feed)
    dupes = [i for i, n in ids.items() if n > 1]
    assert not dupes, f"events stored twice: {dupes[:5]}"
    assert set(ids) == set(bad.ledger), \
        f"unacknowledged in feed: {list(set(ids) - set(bad.ledger))[:5]}; " \
        f"acknowledged but missing: {list(set(bad.ledger) - set(ids))[:5]}"
    for e in feed:
        assert e["stream"] == bad.ledger[e["id"]], e
    positions = [e["position"] for e in feed]
    assert positions == sorted(set(positions))
    assert_alive(bad)
