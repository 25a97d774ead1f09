/*
 * async.h - requests that wait for another thread without holding a worker
 * thread: a handler hands work to a thread that will finish it (the store's
 * writer for a group commit, or the command ahead of it on the same
 * entity), libmicrohttpd suspends the connection, and the finishing thread
 * resumes it; MHD then calls the access handler again, which runs the
 * continuation the handler left and answers from the access handler, the
 * only place MHD accepts a response from.
 *
 * The protocol (one wait):
 *   handler:  http_async_begin(req, cont, arg)  - before handing the work off
 *             hand the work off                 - e.g. store_commit_async
 *             return                            - server.c parks the request
 *   other:    ... http_async_wake(req)          - exactly once, never blocks
 *   worker:   cont(req, arg)                    - answers, or begins another wait
 * If the work cannot be handed off after all, http_async_cancel(req).
 *
 * No wake is lost and none comes too early: the request's wait_state is
 * ARMED at begin; parking suspends the connection and only then moves it
 * from ARMED to SUSPENDED (compare-and-swap); the wake swaps in WOKEN and
 * resumes the connection only when it took SUSPENDED. So MHD_resume_connection
 * always follows MHD_suspend_connection, and a wake that comes before the
 * suspend leaves WOKEN behind: the park then runs the continuation at once
 * (or, when the wake slipped in between suspend and swap, resumes the
 * connection itself). MHD neither times out nor completes a suspended
 * connection, so everything a wait uses (request, arena, handler state)
 * stays alive until the wake; after its swap the waking thread must not
 * touch the request again.
 *
 * Not here: what the work is (handlers_streams.c, handlers_entities.c).
 */
#ifndef CHRONICLE_HTTP_ASYNC_H
#define CHRONICLE_HTTP_ASYNC_H

#include <stdbool.h>

#include "http/context.h"
#include "http/request.h"

enum {
    HTTP_WAIT_NONE = 0,  /* no wait begun */
    HTTP_WAIT_ARMED,     /* begun, not suspended, not woken */
    HTTP_WAIT_SUSPENDED, /* the connection is suspended: the wake resumes it */
    HTTP_WAIT_WOKEN,     /* the work is done: run the continuation */
};

/* Begins a wait: cont(req, arg) runs on the request's worker thread once
 * http_async_wake(req) was called. Returns false when the server is
 * shutting down and this request is not already waiting in an earlier step
 * (then nothing was begun: the caller answers 503). */
bool http_async_begin(http_req_t *req, http_cont_fn cont, void *arg);

/* Withdraws the wait just begun: the work was not handed off, no wake will
 * come. The caller answers (or begins another wait) itself. */
void http_async_cancel(http_req_t *req);

/* The work of the current wait is done. Any thread (typically the store's
 * writer, inside its completion callback); never blocks. The caller must
 * not touch req, or anything of the request's, afterwards. */
void http_async_wake(http_req_t *req);

/* server.c, when a handler or continuation returns with a wait begun:
 * suspends the connection unless the wake already came. Returns true when
 * the request is parked (return to MHD; it calls the access handler again
 * after the wake), false when the continuation may run now. */
bool http_async_park(http_req_t *req);

/* server.c, on the access handler call after a wake: the continuation to
 * run (cont, *arg), the wait cleared. */
http_cont_fn http_async_take(http_req_t *req, void **arg);

/* server.c: the request no longer waits and will not again (answered, or
 * completed by MHD): it leaves ctx->async_active. Idempotent. */
void http_async_end(http_req_t *req);

/* server.c at shutdown: refuses new waits, then blocks until every request
 * that waits has been woken and processed, so that MHD_stop_daemon finds no
 * suspended connection. The store keeps committing meanwhile, so this ends
 * once queued writes have; it logs how many it waits for. */
void http_async_close(http_ctx_t *ctx);

#endif
