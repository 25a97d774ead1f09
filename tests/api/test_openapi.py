"""
test_openapi.py - GET /openapi.json, the OpenAPI 3.1 document generated from
the route tables and the app definition (docs/http.md, "The OpenAPI document").

Black-box, against the real binary: without an app, with the status-app and
config-api examples, with the kanban definition of tests/definitions and with
a definition of this file that has a field of every type. Checks that every
route the server answers is documented (and that what is documented is
answered), that the schemas say what the definition says, that every $ref
resolves and operationIds are unique, and - with a small JSON Schema checker
written here - that the real responses of the server match the document
(status codes documented, bodies valid against the documented schemas).
When Debian's python3-openapi-spec-validator or python3-jsonschema is
installed, the document is also validated with it; otherwise that test is
skipped (nothing is installed by the tests).
"""

import json
import os
import re
import subprocess

import pytest

from conftest import expect_json, expect_problem, mime, new_stream, running_server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STATUS_APP = os.path.join(ROOT, "examples", "status-app", "app.json")
CONFIG_API = os.path.join(ROOT, "examples", "config-api", "app.json")
KANBAN = os.path.join(ROOT, "tests", "definitions", "valid", "kanban", "app.json")

CORE_ROUTES = {
    ("GET", "/health"), ("GET", "/ready"), ("GET", "/internal/health/{component}"),
    ("GET", "/metrics"), ("POST", "/v1/streams/{stream}"), ("GET", "/v1/streams/{stream}"),
    ("GET", "/v1/events"), ("GET", "/openapi.json"), ("GET", "/v1/consumers"),
    ("POST", "/v1/consumers/{name}/reset"), ("GET", "/v1/consumers/{name}/dead-letters"),
    ("POST", "/v1/consumers/{name}/dead-letters/{id}/retry"),
}

FILTER_OPS = "eq,neq,gt,gte,lt,lte,like,in"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DATE_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")

# A definition with a field of every type and option, two commands, and app
# routes whose paths differ only in the parameter name (one OpenAPI path).
TYPES_APP = {
    "app": "openapi-types",
    "entities": {
        "people": {
            "key": "handle",
            "fields": {
                "handle": {"type": "string", "required": True, "max_length": 40},
                "name": {"type": "string", "required": True, "max_length": 80},
                "nick": {"type": "string"},
                "bio": {"type": "text"},
                "motto": {"type": "text", "max_length": 500},
                "age": {"type": "integer", "min": 0, "max": 150},
                "score": {"type": "number", "min": -1.5, "max": 1.5, "default": 0.25},
                "active": {"type": "boolean", "required": True, "default": True},
                "born": {"type": "timestamp", "immutable": True},
                "role": {"type": "enum", "values": ["admin", "member"], "default": "member"},
                "settings": {"type": "json"},
                "manager": {"type": "ref", "to": "people"},
                "digest": {"type": "cron"},
                "email": {"type": "email", "unique": True},
                "password_hash": {"type": "string", "private": True},
            },
            "events": {"create": "PersonAdded", "update": "PersonChanged", "delete": "PersonRemoved"},
            "commands": {
                "promote": {
                    "input": {"role": {"type": "enum", "values": ["admin"], "required": True},
                              "note": {"type": "text", "max_length": 100}},
                    "set": {"role": "$input.role"},
                    "event": "PersonPromoted",
                },
                "deactivate": {"when": {"active": True}, "set": {"active": False},
                               "event": "PersonDeactivated"},
            },
        },
        "notes": {
            "fields": {"body": {"type": "text", "required": True}, "secret": {"type": "json", "private": True}},
            "operations": ["create"],
        },
    },
    "routes": {
        "GET /people": {"action": "people.list", "sort": "-age", "limit": 10, "max_limit": 20,
                        "fields": ["handle", "name", "version"]},
        "GET /people/{who}": "people.get",
        "PUT /people/{handle}": "people.upsert",
        "POST /people/{who}/promote": "people.promote",
    },
}


# --------------------------------------------------------------------------
# servers, one per module and kind


def _types_app_path():
    from conftest import TMP_ROOT
    os.makedirs(TMP_ROOT, exist_ok=True)
    path = os.path.join(TMP_ROOT, f"openapi-types-{os.getpid()}.json")
    with open(path, "w") as f:
        json.dump(TYPES_APP, f)
    _types_app_path.path = path
    return path


@pytest.fixture(scope="module")
def servers():
    """Starts the servers lazily, by kind, and stops them at module end."""
    started = {}
    stack = []

    def get(kind):
        if kind not in started:
            args = {
                "none": [],
                "status": ["--app", STATUS_APP],
                "config": ["--app", CONFIG_API],
                "kanban": ["--app", KANBAN],
                "types": ["--app", _types_app_path()],
            }[kind]
            cm = running_server(args=args, name=f"openapi-{kind}")
            started[kind] = cm.__enter__()
            stack.append(cm)
        return started[kind]

    yield get
    try:
        for cm in reversed(stack):
            cm.__exit__(None, None, None)
    finally:
        if "types" in started:
            os.unlink(_types_app_path.path)


def fetch_doc(srv, headers=None):
    r = srv.get("/openapi.json", headers=headers)
    doc = expect_json(r, 200)
    return doc


@pytest.fixture(scope="module")
def docs(servers):
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = fetch_doc(servers(kind))
        return cache[kind]

    return get


