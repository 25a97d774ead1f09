/*
 * main.c - the `chronicle` command line: parses the command and its flags
 * into a config_t and hands over to the subsystem that does the work.
 * Exit codes: 0 success, 1 the work failed, 2 usage error.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/definition.h"
#include "core/timefmt.h"
#include "http/server.h"
#include "store/store.h"
#include "util/config.h"
#include "util/url.h"

#define EXIT_USAGE 2

typedef struct command {
    const char *name;
    const char *args;
    const char *summary;
    const char *help; /* longer text for `chronicle help NAME` */
    int (*run)(config_t *cfg, int argc, char **argv, bool json);
} command_t;

static int cmd_serve(config_t *cfg, int argc, char **argv, bool json);
static int cmd_check_config(config_t *cfg, int argc, char **argv, bool json);
static int cmd_migrate(config_t *cfg, int argc, char **argv, bool json);
static int cmd_stats(config_t *cfg, int argc, char **argv, bool json);
static int cmd_version(config_t *cfg, int argc, char **argv, bool json);

static const command_t commands[] = {
    {"serve", "", "run the HTTP server (the event API, live feed, health, metrics)",
     "Serves the HTTP API on --listen (default 127.0.0.1:8080) over the store named by\n"
     "--database. Applies pending migrations first. SIGTERM or SIGINT drains in-flight\n"
     "requests and exits 0.\n",
     cmd_serve},
    {"check-config", "", "validate the configuration, print it (secrets masked) and exit",
     "Reads the environment and flags exactly as `serve` would, checks every value, the\n"
     "app definition (--app, every error naming its JSON path) and that the database\n"
     "can be opened, prints the effective settings with secrets masked, and exits 0\n"
     "when everything is valid, 1 (with the reason) otherwise.\n",
     cmd_check_config},
    {"migrate", "up|status", "apply pending schema migrations, or list them",
     "`migrate up` applies every pending migration of chronicle's own tables, in order,\n"
     "each in its own transaction, and records it; running it again does nothing.\n"
     "`migrate status` lists every migration and when it was applied. --json for JSON.\n",
     cmd_migrate},
    {"stats", "", "event and stream counts, head position and database size",
     "Prints how many events and streams the store holds, the head (highest) position,\n"
     "the schema version and the database size on disk. --json for JSON.\n",
     cmd_stats},
    {"version", "", "print the version", "Prints chronicle's version.\n", cmd_version},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out, "chronicle - an event-sourced backend in one binary\n\n"
                 "Usage: chronicle COMMAND [ARGS] [FLAGS]\n\nCommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char left[48];
        snprintf(left, sizeof left, "%s %s", commands[i].name, commands[i].args);
        fprintf(out, "  %-22s %s\n", left, commands[i].summary);
    }
    fprintf(out, "  %-22s %s\n", "help [COMMAND]", "this text, or one command's");
    fprintf(out, "\nFlags (each also read from the environment variable shown):\n");
    config_print_flags(out);
    fprintf(out, "  %-44s %s\n", "--json", "machine-readable output (stats, migrate status)");
    fprintf(out, "\nFrom the environment only: API_KEYS_FILE, JWT_SECRET, JWT_SECRET_PREVIOUS,\n"
                 "JWT_PUBLIC_KEY_FILE, JWT_ISSUER, JWT_AUDIENCE, JWT_CLAIM_{SUB,ROLES,TENANT},\n"
                 "JWT_LEEWAY, AUTH_ACCESS_TTL, AUTH_REFRESH_TTL, RATE_LIMIT_{READ,WRITE,AUTH},\n"
                 "CORS_ORIGINS, CORS_MAX_AGE (docs/security.md), SSE_HEARTBEAT_MS.\n");
}

static const command_t *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

