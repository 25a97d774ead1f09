/*
 * consumer_store.h - the durable state of consumers in chronicle's own
 * tables (migration 2): each consumer's checkpoint (position, reset epoch,
 * delivered count, last error) and its dead letters. Writes go through the
 * store's group commit (store_commit with an apply step), reads through a
 * reader connection, so every instance sharing the database sees the same
 * state: the HTTP routes of an api instance read and reset what a worker
 * instance runs.
 *
 * Not here: running consumers (consumer.c), HTTP (handlers_consumers.c).
 */
#ifndef CHRONICLE_WORKER_CONSUMER_STORE_H
#define CHRONICLE_WORKER_CONSUMER_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "core/event.h"
#include "store/store.h"

typedef struct consumer_state {
    int64_t position;  /* every event at or below it has been handled */
    int64_t epoch;     /* bumped by each reset */
    int64_t delivered; /* events delivered (dead letters not counted) */
    char last_error[512];
    int64_t last_error_at; /* microseconds since epoch, 0 when none */
    int64_t updated_at;
    int64_t dead_letters; /* rows in the dead-letter list */
} consumer_state_t;

/* Creates name's row at position 0 unless it exists. */
int consumer_store_ensure(store_t *s, const char *name, chr_err_t *err);

/* Reads name's row into out; CHR_ENOTFOUND when it has none yet (never
 * run, never reset: out is then zeroed). */
int consumer_store_get(store_t *s, const char *name, consumer_state_t *out, chr_err_t *err);

/* Moves the checkpoint to position and adds delivered, only while the row
 * is still at epoch (a reset in between wins). *stale (may be NULL) is set
 * when it was not: the caller reloads. */
int consumer_store_advance(store_t *s, const char *name, int64_t epoch, int64_t position,
                           int64_t delivered, bool *stale, chr_err_t *err);

/* Like consumer_store_advance, but queued: returns at once and calls
 * done(user, rc, stale) on the store's writer thread once the checkpoint
 * is durable (or failed). done must not block. Lets a consumer deliver the
 * next events while its checkpoint commits. Returns CHR_OK when queued
 * (done will be called), else an error without calling done. */
typedef void (*consumer_save_fn)(void *user, int rc, bool stale);
int consumer_store_advance_async(store_t *s, const char *name, int64_t epoch, int64_t position,
                                 int64_t delivered, consumer_save_fn done, void *user,
                                 chr_err_t *err);

/* Records a failed attempt's message as the last error (epoch-checked). */
int consumer_store_set_error(store_t *s, const char *name, const char *msg, chr_err_t *err);

/* Rewinds name to position (epoch + 1, last error cleared); creates the
 * row when absent. */
int consumer_store_reset(store_t *s, const char *name, int64_t position, chr_err_t *err);

/* Gives up on ev: adds it to name's dead letters with its attempts and
 * last error and moves the checkpoint past it, atomically and only while
 * the row is still at epoch (*stale as in consumer_store_advance). */
int consumer_store_dead_letter(store_t *s, const char *name, int64_t epoch, const event_t *ev,
                               int attempts, const char *error, bool *stale, chr_err_t *err);

/* name's dead letters with id > after, oldest first, at most limit, as a
 * new JSON array of {id, position, event_id, event_type, attempts, error,
 * retry_requested, created_at, updated_at}. */
int consumer_store_dead_letters(store_t *s, const char *name, int64_t after, int64_t limit,
                                json_t **out, chr_err_t *err);

/* Marks dead letter id of name for a retry; CHR_ENOTFOUND when name has no
 * such dead letter. *out (may be NULL) gets the row as a new JSON object. */
int consumer_store_request_retry(store_t *s, const char *name, int64_t id, json_t **out,
                                 chr_err_t *err);

/* A dead letter whose retry was requested. */
typedef struct consumer_retry {
    int64_t id;
    int64_t attempts;
    char event_id[40];
    int64_t position; /* the event's position in the consumer's source */
} consumer_retry_t;

/* Up to max dead letters of name marked for retry, oldest first, into
 * out[]; *n gets how many. */
int consumer_store_retries(store_t *s, const char *name, consumer_retry_t *out, size_t max,
                           size_t *n, chr_err_t *err);

/* A retried dead letter was delivered: removes it and counts a delivery. */
int consumer_store_retry_done(store_t *s, const char *name, int64_t id, chr_err_t *err);

/* A retried dead letter failed again: stays dead with attempts and error
 * updated, no longer marked for retry. */
int consumer_store_retry_failed(store_t *s, const char *name, int64_t id, int64_t attempts,
                                const char *error, chr_err_t *err);

#endif