ALL_KINDS = ["none", "status", "config", "kanban", "types"]


# --------------------------------------------------------------------------
# helpers over the document


def operations(doc):
    """(METHOD, path, operation) for every operation of the document."""
    out = []
    for path, item in doc["paths"].items():
        for m, op in item.items():
            if m in HTTP_METHODS:
                out.append((m.upper(), path, op))
    return out


def pairs(doc):
    return {(m, p) for m, p, _ in operations(doc)}


def op_of(doc, method, path):
    item = doc["paths"].get(path)
    assert item is not None, f"{path} is not documented; paths: {sorted(doc['paths'])}"
    op = item.get(method.lower())
    assert op is not None, f"{method} {path} is not documented; methods: {sorted(item)}"
    return op


def pointer(doc, ref):
    assert ref.startswith("#/"), f"not a local $ref: {ref}"
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"$ref {ref} does not resolve (at {part!r})"
        node = node[part]
    return node


def deref(doc, node):
    while isinstance(node, dict) and "$ref" in node:
        node = pointer(doc, node["$ref"])
    return node


def walk(node, path="$"):
    """Yields (path, dict) for every object in the tree."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def schema(doc, name):
    s = doc["components"]["schemas"].get(name)
    assert s is not None, f"no schema {name}; have {sorted(doc['components']['schemas'])}"
    return s


def types_of(s):
    t = s.get("type")
    return set(t) if isinstance(t, list) else ({t} if t else set())


def params(doc, op, where=None):
    out = {}
    for p in op.get("parameters", []):
        p = deref(doc, p)
        if where is None or p["in"] == where:
            out[p["name"]] = p
    return out


def response_of(doc, op, status):
    r = op["responses"].get(str(status))
    assert r is not None, f"status {status} is not documented; have {sorted(op['responses'])}"
    return deref(doc, r)


# --------------------------------------------------------------------------
# a small JSON Schema 2020-12 checker (the subset the document uses)


def _is_type(value, t):
    if t == "null":
        return value is None
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "string":
        return isinstance(value, str)
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    raise AssertionError(f"unknown type {t}")


def check_value(doc, s, value, where="$"):
    """Raises AssertionError naming where value breaks schema s."""
    if "$ref" in s:
        check_value(doc, pointer(doc, s["$ref"]), value, where)
    if "type" in s:
        ts = s["type"] if isinstance(s["type"], list) else [s["type"]]
        assert any(_is_type(value, t) for t in ts), f"{where}: {value!r} is not of type {s['type']}"
    if "enum" in s:
        assert value in s["enum"], f"{where}: {value!r} not in {s['enum']}"
    if isinstance(value, str):
        if "maxLength" in s:
            assert len(value) <= s["maxLength"], f"{where}: longer than {s['maxLength']}"
        if "minLength" in s:
            assert len(value) >= s["minLength"], f"{where}: shorter than {s['minLength']}"
        if "pattern" in s:
            assert re.search(s["pattern"], value), f"{where}: {value!r} does not match {s['pattern']}"
        if s.get("format") == "date-time":
            assert DATE_TIME_RE.match(value), f"{where}: {value!r} is not a date-time"
    if _is_type(value, "number"):
        if "minimum" in s:
            assert value >= s["minimum"], f"{where}: {value} < {s['minimum']}"
        if "maximum" in s:
            assert value <= s["maximum"], f"{where}: {value} > {s['maximum']}"
    if isinstance(value, dict):
        props = s.get("properties", {})
        for name in s.get("required", []):
            assert name in value, f"{where}: required member {name!r} missing in {value!r}"
        if s.get("additionalProperties") is False:
            extra = set(value) - set(props)
            assert not extra, f"{where}: members {extra} are not in the schema"
        for k, v in value.items():
            if k in props:
                check_value(doc, props[k], v, f"{where}.{k}")
    if isinstance(value, list) and "items" in s:
        for i, v in enumerate(value):
            check_value(doc, s["items"], v, f"{where}[{i}]")
    if "anyOf" in s:
        errors = []
        for alt in s["anyOf"]:
            try:
                check_value(doc, alt, value, where)
                break
            except AssertionError as e:
                errors.append(str(e))
        else:
            raise AssertionError(f"{where}: no alternative of anyOf fits: {errors}")


def check_response(doc, method, path, resp):
    """Asserts that resp (of METHOD on the documented path) is documented:
    its status, media type, body schema and the headers the document
    promises. Returns the body (parsed JSON, or text)."""
    op = op_of(doc, method, path)
    r = response_of(doc, op, resp.status_code)
    media = mime(resp.headers)
    assert media in {m.split(";")[0] for m in r.get("content", {})}, \
        f"{method} {path} {resp.status_code}: {media} not documented in {list(r.get('content', {}))}"
    content = next(v for m, v in r["content"].items() if m.split(";")[0] == media)
    body = resp.json() if "json" in media else resp.text
    check_value(doc, content["schema"], body, f"{method} {path} {resp.status_code}")
    for h in r.get("headers", {}):
        if h in ("Link", "Idempotent-Replay"):
            continue  # only when there is a next page / a replay
        assert h in resp.headers, f"{method} {path} {resp.status_code}: header {h} documented, not sent"
    return body


# --------------------------------------------------------------------------
# the document as a whole


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_document_basics(servers, kind):
    srv = servers(kind)
    r = srv.get("/openapi.json")
    doc = expect_json(r, 200)
    assert doc["openapi"] == "3.1.0"
    title = {"none": "chronicle", "status": "status-app", "config": "config-api", "kanban": "kanban",
             "types": "openapi-types"}[kind]
    assert doc["info"]["title"] == title
    assert re.match(r"^\d+\.\d+\.\d+", doc["info"]["version"]), doc["info"]
    assert "servers" not in doc or doc["servers"] == [{"url": "/"}]
    assert set(doc) <= {"openapi", "info", "servers", "paths", "components", "security", "tags",
                        "jsonSchemaDialect", "webhooks", "externalDocs"}, sorted(doc)
    # The same text every time: built once at start.
    assert srv.get("/openapi.json").content == r.content
    head = srv.request("HEAD", "/openapi.json")
    assert head.status_code == 200 and mime(head.headers) == "application/json" and head.content == b""


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_ref_resolves(docs, kind):
    doc = docs(kind)
    n = 0
    for where, node in walk(doc):
        if "$ref" in node and isinstance(node["$ref"], str):
            pointer(doc, node["$ref"])
            n += 1
    assert n > 0


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_operation_ids_unique(docs, kind):
    ids = [op.get("operationId") for _, _, op in operations(docs(kind))]
    assert all(isinstance(i, str) and i for i in ids), ids
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, dupes


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_schema_dialect_is_2020_12(docs, kind):
    """OpenAPI 3.1: "may be null" is a type array; 3.0's nullable is gone."""
    for where, node in walk(docs(kind)):
        assert "nullable" not in node, f"{where} uses nullable"
        if "type" in node and isinstance(node["type"], list):
            assert len(set(node["type"])) == len(node["type"]), where


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_path_parameters_match_templates(docs, kind):
    doc = docs(kind)
    for method, path, op in operations(doc):
        in_template = set(re.findall(r"\{([^}]+)\}", path))
        declared = params(doc, op, "path")
        assert set(declared) == in_template, f"{method} {path}: {sorted(declared)}"
        assert all(p["required"] is True for p in declared.values())
        names = [(deref(doc, p)["name"], deref(doc, p)["in"]) for p in op.get("parameters", [])]
        assert len(names) == len(set(names)), f"{method} {path}: duplicate parameters {names}"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_errors_are_problem_json(docs, kind):
    doc = docs(kind)
    for method, path, op in operations(doc):
        assert any(s.startswith("2") for s in op["responses"]), f"{method} {path}"
        for status, r in op["responses"].items():
            r = deref(doc, r)
            assert r.get("description"), f"{method} {path} {status}"
            assert "X-Request-Id" in r.get("headers", {}), f"{method} {path} {status}"
            if int(status) >= 400:
                assert list(r["content"]) == ["application/problem+json"], f"{method} {path} {status}"
                assert r["content"]["application/problem+json"]["schema"] == \
                    {"$ref": "#/components/schemas/Problem"}
                assert status in {"400", "401", "404", "409", "412", "413", "415", "422", "429", "503"}


