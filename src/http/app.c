/* app.c - loading and routing an app definition; see app.h. */
#include "http/app.h"

#include <stdlib.h>

#include "core/timefmt.h"
#include "util/log.h"

int http_app_open(const char *path, store_t *s, store_t *reads, http_router_t *r,
                  http_app_t **out, chr_err_t *err)
{
    http_app_t *app = calloc(1, sizeof *app);
    if (!app) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    int rc = definition_load_file(path, &app->def, err);
    bool rebuilt = false;
    int64_t replayed = 0, start = time_now_us();
    if (!rc) rc = engine_open(&app->eng, app->def, s, &rebuilt, &replayed, err);
    if (!rc) app->engine_open = true;
    if (!rc && reads) rc = engine_attach_read_model(&app->eng, reads, err);
    if (!rc && rebuilt)
        log_at(LOG_ALWAYS, "projections rebuilt from events", LOG_S("app", app->def->app),
               LOG_S("reason", "the definition's table layout differs from the stored one"),
               LOG_I("events", replayed), LOG_I("duration_ms", (time_now_us() - start) / 1000));
    if (!rc) rc = http_app_routes_build(&app->eng, &app->routes, err);
    if (!rc) rc = http_app_routes_add(app->routes, r, err);
    if (rc) {
        http_app_close(app);
        return rc;
    }
    log_at(LOG_INFO, "app loaded", LOG_S("app", app->def->app), LOG_S("file", path),
           LOG_I("entities", (int64_t)app->def->n_entities),
           LOG_I("routes", (int64_t)http_app_routes_count(app->routes)));
    *out = app;
    return CHR_OK;
}

void http_app_close(http_app_t *app)
{
    if (!app) return;
    http_app_routes_free(app->routes);
    if (app->engine_open) engine_close(&app->eng);
    definition_free(app->def);
    free(app);
}
