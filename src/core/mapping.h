/*
 * mapping.h - the field mapping of a reaction ("with"): how a command's
 * body is built from the event that triggers it. Pure: no I/O, no store,
 * unit-tested in tests/unit/core/test_mapping.c.
 *
 * A template is a JSON object; each member's value is
 *   - a path, a string starting with "$.": the value taken from the event
 *       $.id        the event's id
 *       $.type      its type
 *       $.stream    its stream
 *       $.key       the entity key of its stream: what follows the first
 *                   "-" of "<entity>-<key>" (absent for streams without one)
 *       $.data      its data; $.data.a.b descends into members a, then b
 *       $.metadata  its metadata; $.metadata.a.b likewise
 *     A path that leads nowhere (a missing member, a member of a non-object)
 *     leaves the member out of the body, so a required field missing from
 *     the event fails the command's validation like any missing field.
 *   - "$$...": the literal string with the first "$" removed ("$$.x" is "$.x")
 *   - anything else (other strings, numbers, booleans, null, arrays,
 *     objects): a constant, copied as it is (not searched for paths).
 * Any other string starting with "$" is refused when the definition loads.
 */
#ifndef CHRONICLE_CORE_MAPPING_H
#define CHRONICLE_CORE_MAPPING_H

#include <jansson.h>
#include <stdbool.h>

#include "core/error.h"
#include "core/event.h"

/* Whether a template member's string value is acceptable (a path of the
 * grammar above, a "$$" literal, or a string not starting with "$"). */
bool mapping_value_valid(const char *s);

/* The body for ev: a new object (*out) with the template's members mapped.
 * CHR_EINVAL when ev's data or metadata is not JSON (cannot happen for a
 * stored event), CHR_ENOMEM. */
int mapping_apply(const json_t *tmpl, const event_t *ev, json_t **out, chr_err_t *err);

#endif