def test_problem_and_event_schemas(docs):
    doc = docs("none")
    p = schema(doc, "Problem")
    assert {"type", "title", "status", "detail", "instance", "request_id", "errors"} <= set(p["properties"])
    item = deref(doc, p["properties"]["errors"]["items"])
    assert set(item["properties"]) == {"field", "message"}
    e = schema(doc, "Event")
    assert set(e["properties"]) == {"id", "stream", "type", "version", "position", "data", "metadata",
                                    "timestamp"}
    assert sorted(e["required"]) == sorted(e["properties"])
    assert e["properties"]["timestamp"]["format"] == "date-time"
    for name in ("AppendRequest", "AppendResponse"):
        schema(doc, name)


# --------------------------------------------------------------------------
# every route the server answers is documented, and only those


def test_no_app_documents_exactly_the_core_routes(docs):
    assert pairs(docs("none")) == CORE_ROUTES


def test_core_routes_details(docs):
    doc = docs("none")
    metrics = response_of(doc, op_of(doc, "GET", "/metrics"), 200)
    assert [m.split(";")[0] for m in metrics["content"]] == ["text/plain"]
    events = op_of(doc, "GET", "/v1/events")
    assert set(response_of(doc, events, 200)["content"]) == {"application/json", "text/event-stream"}
    assert {"after", "limit", "types"} <= set(params(doc, events, "query"))
    assert "Last-Event-ID" in params(doc, events, "header")
    append = op_of(doc, "POST", "/v1/streams/{stream}")
    assert deref(doc, append["requestBody"]["content"]["application/json"]["schema"]) == \
        schema(doc, "AppendRequest")
    created = response_of(doc, append, 201)
    assert {"Location", "Idempotent-Replay"} <= set(created["headers"])
    assert {"409", "413", "415", "422"} <= set(append["responses"])
    read = op_of(doc, "GET", "/v1/streams/{stream}")
    assert {"from", "limit", "direction"} <= set(params(doc, read, "query"))
    assert "404" in read["responses"]


def entity_routes(entity, ops=("create", "update", "upsert", "delete"), commands=()):
    out = {("GET", f"/v1/{entity}"), ("GET", f"/v1/{entity}/{{key}}"),
           ("GET", f"/v1/{entity}/{{key}}/history")}
    if "create" in ops:
        out.add(("POST", f"/v1/{entity}"))
    for op, m in (("update", "PATCH"), ("upsert", "PUT"), ("delete", "DELETE")):
        if op in ops:
            out.add((m, f"/v1/{entity}/{{key}}"))
    for c in commands:
        out.add(("POST", f"/v1/{entity}/{{key}}/{c}"))
    return out


