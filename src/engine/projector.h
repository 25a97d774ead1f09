/*
 * projector.h - asynchronous projections (split databases): a background
 * role that follows the event feed of the events store and keeps the read
 * model in another database, each batch of rows together with its
 * checkpoint in one transaction of that database.
 *
 * Exactly-once effect: the checkpoint (PROJECTION_CHECKPOINT_TABLE) is the
 * position of the last event whose effect the read model holds; a batch
 * folds the events after it and moves it, atomically, and only from the
 * value it started from (UPDATE ... WHERE position = <from>): a batch
 * interrupted by a crash leaves neither rows nor checkpoint, and a second
 * projector that believed it held the role can never apply a batch twice.
 * No gaps: events are read with store_read_all, whose order never skips an
 * event that commits late (docs/internals/ordering.md).
 *
 * One instance at a time: the projector runs where --role is worker or all,
 * and only while it holds the store lease "projector" on the events store;
 * the others retry the lease every PROJECTOR_LEASE_RETRY_MS and take over
 * when the holder dies. The holder checks its lease before each batch and
 * stops when it is lost.
 *
 * Waking: when caught up it waits with store_wait (commits of this process,
 * LISTEN/NOTIFY for other instances'), never polling the database.
 */
#ifndef CHRONICLE_ENGINE_PROJECTOR_H
#define CHRONICLE_ENGINE_PROJECTOR_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/entity.h"

#define PROJECTOR_LEASE "projector"
#define PROJECTOR_BATCH 1000           /* events per transaction at most */
#define PROJECTOR_LEASE_RETRY_MS 1000  /* a non-holder tries the lease this often */
#define PROJECTOR_WAIT_MS 250          /* longest wait for new events between lease checks */
#define PROJECTOR_ERROR_PAUSE_MS 1000  /* after a failed batch or read */
#define PROJECTOR_STALENESS_CACHE_MS 100 /* a non-holder re-reads the checkpoint this often */

/* Starts the projector of eng, whose read model must be attached
 * (engine_attach_read_model). run: this instance takes part in the role
 * (--role worker or all); without it only the status below is served (for
 * /ready and the staleness headers). Sets eng->projector. */
int projector_start(engine_t *eng, bool run, chr_err_t *err);

/* Stops the projector's thread (finishing or abandoning its batch: either
 * is safe), gives the lease up and frees it; eng->projector becomes NULL.
 * Must run before the stores close. NULL projector: nothing. */
void projector_stop(engine_t *eng);

typedef struct projector_status {
    bool runs_here;      /* this instance takes part in the role */
    bool lease_held;     /* ... and holds the lease now: it is the projector */
    int64_t head;        /* the events store's head as this instance knows it */
    int64_t checkpoint;  /* the read model's checkpoint */
    int64_t lag;         /* head - checkpoint, at least 0 */
    char holder[128];    /* "host:pid" of the instance that moved the checkpoint last */
    int64_t updated_at;  /* when it did (microseconds since the epoch), 0 = never */
    char last_error[512]; /* this instance's last projector failure, "" if none */
} projector_status_t;

/* The status now: reads the checkpoint row from the read model's database
 * (CHR_EUNAVAILABLE and friends when it cannot). */
int projector_status(projector_t *p, projector_status_t *out, chr_err_t *err);

/* How stale a read about to be served may be, cheaply: *position is a
 * checkpoint the read model had reached before now (so a read that starts
 * after this call reflects at least every event up to it), *lag the events
 * after it that this instance knows of. The holder knows its checkpoint;
 * others re-read it at most every PROJECTOR_STALENESS_CACHE_MS. Returns
 * false when the checkpoint could not be read yet. */
bool projector_staleness(projector_t *p, int64_t *position, int64_t *lag);

/* head - checkpoint, never negative (a checkpoint read after the head). */
int64_t projector_lag(int64_t head, int64_t checkpoint);

/* The head to wait beyond after a read that found nothing after pos:
 * pos itself, or a head already seen when it is higher (positions a reader
 * cannot see yet must not make the wait return at once, again and again). */
int64_t projector_wait_after(int64_t pos, int64_t head_seen);

#endif
