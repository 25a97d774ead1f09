/* event_body.c - events as consumers send them; see event_body.h. */
#include "worker/event_body.h"

#include <jansson.h>
#include <stdlib.h>

char *worker_event_body(const engine_t *eng, const event_t *ev)
{
    json_t *j = event_to_json(ev);
    if (!j) return NULL;
    char *redacted = eng ? engine_redacted_data(eng, ev) : NULL;
    if (redacted) {
        json_t *data = json_loads(redacted, JSON_DECODE_ANY, NULL);
        free(redacted);
        if (!data || json_object_set_new(j, "data", data) != 0) {
            json_decref(j);
            return NULL;
        }
    }
    char *out = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return out;
}