EXPECTED_ROUTES = {
    "status": CORE_ROUTES | entity_routes("teams") | entity_routes("status_updates", ops=("create",)) | {
        ("POST", "/commands/register-team"), ("POST", "/commands/submit-update"),
        ("GET", "/api/teams"), ("GET", "/api/teams/{team_id}"), ("GET", "/api/updates"),
    },
    "config": CORE_ROUTES | entity_routes("configs") | {
        ("GET", "/config"), ("GET", "/config/{name}"), ("PUT", "/config/{name}"),
        ("DELETE", "/config/{name}"), ("GET", "/config/{name}/history"),
    },
    "kanban": CORE_ROUTES | entity_routes("boards") | entity_routes("columns")
    | entity_routes("tasks", commands=("move", "archive", "reprioritise"))
    | entity_routes("notifications", ops=("create", "delete"), commands=("mark_read",)) | {
        ("GET", "/tasks/archived"), ("POST", "/tasks/{id}/move"), ("POST", "/tasks"),
        ("PATCH", "/tasks/{id}"), ("POST", "/tasks/{id}/delete"), ("GET", "/tasks/{id}"),
        ("POST", "/notifications/{id}/read"),
    },
    "types": CORE_ROUTES | entity_routes("people", commands=("promote", "deactivate"))
    | entity_routes("notes", ops=("create",)) | {
        ("GET", "/people"), ("GET", "/people/{who}"), ("PUT", "/people/{who}"),
        ("POST", "/people/{who}/promote"),
    },
}


@pytest.mark.parametrize("kind", ["status", "config", "kanban", "types"])
def test_app_documents_exactly_its_routes(docs, kind):
    got = pairs(docs(kind))
    want = EXPECTED_ROUTES[kind]
    assert got == want, f"missing {sorted(want - got)}, unexpected {sorted(got - want)}"


def test_paths_differing_only_in_parameter_names_are_one_path(docs):
    """GET /people/{who} and PUT /people/{handle} are one OpenAPI path (3.1
    forbids templates that differ only in parameter names)."""
    doc = docs("types")
    assert "/people/{handle}" not in doc["paths"]
    assert {"get", "put"} <= set(doc["paths"]["/people/{who}"])


def _probe_path(path):
    return re.sub(r"\{component\}", "store", re.sub(r"\{(?!component)[^}]+\}", "probe-key", path))


def _answered(srv, method, path):
    """The response to method on path with a JSON body {} for writes."""
    kw = {}
    if method in ("POST", "PUT", "PATCH"):
        kw = {"data": b"{}", "headers": {"Content-Type": "application/json"}}
    return srv.request(method, path, **kw)


def _routed(resp):
    """False when the router did not know the route (404 no route / 405)."""
    if resp.status_code == 405:
        return False
    if resp.status_code == 404 and "no route" in resp.json().get("detail", ""):
        return False
    return True


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_documented_route_is_answered(servers, docs, kind):
    srv = servers(kind)
    for method, path, _ in sorted(operations(docs(kind)), key=lambda t: t[0] == "DELETE"):
        r = _answered(srv, method, _probe_path(path))
        assert _routed(r), f"{method} {path} is documented but not routed: {r.status_code} {r.text[:200]}"


@pytest.mark.parametrize("kind,method,path", [
    ("status", "PATCH", "/v1/status_updates/x"), ("status", "PUT", "/v1/status_updates/x"),
    ("status", "DELETE", "/v1/status_updates/x"), ("status", "POST", "/v1/teams/x/nope"),
    ("kanban", "PATCH", "/v1/notifications/x"), ("types", "PATCH", "/v1/notes/x"),
    ("none", "GET", "/v1/teams"),
])
def test_undocumented_routes_are_not_answered(servers, docs, kind, method, path):
    r = _answered(servers(kind), method, path)
    assert not _routed(r), f"{method} {path} answered {r.status_code} but is not documented"


# --------------------------------------------------------------------------
# operations: parameters, bodies, responses