static int help(const char *name)
{
    if (!name) {
        usage(stdout);
        return 0;
    }
    const command_t *c = find_command(name);
    if (!c) {
        fprintf(stderr, "chronicle: no command \"%s\"\n\n", name);
        usage(stderr);
        return EXIT_USAGE;
    }
    printf("Usage: chronicle %s %s [FLAGS]\n\n%s\nFlags:\n", c->name, c->args, c->help);
    config_print_flags(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "chronicle: libsodium failed to initialise\n");
        return 1;
    }
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
        return help(argc > 2 ? argv[2] : NULL);
    if (strcmp(name, "--version") == 0) name = "version";
    const command_t *cmd = find_command(name);
    if (!cmd) {
        fprintf(stderr, "chronicle: unknown command \"%s\"\n\n", name);
        usage(stderr);
        return EXIT_USAGE;
    }

    config_t cfg;
    chr_err_t err = {0};
    if (config_from_env(&cfg, &err) != CHR_OK) {
        fprintf(stderr, "chronicle: %s\n", err.msg);
        return EXIT_USAGE;
    }
    /* Positional arguments are kept in order for the command; flags go to
     * the config table. */
    char **pos = calloc((size_t)argc, sizeof *pos);
    int npos = 0;
    bool json = false;
    if (!pos) return 1;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            free(pos);
            return help(cmd->name);
        }
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
            continue;
        }
        if (argv[i][0] != '-') {
            pos[npos++] = argv[i];
            continue;
        }
        int rc = config_apply_flag(&cfg, argc, argv, &i, &err);
        if (rc == CHR_ENOTFOUND) {
            fprintf(stderr, "chronicle %s: unknown flag %s\n\n", cmd->name, argv[i]);
            usage(stderr);
            free(pos);
            return EXIT_USAGE;
        }
        if (rc) {
            fprintf(stderr, "chronicle %s: %s\n", cmd->name, err.msg);
            free(pos);
            return EXIT_USAGE;
        }
    }
    int rc = cmd->run(&cfg, npos, pos, json);
    free(pos);
    return rc;
}

static int no_args(const char *name, int argc, char **argv)
{
    if (argc == 0) return 0;
    fprintf(stderr, "chronicle %s: unexpected argument \"%s\"\n\n", name, argv[0]);
    usage(stderr);
    return EXIT_USAGE;
}

