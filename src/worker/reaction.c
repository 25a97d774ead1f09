/* reaction.c - the reaction effect; see reaction.h. */
#include "worker/reaction.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapping.h"
#include "util/log.h"

typedef struct reaction {
    const reaction_def_t *def;
    engine_t *eng;
    cmd_kind_t kind;
    const command_def_t *custom;
} reaction_t;

void reaction_event_id(const char *name, const char *source_id, char out[UUID_STR_LEN + 1])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const unsigned char *)"chronicle-reaction",
                              sizeof "chronicle-reaction");
    crypto_hash_sha256_update(&st, (const unsigned char *)name, strlen(name) + 1);
    crypto_hash_sha256_update(&st, (const unsigned char *)source_id, strlen(source_id));
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, h);
    uuid_v8_from_hash(h, out);
}

json_t *reaction_metadata(const char *name, const event_t *ev)
{
    json_t *src = ev->metadata ? json_loads(ev->metadata, 0, NULL) : NULL;
    const char *corr = json_string_value(json_object_get(src, "correlation_id"));
    json_t *m = json_pack("{s:s, s:s, s:s}", "causation_id", ev->id, "correlation_id",
                          corr && *corr ? corr : ev->id, "reaction", name);
    json_decref(src);
    return m;
}

/* Whether the event with id is stored already (the command was applied). */
static bool applied(reaction_t *x, const char *id)
{
    event_t ev = {0};
    chr_err_t e;
    chr_err_clear(&e);
    int rc = store_read_event(x->eng->store, id, &ev, &e);
    event_free(&ev);
    return rc == CHR_OK;
}

/* The failure of r as one line into err; CONSUMER_GIVE_UP when retrying
 * cannot help. */
static int failure(const reaction_t *x, const engine_result_t *r, chr_err_t *err)
{
    const entity_def_t *e = &x->eng->def->entities[x->def->entity];
    char msg[sizeof err->msg];
    if (r->decision.code) {
        int n = snprintf(msg, sizeof msg, "%s", r->decision.detail);
        for (size_t i = 0; i < r->decision.n_errors && n > 0 && (size_t)n < sizeof msg; i++)
            n += snprintf(msg + n, sizeof msg - (size_t)n, "%s%s %s", i ? "; " : ": ",
                          r->decision.errors[i].field, r->decision.errors[i].message);
    } else {
        snprintf(msg, sizeof msg, "%s", r->err.msg[0] ? r->err.msg : chr_status_name(r->code));
    }
    bool give_up = r->code == CHR_EINVAL || r->code == CHR_ECONFLICT ||
                   r->code == CHR_ENOTFOUND || r->code == CHR_EPRECONDITION ||
                   r->code == CHR_ETOOBIG;
    chr_fail(err, give_up ? CHR_EINVAL : r->code, "", "%s.%s (%s): %s", e->name, x->def->action,
             chr_status_name(r->code), msg);
    return give_up ? CONSUMER_GIVE_UP : r->code;
}

static int reaction_deliver(void *user, const event_t *ev, const consumer_delivery_t *d,
                            chr_err_t *err)
{
    (void)d;
    reaction_t *x = user;
    char id[UUID_STR_LEN + 1];
    reaction_event_id(x->def->name, ev->id, id);
    if (applied(x, id)) return CHR_OK; /* a redelivery: the command ran already */
    json_t *body = NULL;
    int rc = mapping_apply(x->def->with, ev, &body, err);
    if (rc) return rc == CHR_EINVAL ? CONSUMER_GIVE_UP : rc;
    const entity_def_t *e = &x->eng->def->entities[x->def->entity];
    char key[1024] = "";
    const char *k = json_string_value(json_object_get(body, e->key));
    if (k) snprintf(key, sizeof key, "%s", k);
    if (x->kind != CMD_CREATE) {
        if (!k) {
            json_decref(body);
            chr_fail(err, CHR_EINVAL, e->key, "%s.%s: the event gives no %s (a string)", e->name,
                     x->def->action, e->key);
            return CONSUMER_GIVE_UP;
        }
        json_object_del(body, e->key); /* the key goes in the command's key, as in a URL */
    }
    json_t *meta = reaction_metadata(x->def->name, ev);
    char *meta_s = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
    json_decref(meta);
    if (!meta_s) {
        json_decref(body);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    engine_cmd_opts_t opts = {.event_id = id, .metadata = meta_s};
    engine_result_t r;
    engine_command_opts(x->eng, &access_scope_full, x->def->entity, x->kind, x->custom,
                        k ? key : NULL,
                        x->kind == CMD_DELETE ? NULL : body, -1, &opts, &r);
    if (r.code == CHR_OK)
        rc = CHR_OK;
    else if (r.code == CHR_ECONFLICT && applied(x, id))
        rc = CHR_OK; /* the same id stored meanwhile: applied once */
    else
        rc = failure(x, &r, err);
    engine_result_free(&r);
    free(meta_s);
    json_decref(body);
    return rc;
}

int reaction_effect_new(const reaction_def_t *def, engine_t *eng, consumer_effect_t *out,
                        chr_err_t *err)
{
    reaction_t *x = calloc(1, sizeof *x);
    if (!x) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    x->def = def;
    x->eng = eng;
    const char *a = def->action;
    x->kind = !strcmp(a, "create")   ? CMD_CREATE
              : !strcmp(a, "update") ? CMD_UPDATE
              : !strcmp(a, "upsert") ? CMD_UPSERT
              : !strcmp(a, "delete") ? CMD_DELETE
                                     : CMD_CUSTOM;
    if (x->kind == CMD_CUSTOM)
        x->custom = entity_command(&eng->def->entities[def->entity], a);
    *out = (consumer_effect_t){.deliver = reaction_deliver, .free = free, .user = x};
    return CHR_OK;
}