def test_generated_operations(docs):
    doc = docs("status")
    ids = {op["operationId"]: (m, p) for m, p, op in operations(doc)}
    for action, (m, p) in {"list": ("GET", "/v1/teams"), "create": ("POST", "/v1/teams"),
                           "get": ("GET", "/v1/teams/{key}"), "update": ("PATCH", "/v1/teams/{key}"),
                           "upsert": ("PUT", "/v1/teams/{key}"), "delete": ("DELETE", "/v1/teams/{key}"),
                           "history": ("GET", "/v1/teams/{key}/history")}.items():
        assert ids.get(f"teams.{action}") == (m, p), action
    assert all(i.startswith("app.") for i, (m, p) in ids.items() if not p.startswith(("/v1/", "/health",
               "/ready", "/internal/", "/metrics", "/openapi.json")))

    # list: limit with its bounds, after, sort, one filter per filterable name
    lst = op_of(doc, "GET", "/v1/teams")
    q = params(doc, lst, "query")
    assert q["limit"]["schema"]["maximum"] == 1000 and q["limit"]["schema"]["default"] == 50
    assert q["limit"]["schema"]["minimum"] == 1
    assert {"after", "sort", "team_id", "name", "slack_channel", "poll_schedule", "version", "created_at",
            "updated_at"} <= set(q)
    assert FILTER_OPS in q["name"]["description"]
    assert "name=value or name=op.value" in q["name"]["description"]
    ok = response_of(doc, lst, 200)
    assert "Link" in ok["headers"]
    assert ok["content"]["application/json"]["schema"] == {"type": "array",
                                                           "items": {"$ref": "#/components/schemas/teams"}}

    # get: at and version; ETag
    get = op_of(doc, "GET", "/v1/teams/{key}")
    q = params(doc, get, "query")
    assert q["at"]["schema"].get("format") == "date-time"
    assert q["version"]["schema"]["type"] == "integer"
    assert "ETag" in response_of(doc, get, 200)["headers"]
    assert "404" in get["responses"]

    # create: the create schema, 201 with ETag and Location
    create = op_of(doc, "POST", "/v1/teams")
    assert create["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/teams.create"}
    assert create["requestBody"]["required"] is True
    assert {"ETag", "Location"} <= set(response_of(doc, create, 201)["headers"])
    assert {"201", "400", "409", "413", "415", "422"} <= set(create["responses"])
    assert "200" not in create["responses"]

    # writes by key: If-Match, 200 with ETag, 412
    for m in ("PATCH", "PUT", "DELETE"):
        op = op_of(doc, m, "/v1/teams/{key}")
        assert "If-Match" in params(doc, op, "header"), m
        assert "ETag" in response_of(doc, op, 200)["headers"], m
        assert "412" in op["responses"], m
    assert op_of(doc, "PATCH", "/v1/teams/{key}")["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/teams.update"}
    assert "requestBody" not in op_of(doc, "DELETE", "/v1/teams/{key}")

    # history: array of Event
    hist = response_of(doc, op_of(doc, "GET", "/v1/teams/{key}/history"), 200)
    assert hist["content"]["application/json"]["schema"] == {"type": "array",
                                                             "items": {"$ref": "#/components/schemas/Event"}}


