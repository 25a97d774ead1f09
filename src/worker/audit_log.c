/* audit_log.c - the audit-log effect; see audit_log.h. */
#include "worker/audit_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "worker/event_body.h"

typedef struct audit {
    char *path;
    int64_t max_bytes, max_files;
    const engine_t *eng;
    int fd;       /* -1 until the first event */
    int64_t size; /* bytes in the current file */
    bool dirty;   /* written since the last fdatasync */
} audit_t;

static int open_file(audit_t *a, chr_err_t *err)
{
    a->fd = open(a->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (a->fd < 0)
        return chr_fail(err, CHR_ESTORE, "audit_log.path", "cannot open %s: %s", a->path,
                        strerror(errno));
    struct stat st;
    a->size = fstat(a->fd, &st) == 0 ? (int64_t)st.st_size : 0;
    return CHR_OK;
}

/* path.<i> into out. */
static void numbered(const audit_t *a, int64_t i, char *out, size_t size)
{
    snprintf(out, size, "%s.%lld", a->path, (long long)i);
}

/* Closes the full file (durably) and shifts path.N names up by one. */
static int rotate(audit_t *a, chr_err_t *err)
{
    if (fdatasync(a->fd) != 0 || close(a->fd) != 0) {
        a->fd = -1;
        return chr_fail(err, CHR_ESTORE, "audit_log.path", "cannot finish %s: %s", a->path,
                        strerror(errno));
    }
    a->fd = -1;
    a->dirty = false;
    size_t n = strlen(a->path) + 24;
    char *from = malloc(n), *to = malloc(n);
    if (!from || !to) {
        free(from);
        free(to);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    numbered(a, a->max_files, to, n);
    unlink(to);
    for (int64_t i = a->max_files - 1; i >= 1; i--) {
        numbered(a, i, from, n);
        numbered(a, i + 1, to, n);
        if (rename(from, to) != 0 && errno != ENOENT) break;
    }
    numbered(a, 1, to, n);
    int rc = CHR_OK;
    if (rename(a->path, to) != 0)
        rc = chr_fail(err, CHR_ESTORE, "audit_log.path", "cannot rotate %s: %s", a->path,
                      strerror(errno));
    free(from);
    free(to);
    log_at(LOG_INFO, "audit log rotated", LOG_S("path", a->path));
    return rc ? rc : open_file(a, err);
}

static int audit_deliver(void *user, const event_t *ev, const consumer_delivery_t *d,
                         chr_err_t *err)
{
    (void)d;
    audit_t *a = user;
    if (a->fd < 0 && open_file(a, err) != CHR_OK) return err->code;
    char *body = worker_event_body(a->eng, ev);
    if (!body) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    size_t len = strlen(body);
    char *line = realloc(body, len + 2);
    if (!line) {
        free(body);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    line[len++] = '\n';
    line[len] = '\0';
    int rc = CHR_OK;
    if (a->size > 0 && a->size + (int64_t)len > a->max_bytes) rc = rotate(a, err);
    for (size_t off = 0; rc == CHR_OK && off < len;) {
        ssize_t w = write(a->fd, line + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            rc = chr_fail(err, CHR_ESTORE, "audit_log.path", "cannot write %s: %s", a->path,
                          strerror(w < 0 ? errno : ENOSPC));
            /* no half line stays behind for the retry to follow */
            if (ftruncate(a->fd, (off_t)a->size) != 0) {
                close(a->fd);
                a->fd = -1;
            }
            break;
        }
        off += (size_t)w;
        if (off == len) a->size += (int64_t)len;
    }
    if (rc == CHR_OK) a->dirty = true;
    free(line);
    return rc;
}

static int audit_flush(void *user, chr_err_t *err)
{
    audit_t *a = user;
    if (!a->dirty || a->fd < 0) return CHR_OK;
    if (fdatasync(a->fd) != 0)
        return chr_fail(err, CHR_ESTORE, "audit_log.path", "cannot sync %s: %s", a->path,
                        strerror(errno));
    a->dirty = false;
    return CHR_OK;
}

static void audit_free(void *user)
{
    audit_t *a = user;
    if (!a) return;
    if (a->fd >= 0) close(a->fd);
    free(a->path);
    free(a);
}

int audit_log_effect_new(const audit_log_def_t *def, const char *path, const engine_t *eng,
                         consumer_effect_t *out, chr_err_t *err)
{
    audit_t *a = calloc(1, sizeof *a);
    if (!a || !(a->path = strdup(path))) {
        free(a);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    a->fd = -1;
    a->max_bytes = def->max_bytes;
    a->max_files = def->max_files;
    a->eng = eng;
    *out = (consumer_effect_t){
        .deliver = audit_deliver, .flush = audit_flush, .free = audit_free, .user = a};
    return CHR_OK;
}
