/*
 * handlers_ops.c - operational endpoints: GET /health (liveness), GET
 * /ready (store reachable, not shutting down), GET
 * /internal/health/{component} (store, http) and GET /metrics.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/projector.h"
#include "http/buf.h"
#include "http/context.h"
#include "http/handlers.h"
#include "http/problem.h"
#include "http/response.h"
#include "store/store.h"
#include "util/metrics.h"

static void respond_static(http_req_t *req, const char *json)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(json), (void *)json, MHD_RESPMEM_PERSISTENT);
    if (r) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    http_respond_mhd(req, MHD_HTTP_OK, r);
}

void http_handle_health(http_req_t *req)
{
    respond_static(req, "{\"status\":\"ok\"}");
}

void http_handle_ready(http_req_t *req)
{
    if (atomic_load(&req->ctx->shutting_down)) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "the server is shutting down");
        return;
    }
    chr_err_t err;
    chr_err_clear(&err);
    if (store_ping(req->ctx->store, &err) != CHR_OK) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "the store is not reachable: %s",
                     err.msg);
        return;
    }
    const engine_t *eng = req->ctx->engine;
    if (!eng || !eng->projector) {
        respond_static(req, "{\"status\":\"ready\"}");
        return;
    }
    /* Split databases: the read model's database must answer too; how far
     * behind it is gets reported, not judged (a lagging read model still
     * serves reads, with staleness headers). */
    projector_status_t st;
    if (projector_status(eng->projector, &st, &err) != CHR_OK) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL,
                     "the projection database is not reachable: %s", err.msg);
        return;
    }
    json_t *pj = json_pack("{s:s, s:I, s:I, s:I, s:b, s:b, s:s, s:I}", "mode", "async", "head",
                           (json_int_t)st.head, "checkpoint", (json_int_t)st.checkpoint, "lag",
                           (json_int_t)st.lag, "runs_here", st.runs_here, "lease_held",
                           st.lease_held, "holder", st.holder, "updated_at",
                           (json_int_t)st.updated_at);
    if (pj && st.last_error[0]) json_object_set_new(pj, "last_error", json_string(st.last_error));
    json_t *body = pj ? json_pack("{s:s, s:o}", "status", "ready", "projector", pj) : NULL;
    if (!body) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    http_respond_json(req, MHD_HTTP_OK, body);
}

void http_handle_component_health(http_req_t *req)
{
    const char *component = http_match_param(&req->match, "component");
    http_buf_t b = HTTP_BUF_INIT;
    if (strcmp(component, "store") == 0) {
        chr_err_t err;
        chr_err_clear(&err);
        int64_t head = 0;
        if (store_ping(req->ctx->store, &err) != CHR_OK ||
            store_head_position(req->ctx->store, &head, &err) != CHR_OK) {
            http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "the store is not healthy: %s",
                         err.msg);
            return;
        }
        http_buf_printf(&b, "{\"component\":\"store\",\"status\":\"ok\",\"head_position\":%lld}",
                        (long long)head);
    } else if (strcmp(component, "http") == 0) {
        http_buf_printf(&b,
                        "{\"component\":\"http\",\"status\":\"ok\",\"in_flight\":%lld,"
                        "\"subscribers\":%lld}",
                        (long long)metrics_in_flight(), (long long)metrics_subscribers());
    } else if (req->ctx->engine && definition_entity(req->ctx->engine->def, component)) {
        /* an entity of the app (a module that used to be a service of its
         * own): healthy when the store that holds its table answers */
        chr_err_t err;
        chr_err_clear(&err);
        if (store_ping(req->ctx->store, &err) != CHR_OK) {
            http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "%s: the store is not healthy: %s",
                         component, err.msg);
            return;
        }
        http_buf_puts(&b, "{\"component\":");
        http_buf_json_str(&b, component, strlen(component));
        http_buf_puts(&b, ",\"status\":\"ok\",\"kind\":\"entity\"}");
    } else {
        http_problem(req, HTTP_P_NOT_FOUND, NULL,
                     "no component \"%s\"; known components: store, http and the app's entities",
                     component);
        return;
    }
    http_respond_buf(req, MHD_HTTP_OK, &b);
}

void http_handle_metrics(http_req_t *req)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    store_counters_t c;
    store_counters(req->ctx->store, &c);
    metrics_render(f, &c);
    if (fclose(f) != 0 || !text) {
        free(text);
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    http_respond(req, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len);
}
