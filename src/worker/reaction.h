/*
 * reaction.h - the reaction effect: for each event of its type (from this
 * instance's feed or another's, feed_source.h), run a command of this app
 * with a body mapped from the event (core/mapping.h), through the engine's
 * blocking engine_command (a consumer has a thread of its own).
 *
 * The new event's id is derived from (reaction name, source event id), so
 * a redelivered source event (at-least-once) does not apply the command
 * twice: before running the command the effect looks that id up and, when
 * stored, counts the delivery as done. Its metadata carries causation_id
 * (the source event's id), correlation_id (the source's correlation_id, or
 * its id) and the reaction's name.
 *
 * A command refused (invalid, conflict, not found, precondition, too big)
 * is given up at once (CONSUMER_GIVE_UP: a dead letter with the reason);
 * a store that fails or is unavailable is retried with backoff.
 */
#ifndef CHRONICLE_WORKER_REACTION_H
#define CHRONICLE_WORKER_REACTION_H

#include "core/definition.h"
#include "core/uuid.h"
#include "engine/entity.h"
#include "worker/consumer.h"

/* The id of the event reaction `name` makes from source event source_id:
 * a UUIDv8 from SHA-256("chronicle-reaction\0" name "\0" source_id). */
void reaction_event_id(const char *name, const char *source_id, char out[UUID_STR_LEN + 1]);

/* The new event's metadata for source event ev: a new object
 * {causation_id, correlation_id, reaction}, NULL on allocation failure. */
json_t *reaction_metadata(const char *name, const event_t *ev);

/* An effect running def's command on eng (borrowed; must outlive it). */
int reaction_effect_new(const reaction_def_t *def, engine_t *eng, consumer_effect_t *out,
                        chr_err_t *err);

#endif