static int open_store(const config_t *cfg, bool read_only, store_t **s)
{
    store_options_t o = config_store_options(cfg);
    o.read_only = read_only;
    o.migrate = false;
    chr_err_t err = {0};
    if (store_open(cfg->database_url, &o, s, &err) != CHR_OK) {
        fprintf(stderr, "chronicle: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static int cmd_serve(config_t *cfg, int argc, char **argv, bool json)
{
    int rc = no_args("serve", argc, argv);
    if (rc) return rc;
    chr_err_t err = {0};
    if (config_validate(cfg, &err) != CHR_OK) {
        fprintf(stderr, "chronicle serve: %s\n", err.msg);
        return EXIT_USAGE;
    }
    return http_serve_main(cfg);
}

static int cmd_check_config(config_t *cfg, int argc, char **argv, bool json)
{
    int rc = no_args("check-config", argc, argv);
    if (rc) return rc;
    chr_err_t err = {0};
    if (config_validate(cfg, &err) != CHR_OK) {
        fprintf(stderr, "chronicle check-config: invalid: %s\n", err.msg);
        return 1;
    }
    config_print(cfg, stdout);
    if (cfg->app_path[0]) {
        definition_t *def = NULL;
        if (definition_load_file(cfg->app_path, &def, &err) != CHR_OK) {
            fprintf(stderr, "chronicle check-config: invalid app definition %s: %s\n",
                    cfg->app_path, err.msg);
            return 1;
        }
        printf("app: ok (%s: %zu entities, %zu routes)\n", def->app, def->n_entities,
               def->n_routes);
        definition_free(def);
    }
    store_t *s = NULL;
    store_options_t o = config_store_options(cfg);
    o.read_only = true;
    rc = store_open(cfg->database_url, &o, &s, &err);
    if (rc == CHR_ENOTFOUND) {
        printf("database: does not exist yet; `serve` or `migrate up` will create it\n");
    } else if (rc) {
        fprintf(stderr, "chronicle check-config: invalid: %s\n", err.msg);
        return 1;
    } else {
        int64_t head = 0;
        rc = store_head_position(s, &head, &err);
        store_close(s);
        if (rc) {
            fprintf(stderr, "chronicle check-config: database unreadable: %s\n", err.msg);
            return 1;
        }
        printf("database: ok (head position %lld)\n", (long long)head);
    }
    printf("configuration is valid\n");
    return 0;
}

static int migrate_status(const config_t *cfg, bool json)
{
    store_t *s;
    if (open_store(cfg, true, &s)) return 1;
    store_migration_info_t *list = NULL;
    size_t n = 0;
    chr_err_t err = {0};
    int rc = store_migrations(s, &list, &n, &err);
    store_close(s);
    if (rc) {
        fprintf(stderr, "chronicle migrate status: %s\n", err.msg);
        return 1;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        char ts[TIMEFMT_LEN + 1] = "";
        if (list[i].applied) time_format_us(list[i].applied_at, ts);
        if (json) {
            json_array_append_new(arr, json_pack("{s:i, s:s, s:b, s:s?}", "version", list[i].version,
                                                 "name", list[i].name, "applied", list[i].applied,
                                                 "applied_at", list[i].applied ? ts : NULL));
        } else {
            printf("%4d  %-30s %s\n", list[i].version, list[i].name,
                   list[i].applied ? ts : "pending");
        }
    }
    if (json) {
        char *text = json_dumps(arr, JSON_INDENT(2));
        if (text) puts(text);
        free(text);
    }
    json_decref(arr);
    free(list);
    return 0;
}

static int cmd_migrate(config_t *cfg, int argc, char **argv, bool json)
{
    if (argc != 1 || (strcmp(argv[0], "up") != 0 && strcmp(argv[0], "status") != 0)) {
        fprintf(stderr, "chronicle migrate: expected `up` or `status`\n\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[0], "status") == 0) return migrate_status(cfg, json);
    store_options_t o = config_store_options(cfg);
    o.migrate = true;
    store_t *s;
    chr_err_t err = {0};
    if (store_open(cfg->database_url, &o, &s, &err) != CHR_OK) {
        fprintf(stderr, "chronicle migrate up: %s\n", err.msg);
        return 1;
    }
    int rc = store_migrate(s, &err);
    store_stats_t st = {0};
    if (!rc) rc = store_stats(s, &st, &err);
    store_close(s);
    if (rc) {
        fprintf(stderr, "chronicle migrate up: %s\n", err.msg);
        return 1;
    }
    printf("schema is at version %d\n", st.schema_version);
    return 0;
}

static int cmd_stats(config_t *cfg, int argc, char **argv, bool json)
{
    int rc = no_args("stats", argc, argv);
    if (rc) return rc;
    store_t *s;
    if (open_store(cfg, true, &s)) return 1;
    store_stats_t st;
    chr_err_t err = {0};
    rc = store_stats(s, &st, &err);
    store_close(s);
    if (rc) {
        fprintf(stderr, "chronicle stats: %s\n", err.msg);
        return 1;
    }
    char url[sizeof cfg->database_url];
    url_redact(cfg->database_url, url, sizeof url);
    if (json) {
        json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:i, s:I}", "database", url,
                              "events", (json_int_t)st.events, "streams", (json_int_t)st.streams,
                              "head_position", (json_int_t)st.head_position, "schema_version",
                              st.schema_version, "bytes", (json_int_t)st.bytes);
        char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
        if (text) puts(text);
        free(text);
        json_decref(j);
    } else {
        printf("database        %s\nevents          %lld\nstreams         %lld\n"
               "head position   %lld\nschema version  %d\nsize on disk    %lld bytes\n",
               url, (long long)st.events, (long long)st.streams,
               (long long)st.head_position, st.schema_version, (long long)st.bytes);
    }
    return 0;
}

static int cmd_version(config_t *cfg, int argc, char **argv, bool json)
{
    int rc = no_args("version", argc, argv);
    if (rc) return rc;
    printf("chronicle %s (jansson %s, libsodium %s)\n", CHRONICLE_VERSION, JANSSON_VERSION,
           sodium_version_string());
    return 0;
}
