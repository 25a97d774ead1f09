/* request.c - per-request context, arena, query and body; see request.h. */
#include "http/request.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/uuid.h"
#include "http/uri.h"

#define REQ_INLINE 4096     /* arena bytes inside the request allocation */
#define REQ_BLOCK_MIN 8192  /* smallest extra arena block */
#define REQ_CACHE_MAX 16    /* recycled requests kept per thread */
#define BODY_CHUNK_MIN 4096 /* first body buffer when the length is unknown */

/* Recycled requests, per thread: MHD completes a request on the worker
 * thread that handled it, so a thread-local free list needs no lock. The
 * key's destructor frees the list when a worker exits. */
typedef struct req_cache {
    http_req_t *items[REQ_CACHE_MAX];
    size_t n;
} req_cache_t;

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_destroy(void *p)
{
    req_cache_t *c = p;
    for (size_t i = 0; i < c->n; i++)
        free(c->items[i]);
    free(c);
}

static void cache_init(void)
{
    pthread_key_create(&cache_key, cache_destroy);
}

static req_cache_t *cache_get(void)
{
    pthread_once(&cache_once, cache_init);
    req_cache_t *c = pthread_getspecific(cache_key);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (c && pthread_setspecific(cache_key, c) != 0) {
            free(c);
            c = NULL;
        }
    }
    return c;
}

int64_t http_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void arena_reset(http_req_t *req)
{
    http_arena_block_t *b = req->arena.blocks;
    while (b) {
        http_arena_block_t *next = b->next;
        free(b);
        b = next;
    }
    req->arena.blocks = NULL;
    req->arena.cur = (char *)(req + 1);
    req->arena.left = REQ_INLINE;
}

void *http_req_alloc(http_req_t *req, size_t n)
{
    http_arena_t *a = &req->arena;
    size_t pad = (16 - ((uintptr_t)a->cur & 15)) & 15;
    if (n > SIZE_MAX - 32) return NULL;
    if (pad + n > a->left) {
        size_t cap = n + 16 > REQ_BLOCK_MIN ? n + 16 : REQ_BLOCK_MIN;
        http_arena_block_t *b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->cap = cap;
        b->next = a->blocks;
        a->blocks = b;
        a->cur = b->data;
        a->left = cap;
        pad = (16 - ((uintptr_t)a->cur & 15)) & 15;
    }
    char *p = a->cur + pad;
    a->cur = p + n;
    a->left -= pad + n;
    return p;
}