def test_app_route_options(docs):
    doc = docs("status")
    q = params(doc, op_of(doc, "GET", "/api/updates"), "query")
    assert q["limit"]["schema"]["maximum"] == 100 and q["limit"]["schema"]["default"] == 20
    assert q["sort"]["schema"]["default"] == "-created_at"
    assert "team_id" in q and "content" in q
    q = params(doc, op_of(doc, "GET", "/api/teams"), "query")
    assert q["limit"]["schema"]["maximum"] == 1000 and q["limit"]["schema"]["default"] == 1000
    get = op_of(doc, "GET", "/api/teams/{team_id}")
    assert params(doc, get, "path")["team_id"]["schema"]["type"] == "string"
    assert op_of(doc, "POST", "/commands/register-team")["requestBody"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/teams.create"}
    assert "201" in op_of(doc, "POST", "/commands/submit-update")["responses"]

    doc = docs("config")
    lst = response_of(doc, op_of(doc, "GET", "/config"), 200)["content"]["application/json"]["schema"]
    assert lst["type"] == "array"
    item = deref(doc, lst["items"])
    assert set(item["properties"]) == {"name", "value", "version", "updated_at"}
    q = params(doc, op_of(doc, "GET", "/config"), "query")
    assert "value" not in q, "json fields cannot be filtered on"
    assert q["sort"]["schema"]["default"] == "name"
    put = op_of(doc, "PUT", "/config/{name}")
    assert put["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/configs.create"}  # PUT replaces: the whole state
    assert "If-Match" in params(doc, put, "header")
    assert "201" not in put["responses"]  # an app route answers 200 when it creates, too
    v1put = op_of(doc, "PUT", "/v1/configs/{key}")
    assert "201" in v1put["responses"] and "200" in v1put["responses"]
    hist = response_of(doc, op_of(doc, "GET", "/config/{name}/history"), 200)
    assert hist["content"]["application/json"]["schema"]["items"] == {"$ref": "#/components/schemas/Event"}


def test_commands(docs):
    doc = docs("kanban")
    move = op_of(doc, "POST", "/v1/tasks/{key}/move")
    assert move["operationId"] == "tasks.move"
    assert move["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/tasks.move"}
    assert move["requestBody"]["required"] is True
    assert {"200", "404", "409", "412", "422"} <= set(move["responses"])
    archive = op_of(doc, "POST", "/v1/tasks/{key}/archive")
    assert archive["requestBody"]["required"] is False, "no input: the body may be left out"
    s = schema(doc, "tasks.move")
    assert s["required"] == ["column_id"] and s["additionalProperties"] is False
    assert s["properties"]["column_id"]["type"] == "string"
    s = schema(doc, "tasks.reprioritise")
    assert s["properties"]["priority"]["enum"] == ["low", "high"]
    assert s["properties"]["reason"]["maxLength"] == 500
    app_move = op_of(doc, "POST", "/tasks/{id}/move")
    assert app_move["operationId"].startswith("app.post.")
    assert app_move["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/tasks.move"}
    filtered = op_of(doc, "GET", "/tasks/archived")
    assert "archived" in filtered.get("description", "")
    fields = response_of(doc, op_of(doc, "GET", "/tasks/{id}"), 200)["content"]["application/json"]["schema"]
    assert set(fields["properties"]) == {"task_id", "title", "column_id"}


# --------------------------------------------------------------------------
# entity schemas follow the definition


def test_read_schema_types(docs):
    doc = docs("types")
    s = schema(doc, "people")
    props = s["properties"]
    fields = [f for f, spec in TYPES_APP["entities"]["people"]["fields"].items() if not spec.get("private")]
    assert list(props) == fields + ["version", "created_at", "updated_at"]
    assert "password_hash" not in props, "private fields are never returned"
    assert {"handle", "version", "created_at", "updated_at"} <= set(s["required"])
    assert s["additionalProperties"] is False

    assert types_of(props["handle"]) == {"string"}
    assert types_of(props["name"]) == {"string"} and props["name"]["maxLength"] == 80
    assert types_of(props["nick"]) == {"string", "null"} and props["nick"]["maxLength"] == 255
    assert types_of(props["bio"]) == {"string", "null"} and "maxLength" not in props["bio"]
    assert props["motto"]["maxLength"] == 500
    assert types_of(props["age"]) == {"integer", "null"}
    assert props["age"]["minimum"] == 0 and props["age"]["maximum"] == 150
    assert types_of(props["score"]) == {"number", "null"}
    assert props["score"]["minimum"] == -1.5 and props["score"]["maximum"] == 1.5
    assert types_of(props["active"]) == {"boolean"}
    assert types_of(props["born"]) == {"string", "null"} and props["born"]["format"] == "date-time"
    assert set(props["role"]["enum"]) == {"admin", "member", None}
    assert "type" not in props["settings"], "json fields take any value"
    assert types_of(props["manager"]) == {"string", "null"}
    assert "key of people" in props["manager"]["description"]
    assert types_of(props["digest"]) == {"string", "null"}
    assert props["email"]["format"] == "email" and props["email"]["maxLength"] == 254
    assert props["version"]["type"] == "integer"
    assert props["created_at"] == {"type": "string", "format": "date-time"}


def test_create_schema(docs):
    doc = docs("types")
    s = schema(doc, "people.create")
    props = s["properties"]
    assert s["additionalProperties"] is False
    assert set(props) == set(TYPES_APP["entities"]["people"]["fields"]), "every writable field, the key too"
    # required: required by the definition and without a default; the key
    # is required because the definition says so
    assert sorted(s["required"]) == ["handle", "name"]
    assert props["password_hash"]["writeOnly"] is True
    assert props["score"]["default"] == 0.25 and props["role"]["default"] == "member"
    assert props["handle"]["maxLength"] == 40
    assert types_of(props["name"]) == {"string"}
    assert types_of(props["active"]) == {"boolean", "null"}, "null means: take the default"
    assert props["active"]["default"] is True
    for v in ("version", "created_at", "updated_at"):
        assert v not in props
    notes = schema(doc, "notes.create")
    assert notes["required"] == ["body"]
    assert "id" in notes["properties"] and types_of(notes["properties"]["id"]) == {"string", "null"}
    assert notes["properties"]["secret"]["writeOnly"] is True
    assert "secret" not in schema(doc, "notes")["properties"]
    assert "notes.update" not in doc["components"]["schemas"], "notes cannot be updated"


def test_update_schema(docs):
    doc = docs("types")
    s = schema(doc, "people.update")
    props = s["properties"]
    assert "required" not in s or s["required"] == []
    assert s["additionalProperties"] is False
    assert types_of(props["name"]) == {"string"}, "a required field cannot be cleared"
    assert types_of(props["nick"]) == {"string", "null"}
    assert types_of(props["age"]) == {"integer", "null"}
    assert set(props["role"]["enum"]) == {"admin", "member", None}
    assert props["password_hash"]["writeOnly"] is True


def test_command_input_schema(docs):
    doc = docs("types")
    s = schema(doc, "people.promote")
    assert s["required"] == ["role"]
    assert s["properties"]["role"]["enum"] == ["admin"]
    assert s["properties"]["note"]["maxLength"] == 100
    assert s["additionalProperties"] is False
    s = schema(doc, "people.deactivate")
    assert set(s["properties"]) == {"handle"}
    assert op_of(doc, "POST", "/people/{who}/promote")["requestBody"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/people.promote"}


def test_status_app_schemas(docs):
    doc = docs("status")
    teams = schema(doc, "teams")
    assert teams["properties"]["name"]["maxLength"] == 255
    assert types_of(teams["properties"]["poll_schedule"]) == {"string", "null"}
    create = schema(doc, "teams.create")
    assert sorted(create["required"]) == ["name", "slack_channel", "team_id"]
    upd = schema(doc, "status_updates")
    assert "key of teams" in upd["properties"]["team_id"]["description"]
    assert "maxLength" not in upd["properties"]["content"], "text: no maxLength unless set"
    assert sorted(schema(doc, "status_updates.create")["required"]) == ["author", "content", "slack_user",
                                                                         "team_id"]
    assert "status_updates.update" not in doc["components"]["schemas"]


# --------------------------------------------------------------------------
# the real responses match the document


def _json(srv, method, path, body=None, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return srv.request(method, path, data=json.dumps(body).encode() if body is not None else None, headers=h)


def test_core_responses_match_document(servers, docs):
    srv, doc = servers("none"), docs("none")
    check_response(doc, "GET", "/health", srv.get("/health"))
    check_response(doc, "GET", "/ready", srv.get("/ready"))
    check_response(doc, "GET", "/internal/health/{component}", srv.get("/internal/health/store"))
    check_response(doc, "GET", "/internal/health/{component}", srv.get("/internal/health/http"))
    check_response(doc, "GET", "/internal/health/{component}", srv.get("/internal/health/nope"))
    check_response(doc, "GET", "/metrics", srv.get("/metrics"))
    stream = new_stream()
    check_response(doc, "POST", "/v1/streams/{stream}",
                   srv.append(stream, [{"type": "A", "data": {"n": 1}}], expected_version=0))
    check_response(doc, "POST", "/v1/streams/{stream}", srv.append(stream, [{"type": "A"}], expected_version=0))
    check_response(doc, "POST", "/v1/streams/{stream}", srv.append(stream, []))
    check_response(doc, "POST", "/v1/streams/{stream}",
                   srv.post(f"/v1/streams/{stream}", data=b"{", headers={"Content-Type": "application/json"}))
    check_response(doc, "POST", "/v1/streams/{stream}",
                   srv.post(f"/v1/streams/{stream}", data=b"{}", headers={"Content-Type": "text/plain"}))
    check_response(doc, "GET", "/v1/streams/{stream}", srv.get(f"/v1/streams/{stream}"))
    check_response(doc, "GET", "/v1/streams/{stream}", srv.get("/v1/streams/nothing-here"))
    check_response(doc, "GET", "/v1/streams/{stream}", srv.get(f"/v1/streams/{stream}?limit=0"))
    check_response(doc, "GET", "/v1/events", srv.get("/v1/events"))
    check_response(doc, "GET", "/v1/events", srv.get("/v1/events?after=x"))
    check_response(doc, "GET", "/openapi.json", srv.get("/openapi.json"))


def test_status_app_responses_match_document(servers, docs):
    srv, doc = servers("status"), docs("status")
    team = {"team_id": "t-1", "name": "Platform", "slack_channel": "#platform", "poll_schedule": "0 9 * * MON-FRI"}
    body = check_response(doc, "POST", "/commands/register-team", _json(srv, "POST", "/commands/register-team", team))
    assert body["team_id"] == "t-1"
    check_response(doc, "POST", "/commands/register-team", _json(srv, "POST", "/commands/register-team", team))
    check_response(doc, "POST", "/v1/teams", _json(srv, "POST", "/v1/teams", {"name": 3}))
    check_response(doc, "POST", "/v1/teams", srv.post("/v1/teams", data=b"{}", headers={"Content-Type": "text/plain"}))
    check_response(doc, "POST", "/v1/teams", _json(srv, "POST", "/v1/teams", {"team_id": "t-2", "name": "Two",
                                                                              "slack_channel": "#two"}))
    upd = {"team_id": "t-1", "content": "all good", "author": "ann", "slack_user": "U1"}
    check_response(doc, "POST", "/commands/submit-update", _json(srv, "POST", "/commands/submit-update", upd))
    check_response(doc, "GET", "/api/teams", srv.get("/api/teams"))
    check_response(doc, "GET", "/api/teams/{team_id}", srv.get("/api/teams/t-1"))
    check_response(doc, "GET", "/api/teams/{team_id}", srv.get("/api/teams/nope"))
    check_response(doc, "GET", "/api/updates", srv.get("/api/updates"))
    check_response(doc, "GET", "/api/updates", srv.get("/api/updates?limit=101"))
    check_response(doc, "GET", "/v1/teams", srv.get("/v1/teams?limit=1&name=like.plat*"))
    check_response(doc, "GET", "/v1/teams", srv.get("/v1/teams?nosuchfield=1"))
    check_response(doc, "GET", "/v1/teams/{key}", srv.get("/v1/teams/t-1?version=1"))
    check_response(doc, "GET", "/v1/teams/{key}", srv.get("/v1/teams/t-1?at=bad"))
    check_response(doc, "PATCH", "/v1/teams/{key}", _json(srv, "PATCH", "/v1/teams/t-1", {"poll_schedule": None},
                                                          headers={"If-Match": '"1"'}))
    check_response(doc, "PATCH", "/v1/teams/{key}", _json(srv, "PATCH", "/v1/teams/t-1", {"name": "X"},
                                                          headers={"If-Match": '"1"'}))
    check_response(doc, "PATCH", "/v1/teams/{key}", _json(srv, "PATCH", "/v1/teams/t-1", {"name": None}))
    check_response(doc, "PATCH", "/v1/teams/{key}", _json(srv, "PATCH", "/v1/teams/nope", {"name": "X"}))
    check_response(doc, "PUT", "/v1/teams/{key}", _json(srv, "PUT", "/v1/teams/t-3", {"name": "Three",
                                                                                    "slack_channel": "#3"}))
    check_response(doc, "GET", "/v1/teams/{key}/history", srv.get("/v1/teams/t-1/history"))
    check_response(doc, "GET", "/v1/teams/{key}/history", srv.get("/v1/teams/nope/history"))
    check_response(doc, "DELETE", "/v1/teams/{key}", srv.request("DELETE", "/v1/teams/t-3"))
    check_response(doc, "DELETE", "/v1/teams/{key}", srv.request("DELETE", "/v1/teams/t-3"))
    check_response(doc, "GET", "/v1/status_updates", srv.get("/v1/status_updates"))


def test_config_api_responses_match_document(servers, docs):
    srv, doc = servers("config"), docs("config")
    check_response(doc, "PUT", "/config/{name}", _json(srv, "PUT", "/config/db.url", {"value": {"host": "x"}}))
    check_response(doc, "PUT", "/config/{name}", _json(srv, "PUT", "/config/db.url", {"value": 3}))
    check_response(doc, "PUT", "/config/{name}", _json(srv, "PUT", "/config/other", {}))
    check_response(doc, "GET", "/config", srv.get("/config"))
    check_response(doc, "GET", "/config/{name}", srv.get("/config/db.url"))
    check_response(doc, "GET", "/config/{name}/history", srv.get("/config/db.url/history"))
    check_response(doc, "DELETE", "/config/{name}", srv.request("DELETE", "/config/db.url"))
    check_response(doc, "PUT", "/config/{name}", _json(srv, "PUT", "/config/db.url", {"value": 4}))


def test_types_app_responses_match_document(servers, docs):
    srv, doc = servers("types"), docs("types")
    person = {"handle": "ann", "name": "Ann", "bio": "line one\nline two", "age": 40, "born": "1986-02-03",
              "settings": {"theme": "dark"}, "digest": "@daily", "email": "Ann@Example.org",
              "password_hash": "secret"}
    body = check_response(doc, "POST", "/v1/people", _json(srv, "POST", "/v1/people", person))
    assert "password_hash" not in body
    check_response(doc, "POST", "/v1/people", _json(srv, "POST", "/v1/people", {"handle": "bob", "name": "Bob",
                                                                               "manager": "ann", "score": None}))
    check_response(doc, "POST", "/v1/people", _json(srv, "POST", "/v1/people", {"name": "no key"}))
    check_response(doc, "GET", "/people", srv.get("/people"))
    check_response(doc, "GET", "/people", srv.get("/people?limit=21"))
    check_response(doc, "GET", "/people/{who}", srv.get("/people/ann"))
    check_response(doc, "PUT", "/people/{who}", _json(srv, "PUT", "/people/cy", {"name": "Cy", "role": "admin"}))
    check_response(doc, "POST", "/people/{who}/promote", _json(srv, "POST", "/people/ann/promote", {"role": "admin"}))
    check_response(doc, "POST", "/people/{who}/promote", _json(srv, "POST", "/people/ann/promote", {"role": "x"}))
    check_response(doc, "POST", "/v1/people/{key}/deactivate", srv.post("/v1/people/ann/deactivate"))
    check_response(doc, "POST", "/v1/people/{key}/deactivate", srv.post("/v1/people/ann/deactivate"))
    check_response(doc, "GET", "/v1/people/{key}", srv.get("/v1/people/ann"))
    check_response(doc, "POST", "/v1/notes", _json(srv, "POST", "/v1/notes", {"body": "x", "secret": [1]}))


def test_documented_examples_of_the_document_validate(docs):
    """Every default in the document is valid for its own schema."""
    doc = docs("types")
    for where, node in walk(doc):
        if "default" in node and ("type" in node or "enum" in node):
            check_value(doc, node, node["default"], where)


# --------------------------------------------------------------------------
# auth


def test_auth_applies_to_the_document_too():
    with running_server(env={"API_SECRET": "s3cret"}, args=["--app", STATUS_APP], name="openapi-auth") as srv:
        expect_problem(srv.get("/openapi.json"), 401, "unauthorized")
        doc = fetch_doc(srv, headers={"Authorization": "Bearer s3cret"})
        assert doc["components"]["securitySchemes"]["bearer"] == {
            "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"][
                "description"]}
        assert doc["security"] == [{"bearer": []}]
        for m, p in (("GET", "/health"), ("GET", "/ready")):
            op = op_of(doc, m, p)
            assert op["security"] == [], p
            assert "401" not in op["responses"], p
        for m, p, op in operations(doc):
            if p not in ("/health", "/ready"):
                assert "security" not in op, p
                assert "401" in op["responses"], f"{m} {p}"
        unauth = response_of(doc, op_of(doc, "GET", "/v1/teams"), 401)
        assert "WWW-Authenticate" in unauth["headers"]
        check_response(doc, "GET", "/v1/teams", srv.get("/v1/teams"))
        check_response(doc, "GET", "/health", srv.get("/health"))


def test_without_auth_no_security_is_declared(docs):
    doc = docs("status")
    assert "security" not in doc
    assert "securitySchemes" not in doc["components"]
    assert all("401" not in op["responses"] for _, _, op in operations(doc))


# --------------------------------------------------------------------------
# third-party validation, when the Debian packages happen to be installed


def _installed(pkg):
    try:
        r = subprocess.run(["dpkg", "-s", pkg], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0 and "Status: install ok installed" in r.stdout


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_validates_with_third_party_validator(docs, kind):
    doc = docs(kind)
    if _installed("python3-openapi-spec-validator"):
        from openapi_spec_validator import validate_spec  # noqa: PLC0415
        validate_spec(doc)
    elif _installed("python3-jsonschema"):
        from jsonschema import Draft202012Validator  # noqa: PLC0415
        for name, s in doc["components"]["schemas"].items():
            Draft202012Validator.check_schema(s)
    else:
        pytest.skip("neither python3-openapi-spec-validator nor python3-jsonschema is installed (dpkg)")
