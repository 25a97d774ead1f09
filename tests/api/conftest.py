"""
conftest.py - black-box harness for the chronicle HTTP API (docs/http-api.md).

Starts the real binary on an ephemeral 127.0.0.1 port with a scratch database
of its own (a SQLite file, or a fresh PostgreSQL database), learns the port from the "listening" log line on stderr, and gives
tests small helpers: assertions for JSON and problem+json responses, a
hand-written SSE reader over requests, a raw-socket HTTP client for requests
that `requests` refuses to send, a Prometheus text parser and a deadline-polled
wait_until. Nothing here knows how the server is implemented.

Environment:
  CHRONICLE_BIN       the binary (default /work/main/build/chronicle)
  CHRONICLE_TEST_TMP  scratch root (default /tmp/chronicle-api-tests)
  CHRONICLE_KEEP_TMP  set to 1 to keep each server's scratch directory (and
                      its PostgreSQL database)
  CHRONICLE_TEST_DATABASE  the backend every Server runs on: `sqlite` (default:
                      a file in the server's scratch directory) or `postgres`
                      (a database of its own, CREATE DATABASE'd with psql in the
                      cluster of CHRONICLE_PG_URL and dropped when the server
                      is closed; scripts/pg-test.sh run sets that URL)
  CHRONICLE_PG_URL    the throwaway cluster's maintenance database, e.g.
                      postgres://postgres@/postgres?host=DIR&port=PORT
  CHRONICLE_PSQL      the psql to use (default: psql on PATH)

Test modules import helpers with `from conftest import ...` (pytest puts this
directory on sys.path because tests/api has no __init__.py).
"""

import calendar
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from urllib.parse import quote, urlsplit

import pytest
import requests

BIN = os.environ.get("CHRONICLE_BIN", "/work/main/build/chronicle")
TMP_ROOT = os.environ.get("CHRONICLE_TEST_TMP", "/tmp/chronicle-api-tests")
KEEP_TMP = os.environ.get("CHRONICLE_KEEP_TMP") == "1"
START_DEADLINE = 20.0
STOP_DEADLINE = 30.0
HTTP_TIMEOUT = 10.0

TEST_DATABASE = os.environ.get("CHRONICLE_TEST_DATABASE") or "sqlite"
PG_URL = os.environ.get("CHRONICLE_PG_URL") or ""
PSQL = os.environ.get("CHRONICLE_PSQL") or "psql"
if TEST_DATABASE not in ("sqlite", "postgres"):
    raise RuntimeError(f"CHRONICLE_TEST_DATABASE={TEST_DATABASE!r}: expected sqlite or postgres")
if TEST_DATABASE == "postgres" and not PG_URL:
    raise RuntimeError("CHRONICLE_TEST_DATABASE=postgres needs CHRONICLE_PG_URL, the URL of a throwaway "
                       "cluster: run the suite under `scripts/pg-test.sh run DIR -- python3 -m pytest ...`")

# Variables the server reads; cleared so the caller's environment cannot leak in.
SERVER_ENV_VARS = (
    "DATABASE_URL", "PROJECTION_DB_URL", "PORT", "APP", "API_SECRET", "JWT_SECRET",
    "LOG_LEVEL", "ROLE", "MAX_BODY_BYTES", "MAX_EVENT_BYTES", "MAX_CONNECTIONS",
    "CONNECTION_TIMEOUT", "HTTP_THREADS", "SHUTDOWN_GRACE", "SQLITE_SYNCHRONOUS",
    "SQLITE_READERS", "SSE_HEARTBEAT_MS",
    "API_KEYS_FILE", "JWT_SECRET_PREVIOUS", "JWT_PUBLIC_KEY_FILE", "JWT_ISSUER", "JWT_AUDIENCE",
    "JWT_CLAIM_SUB", "JWT_CLAIM_ROLES", "JWT_CLAIM_TENANT", "JWT_LEEWAY", "AUTH_ACCESS_TTL",
    "AUTH_REFRESH_TTL", "RATE_LIMIT_READ", "RATE_LIMIT_WRITE", "RATE_LIMIT_AUTH", "CORS_ORIGINS",
    "CORS_MAX_AGE",
)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
UUIDV7_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
EVENT_KEYS = {"id", "stream", "type", "version", "position", "data", "metadata", "timestamp"}
APPEND_KEYS = {"stream", "version", "positions", "ids"}


