"""
conftest.py - shared harness of the example acceptance tests.

The examples' tests drive the real binary over HTTP exactly like
tests/api does, so they reuse its harness: this file loads
tests/api/conftest.py (under the module name `chronicle_api_harness`, so it
cannot clash with this conftest) and re-exports its helpers and fixtures.
Test modules write `from conftest import Server, expect_json, ...`.

It also adds what every example needs: the path of an example's files, a
Server on an example's app.json (and on an edited copy of it, for
definition changes), timestamps arithmetic for time travel, and a runner
that executes the ```sh blocks of a README and compares their answers with
the ```json blocks documented after them.

Environment (set by CMake's `examples` test; defaults suit a checkout):
  CHRONICLE_SOURCE_DIR  the repository root (default: the directory above this one)
  CHRONICLE_BIN         the binary (default <root>/build/chronicle)
  CHRONICLE_TEST_TMP    scratch root for the servers' databases

Both example directories hold a test_acceptance.py; pytest's default
"prepend" import mode cannot import two test modules of the same basename
without __init__.py files, so this conftest switches collection to the
"importlib" mode (module names from their paths).
"""

import datetime as _dt
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

SOURCE_DIR = os.environ.get("CHRONICLE_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES_DIR = os.path.join(SOURCE_DIR, "examples")
os.environ.setdefault("CHRONICLE_BIN", os.path.join(SOURCE_DIR, "build", "chronicle"))


def _load_harness():
    name = "chronicle_api_harness"
    if name in sys.modules:
        return sys.modules[name]
    path = os.path.join(SOURCE_DIR, "tests", "api", "conftest.py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


harness = _load_harness()

# Re-export the harness: classes, helpers and fixtures (pytest finds fixtures
# by looking at this module's attributes).
for _name in dir(harness):
    if not _name.startswith("_") and _name not in ("pytest", "requests"):
        globals()[_name] = getattr(harness, _name)

from chronicle_api_harness import (  # noqa: E402,F401  (explicit names for readers and linters)
    BIN, SSE, UUIDV7_RE, UUID_RE, TIMESTAMP_RE, Server, ServerStartError, build_request,
    check_event_shape, check_problem_body, check_request_id, expect_json, expect_problem,
    expect_raw_problem, mime, problem_fields, raw_request, running_server, server_factory,
    wait_until,
)


def pytest_configure(config):
    # See the module docstring: two test_acceptance.py files.
    if getattr(config.option, "importmode", None) == "prepend":
        config.option.importmode = "importlib"


# --------------------------------------------------------------------------
# examples


def example_path(example, *parts):
    """A file of examples/<example>/."""
    return os.path.join(EXAMPLES_DIR, example, *parts)


def app_server(app_json, name, env=None, args=()):
    """A Server (not started) serving the definition app_json."""
    return Server(args=["--app", app_json, *args], env=env, name=name)


def set_app(srv, app_json):
    """Points a (stopped) server at another definition for its next start."""
    args = list(srv.extra_args)
    i = args.index("--app")
    args[i + 1] = app_json
    srv.extra_args = args


def copy_app_with(srv_dir, app_json, edit):
    """Copies app_json into srv_dir as app-edited.json after edit(obj) changed
    the parsed definition in place; returns the new path."""
    with open(app_json, encoding="utf-8") as f:
        obj = json.load(f)
    edit(obj)
    path = os.path.join(srv_dir, "app-edited.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    return path


def log_messages(srv, since=0):
    """Every JSON log line of the server (from line `since` on), parsed."""
    out = []
    for line in srv.stderr_lines[since:]:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


# --------------------------------------------------------------------------
# timestamps (time travel without sleeping: query between recorded times)


def parse_ts(s):
    """RFC 3339 UTC with microseconds -> aware datetime."""
    assert TIMESTAMP_RE.match(s), s
    return _dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.timezone.utc)


def fmt_ts(d):
    return d.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ts_shift(s, microseconds):
    """The timestamp s moved by the given number of microseconds."""
    return fmt_ts(parse_ts(s) + _dt.timedelta(microseconds=microseconds))


# --------------------------------------------------------------------------
# README commands


def readme_blocks(readme_path):
    """The ```sh blocks of a README (the runnable curl examples), each with
    the ```json block right after it (its documented answer) or None."""
    with open(readme_path, encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
    out = []
    for i, (lang, body) in enumerate(blocks):
        if lang != "sh":
            continue
        answer = blocks[i + 1][1] if i + 1 < len(blocks) and blocks[i + 1][0] == "json" else None
        out.append((body, answer))
    return out


def run_readme_block(script, host_port, env=None):
    """Runs one README block with bash, the README's localhost:80xx replaced
    by host_port (127.0.0.1:<port>); returns its standard output. Fails when
    the block exits non-zero."""
    assert shutil.which("curl"), "curl is needed to check the README commands"
    script = re.sub(r"(localhost|127\.0\.0\.1):80\d\d", host_port, script)
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(["bash", "-e", "-c", script], capture_output=True, env=e, timeout=30)
    assert p.returncode == 0, f"{script!r} failed ({p.returncode}): {p.stderr.decode()}"
    return p.stdout.decode("utf-8")


def check_readme(readme_path, srv, min_blocks):
    """Runs every ```sh block of the README in order against srv and compares
    each answer with the ```json block documented after it: a problem must
    have the documented type and status, anything else the same shape (keys,
    nesting, array lengths, value types)."""
    blocks = readme_blocks(readme_path)
    assert len(blocks) >= min_blocks, blocks
    host_port = f"127.0.0.1:{srv.port}"
    for script, documented in blocks:
        out = run_readme_block(script, host_port)
        if documented is None:
            continue
        doc = json.loads(documented)
        try:
            got = json.loads(out)
        except ValueError:
            raise AssertionError(f"{script}\nprinted no JSON: {out!r}")
        if isinstance(doc, dict) and str(doc.get("type", "")).startswith("/problems/"):
            assert isinstance(got, dict) and got.get("type") == doc["type"] and got.get("status") == doc["status"], \
                f"{script}\ndocumented: {documented}\ngot: {out}"
        else:
            assert not (isinstance(got, dict) and str(got.get("type", "")).startswith("/problems/")), \
                f"{script}\ndocumented: {documented}\ngot: {out}"
        assert same_shape(doc, got), f"{script}\ndocumented: {documented}\ngot: {out}"


def same_shape(doc, got):
    """True when got has the JSON shape of the documented doc: the same type,
    for objects the same keys (recursively), for arrays the same length with
    each item alike. Values of strings/numbers may differ (ids, times)."""
    if isinstance(doc, dict):
        return isinstance(got, dict) and set(doc) == set(got) and all(same_shape(doc[k], got[k]) for k in doc)
    if isinstance(doc, list):
        return isinstance(got, list) and len(doc) == len(got) and all(same_shape(a, b) for a, b in zip(doc, got))
    if doc is None:
        return got is None
    if isinstance(doc, bool):
        return isinstance(got, bool)
    if isinstance(doc, (int, float)):
        return isinstance(got, (int, float)) and not isinstance(got, bool)
    return isinstance(got, type(doc))
