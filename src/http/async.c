/* async.c - suspending a request while another thread works for it; see
 * async.h for the protocol and why no wake-up is lost. */
#include "http/async.h"

#include <assert.h>
#include <microhttpd.h>

#include "util/log.h"

bool http_async_begin(http_req_t *req, http_cont_fn cont, void *arg)
{
    http_ctx_t *ctx = req->ctx;
    if (!req->in_async) {
        /* Announce before checking the gate (both seq_cst): either the
         * closer sees us in async_active and waits, or we see it closed. */
        atomic_fetch_add(&ctx->async_active, 1);
        req->in_async = true;
        if (atomic_load(&ctx->async_closed)) {
            http_async_end(req);
            return false;
        }
    }
    assert(atomic_load_explicit(&req->wait_state, memory_order_relaxed) == HTTP_WAIT_NONE);
    req->cont = cont;
    req->cont_arg = arg;
    atomic_store(&req->wait_state, HTTP_WAIT_ARMED);
    return true;
}

void http_async_cancel(http_req_t *req)
{
    req->cont = NULL;
    req->cont_arg = NULL;
    atomic_store(&req->wait_state, HTTP_WAIT_NONE);
}

void http_async_wake(http_req_t *req)
{
    struct MHD_Connection *conn = req->conn; /* read before the swap frees us to go */
    int prev = atomic_exchange(&req->wait_state, HTTP_WAIT_WOKEN);
    assert(prev == HTTP_WAIT_ARMED || prev == HTTP_WAIT_SUSPENDED);
    if (prev == HTTP_WAIT_SUSPENDED) MHD_resume_connection(conn);
}

bool http_async_park(http_req_t *req)
{
    if (atomic_load(&req->wait_state) == HTTP_WAIT_WOKEN) return false;
    MHD_suspend_connection(req->conn);
    int expected = HTTP_WAIT_ARMED;
    if (!atomic_compare_exchange_strong(&req->wait_state, &expected, HTTP_WAIT_SUSPENDED)) {
        /* Woken between the check and the suspend: the waker did not resume
         * (it saw ARMED), so we do; MHD calls the access handler again. */
        assert(expected == HTTP_WAIT_WOKEN);
        MHD_resume_connection(req->conn);
    }
    return true;
}

http_cont_fn http_async_take(http_req_t *req, void **arg)
{
    /* The acquire half of the waker's swap: what the other thread wrote
     * for us (results, positions, errors) is visible from here on. */
    int state = atomic_load(&req->wait_state);
    assert(state == HTTP_WAIT_WOKEN);
    (void)state;
    http_cont_fn cont = req->cont;
    *arg = req->cont_arg;
    req->cont = NULL;
    req->cont_arg = NULL;
    atomic_store_explicit(&req->wait_state, HTTP_WAIT_NONE, memory_order_relaxed);
    return cont;
}

void http_async_end(http_req_t *req)
{
    if (!req->in_async) return;
    req->in_async = false;
    http_ctx_t *ctx = req->ctx;
    if (atomic_fetch_sub(&ctx->async_active, 1) == 1 && atomic_load(&ctx->async_closed)) {
        pthread_mutex_lock(&ctx->drain_lock);
        pthread_cond_broadcast(&ctx->async_cond);
        pthread_mutex_unlock(&ctx->drain_lock);
    }
}

void http_async_close(http_ctx_t *ctx)
{
    atomic_store(&ctx->async_closed, true);
    long left = atomic_load(&ctx->async_active);
    if (left > 0)
        log_at(LOG_WARN, "waiting for requests whose writes are queued", LOG_I("requests", left));
    pthread_mutex_lock(&ctx->drain_lock);
    while (atomic_load(&ctx->async_active) > 0)
        pthread_cond_wait(&ctx->async_cond, &ctx->drain_lock);
    pthread_mutex_unlock(&ctx->drain_lock);
}