# --------------------------------------------------------------------------
# polling


def wait_until(pred, timeout=10.0, interval=0.02, msg=None):
    """Polls pred() until it returns a truthy value (returned) or the deadline
    passes (AssertionError naming msg and the last value)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {msg or pred}; last value {last!r}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# PostgreSQL databases (CHRONICLE_TEST_DATABASE=postgres)


def psql(sql, url=None):
    """Runs SQL with psql on url (default: the cluster's maintenance database
    CHRONICLE_PG_URL); returns its unaligned output. Raises RuntimeError with
    psql's message when it fails."""
    argv = [PSQL, url or PG_URL, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql]
    try:
        p = subprocess.run(argv, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"{' '.join(argv)}: {e}") from e
    if p.returncode != 0:
        raise RuntimeError(f"psql failed ({p.returncode}) on {sql!r}: {p.stderr.decode('utf-8', 'replace')}")
    return p.stdout.decode("utf-8", "replace")


def pg_database_url(dbname):
    """The URL of database dbname in the cluster of CHRONICLE_PG_URL."""
    return urlsplit(PG_URL)._replace(path="/" + dbname).geturl()


def create_pg_database(name):
    """CREATE DATABASE with a unique name derived from name; returns the name."""
    stem = re.sub(r"[^a-z0-9_]", "_", name.lower())[:32]
    dbname = f"t_{stem}_{uuid.uuid4().hex[:12]}"
    psql(f'CREATE DATABASE "{dbname}"')
    return dbname


def drop_pg_database(dbname):
    psql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


# --------------------------------------------------------------------------
# the server under test


class ServerStartError(RuntimeError):
    pass