char *http_req_strndup(http_req_t *req, const char *s, size_t n)
{
    char *d = http_req_alloc(req, n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

http_req_t *http_req_new(http_ctx_t *ctx, const char *uri)
{
    req_cache_t *c = cache_get();
    http_req_t *req = c && c->n ? c->items[--c->n] : malloc(sizeof *req + REQ_INLINE);
    if (!req) return NULL;
    memset(req, 0, sizeof *req);
    atomic_init(&req->wait_state, 0);
    req->ctx = ctx;
    req->start_ns = http_now_ns();
    arena_reset(req);
    if (!uri) uri = "";
    size_t n = strlen(uri);
    req->target = http_req_strndup(req, uri, n);
    if (!req->target) {
        http_req_release(req);
        return NULL;
    }
    const char *q = memchr(req->target, '?', n);
    req->path = req->target;
    req->path_len = q ? (size_t)(q - req->target) : n;
    if (q) {
        req->query = q + 1;
        req->query_len = n - req->path_len - 1;
    }
    return req;
}

bool http_req_on_release(http_req_t *req, void (*fn)(void *arg), void *arg)
{
    http_cleanup_t *c = http_req_alloc(req, sizeof *c);
    if (!c) return false;
    c->fn = fn;
    c->arg = arg;
    c->next = req->cleanups;
    req->cleanups = c;
    return true;
}

void http_req_run_cleanups(http_req_t *req)
{
    http_cleanup_t *c = req->cleanups;
    req->cleanups = NULL;
    for (; c; c = c->next)
        c->fn(c->arg);
}

void http_req_release(http_req_t *req)
{
    if (!req) return;
    http_req_run_cleanups(req);
    arena_reset(req);
    req_cache_t *c = cache_get();
    if (c && c->n < REQ_CACHE_MAX)
        c->items[c->n++] = req;
    else
        free(req);
}


void http_req_set_request_id(http_req_t *req)
{
    const char *id = http_req_header(req, "X-Request-Id");
    if (id) {
        size_t n = strlen(id);
        bool ok = n >= 1 && n <= HTTP_REQUEST_ID_MAX;
        for (size_t i = 0; ok && i < n; i++)
            ok = id[i] >= 0x20 && id[i] <= 0x7e;
        if (ok) {
            memcpy(req->request_id, id, n + 1);
            return;
        }
    }
    uuid_v7_generate(req->request_id);
}

const char *http_req_header(http_req_t *req, const char *name)
{
    if (!req->conn) return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

int http_req_query(http_req_t *req, const char *name, const char **value, size_t *len)
{
    *value = NULL;
    if (len) *len = 0;
    if (!req->query) return 0;
    size_t name_len = strlen(name);
    const char *p = req->query, *end = req->query + req->query_len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pair_end = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pair_end - p));
        const char *key_end = eq ? eq : pair_end;
        size_t key_len = (size_t)(key_end - p);
        /* Keys are compared decoded only when they contain escapes. */
        bool match = key_len == name_len && memcmp(p, name, name_len) == 0;
        if (!match && memchr(p, '%', key_len)) {
            char *k = http_req_alloc(req, key_len + 1);
            if (!k) return -1;
            ssize_t kl = http_pct_decode(p, key_len, k, true);
            match = kl == (ssize_t)name_len && memcmp(k, name, name_len) == 0;
        }
        if (match) {
            const char *v = eq ? eq + 1 : pair_end;
            size_t vlen = (size_t)(pair_end - v);
            char *out = http_req_alloc(req, vlen + 1);
            if (!out) return -1;
            ssize_t dl = http_pct_decode(v, vlen, out, true);
            if (dl < 0) return -1;
            *value = out;
            if (len) *len = (size_t)dl;
            return 1;
        }
        p = pair_end + 1;
    }
    return 0;
}

bool http_req_body_begin(http_req_t *req, int64_t content_length)
{
    size_t cap = BODY_CHUNK_MIN;
    if (content_length >= 0 && (uint64_t)content_length <= req->ctx->max_body_bytes)
        cap = (size_t)content_length;
    req->body = http_req_alloc(req, cap + 1);
    if (!req->body) return false;
    req->body_cap = cap;
    req->body_len = 0;
    req->body[0] = '\0';
    return true;
}

bool http_req_body_append(http_req_t *req, const char *data, size_t n)
{
    size_t limit = req->ctx->max_body_bytes;
    if (req->too_big || n > limit - req->body_len) {
        req->too_big = true;
        return false;
    }
    if (!req->body && !http_req_body_begin(req, -1)) return false;
    if (req->body_len + n > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : BODY_CHUNK_MIN;
        while (cap < req->body_len + n)
            cap *= 2;
        if (cap > limit) cap = limit;
        char *nb = http_req_alloc(req, cap + 1);
        if (!nb) return false;
        memcpy(nb, req->body, req->body_len);
        req->body = nb;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, n);
    req->body_len += n;
    req->body[req->body_len] = '\0';
    return true;
}

void http_req_add_header(http_req_t *req, const char *name, const char *value)
{
    if (req->n_headers >= HTTP_MAX_EXTRA_HEADERS) return;
    char *v = http_req_strndup(req, value, strlen(value));
    if (!v) return;
    req->headers[req->n_headers].name = name;
    req->headers[req->n_headers].value = v;
    req->n_headers++;
}
