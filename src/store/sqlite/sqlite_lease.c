/*
 * sqlite_lease.c - leases for the SQLite backend: an exclusive, non-blocking
 * flock(2) on a file beside the database. Every process that opens the same
 * database file sees the same lock; the kernel drops it when the holder's
 * descriptor closes, which includes the process dying, so the next
 * store_lease_try elsewhere takes over. flock locks belong to the open file
 * description, so two leases of one name in one process exclude each other
 * too. A lease cannot be lost while held: check is always true.
 *
 * An in-memory database (":memory:" or a "file:" URI) is private to its
 * process: its leases are taken in a process-wide list instead.
 */
#include "store/sqlite/sqlite_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

typedef struct sq_lease {
    store_lease_t base;
    int fd; /* -1 for an in-memory database's lease */
    struct sq_lease *next;
} sq_lease_t;

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static sq_lease_t *mem_leases; /* in-memory databases' leases held now */

static bool in_memory(const char *path)
{
    return strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0;
}

static int mem_take(store_t *s, const char *name, sq_lease_t *l, chr_err_t *err)
{
    pthread_mutex_lock(&mem_lock);
    for (sq_lease_t *o = mem_leases; o; o = o->next) {
        if (o->base.store == s && strcmp(o->base.name, name) == 0) {
            pthread_mutex_unlock(&mem_lock);
            return chr_fail(err, CHR_ECONFLICT, "lease", "lease \"%s\" is held", name);
        }
    }
    l->base.store = s;
    snprintf(l->base.name, sizeof l->base.name, "%s", name);
    l->next = mem_leases;
    mem_leases = l;
    pthread_mutex_unlock(&mem_lock);
    return CHR_OK;
}

int sq_lease_try(store_t *s, const char *name, store_lease_t **out, chr_err_t *err)
{
    sq_lease_t *l = calloc(1, sizeof *l);
    if (!l) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    l->fd = -1;
    const char *path = sqlite_store_path(s);
    int rc;
    if (in_memory(path)) {
        rc = mem_take(s, name, l, err);
    } else {
        char file[1200];
        snprintf(file, sizeof file, "%s-lease-%s", path, name);
        l->fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (l->fd < 0) {
            rc = chr_fail(err, CHR_ESTORE, "lease", "cannot open %s: %s", file, strerror(errno));
        } else if (flock(l->fd, LOCK_EX | LOCK_NB) != 0) {
            rc = errno == EWOULDBLOCK
                     ? chr_fail(err, CHR_ECONFLICT, "lease", "lease \"%s\" is held", name)
                     : chr_fail(err, CHR_ESTORE, "lease", "cannot lock %s: %s", file,
                                strerror(errno));
        } else {
            rc = CHR_OK;
        }
    }
    if (rc) {
        if (l->fd >= 0) close(l->fd);
        free(l);
        return rc;
    }
    *out = &l->base;
    return CHR_OK;
}

bool sq_lease_check(store_lease_t *base)
{
    (void)base;
    return true;
}

void sq_lease_release(store_lease_t *base)
{
    sq_lease_t *l = (sq_lease_t *)base;
    if (l->fd >= 0) {
        close(l->fd); /* drops the flock; the file stays for the next holder */
    } else {
        pthread_mutex_lock(&mem_lock);
        for (sq_lease_t **p = &mem_leases; *p; p = &(*p)->next) {
            if (*p == l) {
                *p = l->next;
                break;
            }
        }
        pthread_mutex_unlock(&mem_lock);
    }
    free(l);
}