class Server:
    """One `chronicle serve` process on 127.0.0.1:<ephemeral> with its own
    scratch directory and database: a SQLite file in that directory, or with
    CHRONICLE_TEST_DATABASE=postgres a database of its own in the test
    cluster (kept across restart(), dropped by close()). Only ever signals
    its own process, by PID."""

    def __init__(self, args=(), env=None, heartbeat_ms=200, name="srv", pg_database=None):
        os.makedirs(TMP_ROOT, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=f"{name}-", dir=TMP_ROOT)
        self.backend = TEST_DATABASE
        # pg_database: an existing PostgreSQL database to share with other
        # servers (several instances); the caller owns and drops it.
        self.owns_database = pg_database is None
        if self.backend == "postgres":
            self.db_path = None
            self.pg_database = pg_database or create_pg_database(name)
            self.database = pg_database_url(self.pg_database)
        else:
            self.db_path = os.path.join(self.dir, "chronicle.db")
            self.pg_database = None
            self.database = f"sqlite:{self.db_path}"
        self.extra_args = list(args)
        self.env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_VARS}
        if heartbeat_ms is not None:
            self.env["SSE_HEARTBEAT_MS"] = str(heartbeat_ms)
        self.env.update(env or {})
        self.proc = None
        self.port = None
        self.url = None
        self.stderr_lines = []  # every stderr line of every run, in order
        self.runs = 0
        self.killed = False
        self._reader = None
        self._session = None

    # -- lifecycle -------------------------------------------------------

    def argv(self):
        return [BIN, "serve", "--listen", "127.0.0.1:0", "--database", self.database, *self.extra_args]

    def start(self):
        if not os.path.exists(BIN):
            raise ServerStartError(f"chronicle binary not found at {BIN} (set CHRONICLE_BIN)")
        self.runs += 1
        self.killed = False
        first_line = len(self.stderr_lines)
        listening = threading.Event()
        found = {}
        stdout = open(os.path.join(self.dir, f"stdout.{self.runs}.log"), "wb")
        self.proc = subprocess.Popen(self.argv(), env=self.env, stdin=subprocess.DEVNULL, cwd=self.dir,
                                     stdout=stdout, stderr=subprocess.PIPE)
        stdout.close()
        proc = self.proc

        def drain():
            # Keeps reading until EOF so the pipe never fills.
            for raw in iter(proc.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.stderr_lines.append(line)
                if not listening.is_set():
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(obj, dict) and obj.get("msg") == "listening":
                        found.update(obj)
                        listening.set()
            proc.stderr.close()
            listening.set()  # EOF: wake the waiter, which then sees no port

        self._reader = threading.Thread(target=drain, daemon=True, name=f"stderr-{proc.pid}")
        self._reader.start()
        deadline = time.monotonic() + START_DEADLINE
        while not listening.wait(0.05):
            if time.monotonic() >= deadline:
                break
        if "port" not in found:
            self._abort()
            log = "\n".join(self.stderr_lines[first_line:])
            raise ServerStartError(
                f"chronicle did not log 'listening' within {START_DEADLINE}s "
                f"(exit code {proc.poll()}); argv={self.argv()}\nstderr:\n{log}")
        self.port = int(found["port"])
        assert found.get("address") == "127.0.0.1", found
        self.url = f"http://127.0.0.1:{self.port}"
        self._session = requests.Session()
        return self

    def _abort(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_DEADLINE)
        self._join_reader()

    def _join_reader(self):
        if self._reader:
            self._reader.join(5)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        assert self.alive(), "server is not running"
        os.kill(self.proc.pid, sig)

    def wait(self, timeout=STOP_DEADLINE):
        """Waits for the process to exit; returns its exit code."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_DEADLINE)
            self._join_reader()
            raise AssertionError(f"chronicle (pid {self.proc.pid}) did not exit within {timeout}s; "
                                 f"stderr tail:\n{self.stderr_tail()}")
        self._join_reader()
        self._close_session()
        return rc

    def stop(self, sig=signal.SIGTERM, timeout=STOP_DEADLINE):
        """SIGTERM (by PID) and wait; returns the exit code."""
        if self.alive():
            os.kill(self.proc.pid, sig)
        return self.wait(timeout)

    def kill(self):
        """SIGKILL (by PID) and wait."""
        self.killed = True
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(STOP_DEADLINE)
        self._join_reader()
        self._close_session()

    def restart(self):
        """Stops the process if it still runs (SIGTERM, exit code must be 0)
        and starts it again on the same database."""
        if self.alive():
            rc = self.stop()
            assert rc == 0, f"exit code {rc} on restart; stderr tail:\n{self.stderr_tail()}"
        return self.start()

    def close(self):
        """Fixture teardown: stops a running server and fails the test when it
        did not exit 0 or had died on its own."""
        if self.proc is None:
            return
        died = self.proc.poll()
        if died is None:
            rc = self.stop()
        else:
            self._join_reader()
            self._close_session()
            rc = died
        ok = self.killed or rc == 0
        if ok and not KEEP_TMP:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.pg_database and self.owns_database:
                drop_pg_database(self.pg_database)
        if not ok:
            how = "died during the test" if died is not None else "exited on SIGTERM"
            pytest.fail(f"chronicle {how} with code {rc}; scratch {self.dir}; database {self.database}; "
                        f"stderr tail:\n"
                        f"{self.stderr_tail()}", pytrace=False)

    def _close_session(self):
        if self._session is not None:
            self._session.close()
            self._session = None

    def stderr_tail(self, n=40):
        return "\n".join(self.stderr_lines[-n:])

    def log_records(self):
        out = []
        for line in self.stderr_lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append(None)
        return out

    # -- HTTP conveniences -----------------------------------------------

    def request(self, method, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        try:
            return self._session.request(method, self.url + path, **kw)
        except requests.ConnectionError:
            # A kept-alive connection can be closed by the server's idle
            # timeout just as we reuse it (an ordinary HTTP/1.1 race);
            # clients retry idempotent requests once on a fresh connection.
            if method not in ("GET", "HEAD"):
                raise
            return self._session.request(method, self.url + path, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def append(self, stream, events, expected_version=None, headers=None, session=None, **extra):
        """POST /v1/streams/{stream} with {"events": events[, "expected_version"]}."""
        body = {"events": events}
        if expected_version is not None:
            body["expected_version"] = expected_version
        body.update(extra)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        s = session or self._session
        return s.post(self.url + stream_path(stream), data=json.dumps(body).encode(), headers=h,
                      timeout=HTTP_TIMEOUT)

    def head_position(self, headers=None):
        r = self.get("/v1/events?limit=1", headers=headers)
        body = expect_json(r, 200)
        return body["head"]

    def read_feed(self, after=0, types=None, headers=None):
        """Every event after `after`, paging with limit=1000."""
        out = []
        while True:
            q = f"/v1/events?after={after}&limit=1000"
            if types:
                q += "&types=" + ",".join(types)
            body = expect_json(self.get(q, headers=headers), 200)
            out.extend(body["events"])
            if not body["events"]:
                return out
            after = body["next_after"]

    def internal_health(self, component, headers=None):
        return expect_json(self.get(f"/internal/health/{component}", headers=headers), 200)

    def metrics(self, headers=None):
        r = self.get("/metrics", headers=headers)
        assert r.status_code == 200, r.text
        return Metrics(r.text)


@contextlib.contextmanager
def running_server(args=(), env=None, heartbeat_ms=200, name="srv"):
    srv = Server(args=args, env=env, heartbeat_ms=heartbeat_ms, name=name)
    try:
        srv.start()
    except ServerStartError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def server():
    with running_server(name="server") as srv:
        yield srv


@pytest.fixture(scope="module")
def secured_server():
    with running_server(env={"API_SECRET": "s1,s2"}, name="secured") as srv:
        yield srv


def start_fails(env, args=()):
    """Runs `chronicle serve` with env (on top of the caller's environment
    minus the server's variables) and args, which must make it refuse to
    start; returns its stderr text."""
    os.makedirs(TMP_ROOT, exist_ok=True)
    full = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_VARS}
    full.update(env)
    db = os.path.join(TMP_ROOT, f"refused-{uuid.uuid4()}.db")
    p = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:0", "--database", f"sqlite:{db}", *args],
                       env=full, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode != 0, f"the server started (or exited 0) with {env} {args}:\n{err}"
    return err


@pytest.fixture
def server_factory():
    """Starts servers with custom flags/env; all are closed at teardown."""
    started = []

    def make(args=(), env=None, heartbeat_ms=200, name="custom"):
        srv = Server(args=args, env=env, heartbeat_ms=heartbeat_ms, name=name)
        started.append(srv)
        try:
            return srv.start()
        except ServerStartError as e:
            pytest.fail(str(e), pytrace=False)

    yield make
    errors = []
    for srv in started:
        try:
            srv.close()
        except BaseException as e:  # pytest.fail raises Failed (a BaseException)
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


# --------------------------------------------------------------------------
# request and response helpers


def stream_path(name):
    """The URL path of a stream: its name percent-encoded as one segment."""
    return "/v1/streams/" + quote(name, safe="")


def new_stream(prefix="s"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_id():
    return str(uuid.uuid4())


def ev(type_="Happened", data=None, id_=None, metadata=None):
    e = {"type": type_}
    if id_ is not None:
        e["id"] = id_
    if data is not None:
        e["data"] = data
    if metadata is not None:
        e["metadata"] = metadata
    return e


def mime(headers):
    """The media type of a Content-Type header, lower-case, without parameters."""
    ct = headers.get("Content-Type") or headers.get("content-type") or ""
    return ct.split(";")[0].strip().lower()


def check_request_id(headers):
    rid = headers.get("X-Request-Id")
    assert rid, f"no X-Request-Id header in {dict(headers)}"
    assert 1 <= len(rid) <= 128 and all(0x20 < ord(c) < 0x7F for c in rid), rid
    return rid


def expect_json(resp, status):
    """Asserts status, application/json and X-Request-Id; returns the body."""
    assert resp.status_code == status, \
        f"{resp.request.method} {resp.request.url}: expected {status}, got {resp.status_code}: {resp.text[:500]}"
    assert mime(resp.headers) == "application/json", resp.headers.get("Content-Type")
    check_request_id(resp.headers)
    return resp.json()


def check_problem_body(body, headers, status, slug, instance=None):
    assert isinstance(body, dict), body
    assert body.get("type") == f"/problems/{slug}", body
    assert body.get("status") == status, body
    assert isinstance(body.get("title"), str) and body["title"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert isinstance(body.get("instance"), str) and body["instance"].startswith("/"), body
    if instance is not None:
        assert body["instance"] == instance, body
    assert body.get("request_id") == headers.get("X-Request-Id"), (body, dict(headers))


def expect_problem(resp, status, slug, instance=None):
    """Asserts an RFC 9457 problem response; returns the body. instance, when
    given, is the expected request path."""
    assert resp.status_code == status, \
        f"{resp.request.method} {resp.request.url}: expected {status} {slug}, got {resp.status_code}: {resp.text[:500]}"
    assert mime(resp.headers) == "application/problem+json", resp.headers.get("Content-Type")
    check_request_id(resp.headers)
    body = resp.json()
    check_problem_body(body, resp.headers, status, slug, instance)
    return body


def problem_fields(body):
    return [e.get("field") for e in body.get("errors", [])]


def check_event_shape(e):
    assert set(e) == EVENT_KEYS, e
    assert UUID_RE.match(e["id"]), e
    assert isinstance(e["version"], int) and e["version"] >= 1, e
    assert isinstance(e["position"], int) and e["position"] >= 1, e
    assert isinstance(e["metadata"], dict), e
    assert TIMESTAMP_RE.match(e["timestamp"]), e
    ts = calendar.timegm(time.strptime(e["timestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(ts - time.time()) < 600, f"timestamp {e['timestamp']} is not near now (UTC)"


# --------------------------------------------------------------------------
# Server-Sent Events, parsed by hand over requests(stream=True)


class SSE:
    """One live-feed subscription. Yields ("event", {"id", "event", "data"})
    and ("comment", text) items, in arrival order."""

    def __init__(self, url, params=None, headers=None, read_timeout=5.0):
        h = {"Accept": "text/event-stream"}
        h.update(headers or {})
        self.resp = requests.get(url, params=params, headers=h, stream=True, timeout=(5, read_timeout))
        self.buf = b""
        self.pending = {}
        self.items = []
        self.ended = False  # the server closed the stream
        self._chunks = None

    def close(self):
        self.resp.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _chunk_iter(self):
        r = self.resp
        if r.headers.get("Transfer-Encoding", "").lower() == "chunked":
            # urllib3 yields each HTTP chunk as it arrives
            yield from r.raw.stream(None, decode_content=False)
        else:
            # close-delimited body: read whatever is available
            fp = r.raw._fp
            while True:
                data = fp.read1(65536)
                if not data:
                    return
                yield data

    def _parse(self):
        while True:
            m = re.search(rb"\r\n|\n|\r", self.buf)
            if not m or (m.group() == b"\r" and m.end() == len(self.buf)):
                return  # a lone \r at the end may be the start of \r\n
            line = self.buf[:m.start()].decode("utf-8")
            self.buf = self.buf[m.end():]
            if line == "":
                if self.pending:
                    ev_ = {"id": self.pending.get("id"), "event": self.pending.get("event", "message"),
                           "data": "\n".join(self.pending.get("data", []))}
                    self.items.append(("event", ev_))
                    self.pending = {}
                continue
            if line.startswith(":"):
                self.items.append(("comment", line[1:].strip()))
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                self.pending.setdefault("data", []).append(value)
            elif field in ("id", "event", "retry"):
                self.pending[field] = value

    def next_item(self, deadline):
        """The next item, or None at the deadline or end of stream."""
        if self._chunks is None:
            self._chunks = self._chunk_iter()
        while not self.items:
            if time.monotonic() >= deadline:
                return None
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.ended = True
                return None
            self.buf += chunk
            self._parse()
        return self.items.pop(0)

    def next_event(self, timeout=10.0):
        """The next event (comments skipped) with its data parsed as JSON."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.next_item(deadline)
            if item is None:
                raise AssertionError(f"no SSE event within {timeout}s (stream ended: {self.ended})")
            if item[0] == "event":
                e = dict(item[1])
                e["json"] = json.loads(e["data"])
                return e

    def events(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        return [self.next_event(max(0.01, deadline - time.monotonic())) for _ in range(n)]


# --------------------------------------------------------------------------
# raw HTTP/1.1 for requests that requests will not send


class RawResponse:
    def __init__(self, status, reason, headers, body):
        self.status_code = status
        self.reason = reason
        self.headers = headers  # a CaseInsensitiveDict
        self.body = body

    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return f"<RawResponse {self.status_code} {dict(self.headers)} {self.body[:300]!r}>"


def build_request(method, path, headers=(), body=b"", content_length="auto"):
    """Bytes of one HTTP/1.1 request with Host and Connection: close. path and
    header values may be bytes (sent verbatim) or str (latin-1)."""
    if isinstance(path, str):
        path = path.encode("latin-1")
    lines = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    for k, v in headers:
        lines.append(k.encode() + b": " + (v if isinstance(v, bytes) else v.encode("latin-1")))
    if content_length == "auto":
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(b"Content-Length: " + str(len(body)).encode())
    elif content_length is not None:
        lines.append(b"Content-Length: " + str(content_length).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def raw_request(port, data, half_close=False, timeout=10.0, send_in=None):
    """Sends data on a fresh connection and reads one response. Returns a
    RawResponse, or None when the server closed without answering. Raises
    AssertionError when it neither answers nor closes within timeout.
    send_in, when given, splits the send into pieces of that size."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        try:
            if send_in:
                for i in range(0, len(data), send_in):
                    s.sendall(data[i:i + send_in])
            else:
                s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer early (413) and close; read what it sent
        buf = b""
        while True:
            resp = _parse_raw(buf, final=False)
            if resp is not None:
                return resp
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"server neither answered nor closed within {timeout}s; got {buf[:200]!r}")
            s.settimeout(remaining)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                raise AssertionError(f"server neither answered nor closed within {timeout}s; got {buf[:200]!r}")
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return _parse_raw(buf, final=True)
            buf += chunk
    finally:
        s.close()


def _parse_raw(buf, final):
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        if final and buf:
            raise AssertionError(f"incomplete response head: {buf[:300]!r}")
        return None
    head = buf[:head_end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = requests.structures.CaseInsensitiveDict()
    for line in head[1:]:
        k, _, v = line.partition(":")
        k, v = k.strip(), v.strip()
        headers[k] = headers[k] + ", " + v if k in headers else v
    rest = buf[head_end + 4:]
    if status in (204, 304) or 100 <= status < 200:
        return RawResponse(status, reason, headers, b"")
    if "Content-Length" in headers:
        n = int(headers["Content-Length"])
        if len(rest) >= n:
            return RawResponse(status, reason, headers, rest[:n])
        if final:
            raise AssertionError(f"truncated response body: {buf[:300]!r}")
        return None
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        body, pos = b"", 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(rest[pos:eol].split(b";")[0], 16)
            if size == 0:
                return RawResponse(status, reason, headers, body)
            if len(rest) < eol + 2 + size + 2:
                break
            body += rest[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
        if final:
            raise AssertionError(f"truncated chunked response: {buf[:300]!r}")
        return None
    return RawResponse(status, reason, headers, rest) if final else None


def expect_raw_problem(resp, status, slug, instance=None):
    assert resp is not None, f"connection closed without a response (expected {status} {slug})"
    assert resp.status_code == status, f"expected {status} {slug}, got {resp!r}"
    assert mime(resp.headers) == "application/problem+json", resp
    check_request_id(resp.headers)
    body = resp.json()
    check_problem_body(body, resp.headers, status, slug, instance)
    return body


# --------------------------------------------------------------------------
# Prometheus text format


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples = []  # (name, labels dict, value)
        self.types = {}
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split()
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3]
                continue
            m = _SAMPLE_RE.match(line)
            assert m, f"unparsable metrics line: {line!r}"
            labels = {}
            if m.group(3):
                labels = {k: v for k, v in _LABEL_RE.findall(m.group(3))}
            self.samples.append((m.group(1), labels, float(m.group(4))))

    def names(self):
        return {n for n, _, _ in self.samples}

    def select(self, name, **labels):
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == want for k, want in labels.items())]

    def sum(self, name, **labels):
        return sum(v for _, v in self.select(name, **labels))


def url_path(url):
    return urlsplit(url).path
