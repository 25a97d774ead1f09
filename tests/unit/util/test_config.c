/*
 * test_config.c - unit tests of util/config.h: defaults, environment, flags
 * in both "--flag=value" and "--flag value" forms, flags overriding the
 * environment, bad values naming the variable or flag, unknown flags, the
 * cross-field check, secret masking and the derived store options.
 *
 * Every test starts from an environment without any chronicle variable.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/config.h"

static const char *const env_vars[] = {
    "DATABASE_URL",
    "PORT",
    "APP",
    "API_SECRET",
    "LOG_LEVEL",
    "ROLE",
    "SQLITE_SYNCHRONOUS",
    "MAX_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_CONNECTIONS",
    "CONNECTION_TIMEOUT",
    "HTTP_THREADS",
    "SQLITE_READERS",
    "SHUTDOWN_GRACE",
    "PROJECTION_DB_URL",
    "JWT_SECRET",
};

static int clean_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++)
        unsetenv(env_vars[i]);
    return 0;
}

/* config_from_env that must succeed. */
static void load(config_t *cfg)
{
    chr_err_t err;
    chr_err_clear(&err);
    int rc = config_from_env(cfg, &err);
    if (rc != CHR_OK) fail_msg("config_from_env failed: %s", err.msg);
}

/* Applies argv (a NULL-free array of n strings) flag by flag, as main does;
 * returns the first failure or CHR_OK. *consumed gets the index reached. */
static int apply_all(config_t *cfg, int argc, char **argv, chr_err_t *err, int *consumed)
{
    int i = 0;
    for (; i < argc; i++) {
        int rc = config_apply_flag(cfg, argc, argv, &i, err);
        if (rc) {
            if (consumed) *consumed = i;
            return rc;
        }
    }
    if (consumed) *consumed = i;
    return CHR_OK;
}

static void test_defaults(void **state)
{
    (void)state;
    config_t cfg;
    load(&cfg);
    assert_string_equal(cfg.database_url, "sqlite:./chronicle.db");
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.port, 8080);
    assert_string_equal(cfg.api_secrets, "");
    assert_string_equal(cfg.log_level, "info");
    assert_string_equal(cfg.role, "all");
    assert_true(config_serves_api(&cfg));
    assert_true(config_runs_worker(&cfg));
    assert_int_equal(cfg.sync, STORE_SYNC_FULL);
    assert_int_equal(cfg.max_body_bytes, 1048576);
    assert_int_equal(cfg.max_event_bytes, EVENT_DEFAULT_MAX_BYTES);
    assert_int_equal(cfg.max_connections, 10000);
    assert_int_equal(cfg.connection_timeout, 60);
    assert_int_equal(cfg.threads, 0);
    assert_int_equal(cfg.readers, 0);
    assert_int_equal(cfg.shutdown_grace, 10);
    chr_err_t err;
    assert_int_equal(config_validate(&cfg, &err), CHR_OK);
}

static void test_environment(void **state)
{
    (void)state;
    setenv("DATABASE_URL", "sqlite:/var/lib/chronicle/x.db", 1);
    setenv("PORT", "9000", 1);
    setenv("API_SECRET", "one,two", 1);
    setenv("LOG_LEVEL", "debug", 1);
    setenv("SQLITE_SYNCHRONOUS", "NORMAL", 1); /* case-insensitive */
    setenv("MAX_BODY_BYTES", "2097152", 1);
    setenv("MAX_EVENT_BYTES", "4096", 1);
    setenv("MAX_CONNECTIONS", "50", 1);
    setenv("CONNECTION_TIMEOUT", "5", 1);
    setenv("HTTP_THREADS", "3", 1);
    setenv("SQLITE_READERS", "2", 1);
    setenv("SHUTDOWN_GRACE", "0", 1);
    setenv("ROLE", "worker", 1);
    config_t cfg;
    load(&cfg);
    assert_string_equal(cfg.role, "worker");
    assert_false(config_serves_api(&cfg));
    assert_true(config_runs_worker(&cfg));
    assert_string_equal(cfg.database_url, "sqlite:/var/lib/chronicle/x.db");
    assert_int_equal(cfg.port, 9000);
    assert_string_equal(cfg.api_secrets, "one,two");
    assert_string_equal(cfg.log_level, "debug");
    assert_int_equal(cfg.sync, STORE_SYNC_NORMAL);
    assert_int_equal(cfg.max_body_bytes, 2097152);
    assert_int_equal(cfg.max_event_bytes, 4096);
    assert_int_equal(cfg.max_connections, 50);
    assert_int_equal(cfg.connection_timeout, 5);
    assert_int_equal(cfg.threads, 3);
    assert_int_equal(cfg.readers, 2);
    assert_int_equal(cfg.shutdown_grace, 0);

    /* An empty variable counts as unset. */
    setenv("PORT", "", 1);
    load(&cfg);
    assert_int_equal(cfg.port, 8080);
}

/* A bad environment value is CHR_EINVAL naming the variable. */
static void assert_env_rejected(const char *var, const char *value)
{
    clean_env(NULL);
    setenv(var, value, 1);
    config_t cfg;
    chr_err_t err;
    chr_err_clear(&err);
    int rc = config_from_env(&cfg, &err);
    if (rc != CHR_EINVAL) fail_msg("%s=\"%s\" accepted (rc %d)", var, value, rc);
    assert_int_equal(err.code, CHR_EINVAL);
    assert_string_equal(err.field, var);
    if (!strstr(err.msg, var)) fail_msg("message \"%s\" does not name %s", err.msg, var);
    unsetenv(var);
}

static void test_environment_bad_values(void **state)
{
    (void)state;
    assert_env_rejected("PORT", "abc");
    assert_env_rejected("PORT", "80x");
    assert_env_rejected("PORT", "70000");
    assert_env_rejected("PORT", "-1");
    assert_env_rejected("PORT", "99999999999999999999999");
    assert_env_rejected("LOG_LEVEL", "verbose");
    assert_env_rejected("LOG_LEVEL", "INFO"); /* choices are exact */
    assert_env_rejected("ROLE", "projector");
    assert_env_rejected("SQLITE_SYNCHRONOUS", "off");
    assert_env_rejected("MAX_EVENT_BYTES", "10"); /* below the minimum */
    assert_env_rejected("MAX_EVENT_BYTES", "1MiB");
    assert_env_rejected("MAX_BODY_BYTES", "0");
    assert_env_rejected("MAX_CONNECTIONS", "0");
    assert_env_rejected("CONNECTION_TIMEOUT", "1.5");
    assert_env_rejected("HTTP_THREADS", "-2");
    assert_env_rejected("SQLITE_READERS", "100000");
    assert_env_rejected("SHUTDOWN_GRACE", "forever");
    char longurl[600];
    memset(longurl, 'a', sizeof longurl - 1);
    longurl[sizeof longurl - 1] = '\0';
    assert_env_rejected("DATABASE_URL", longurl); /* longer than the field */
}

static void test_flags_both_forms(void **state)
{
    (void)state;
    config_t cfg;
    load(&cfg);
    char *argv[] = {"--port=7000",
                    "--database",
                    "sqlite:/tmp/x.db",
                    "--log-level=warn",
                    "--sqlite-synchronous=normal",
                    "--max-event-bytes",
                    "2048",
                    "--readers",
                    "4"};
    int argc = (int)(sizeof argv / sizeof argv[0]);
    chr_err_t err;
    chr_err_clear(&err);
    int consumed = -1;
    int rc = apply_all(&cfg, argc, argv, &err, &consumed);
    if (rc) fail_msg("flags rejected: %s", err.msg);
    assert_int_equal(consumed, argc);
    assert_int_equal(cfg.port, 7000);
    assert_string_equal(cfg.database_url, "sqlite:/tmp/x.db");
    assert_string_equal(cfg.log_level, "warn");
    assert_int_equal(cfg.sync, STORE_SYNC_NORMAL);
    assert_int_equal(cfg.max_event_bytes, 2048);
    assert_int_equal(cfg.readers, 4);

    /* "--flag value" consumes exactly one extra argument. */
    char *argv2[] = {"--port", "6000", "--threads", "2"};
    int i = 0;
    assert_int_equal(config_apply_flag(&cfg, 4, argv2, &i, &err), CHR_OK);
    assert_int_equal(i, 1);
    assert_int_equal(cfg.port, 6000);
    i = 2;
    assert_int_equal(config_apply_flag(&cfg, 4, argv2, &i, &err), CHR_OK);
    assert_int_equal(i, 3);
    assert_int_equal(cfg.threads, 2);

    /* "--flag=value" consumes nothing extra. */
    char *argv3[] = {"--port=5000", "--threads=1"};
    i = 0;
    assert_int_equal(config_apply_flag(&cfg, 2, argv3, &i, &err), CHR_OK);
    assert_int_equal(i, 0);
    assert_int_equal(cfg.port, 5000);

    /* A value may contain '=' after the first one. */
    char *argv4[] = {"--database=sqlite:/tmp/a=b.db"};
    i = 0;
    assert_int_equal(config_apply_flag(&cfg, 1, argv4, &i, &err), CHR_OK);
    assert_string_equal(cfg.database_url, "sqlite:/tmp/a=b.db");
}

static void test_listen_flag(void **state)
{
    (void)state;
    config_t cfg;
    load(&cfg);
    chr_err_t err;
    char *argv[] = {"--listen", "0.0.0.0:9090"};
    int i = 0;
    assert_int_equal(config_apply_flag(&cfg, 2, argv, &i, &err), CHR_OK);
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_int_equal(cfg.port, 9090);

    char *argv6[] = {"--listen=[::1]:0"};
    i = 0;
    assert_int_equal(config_apply_flag(&cfg, 1, argv6, &i, &err), CHR_OK);
    assert_string_equal(cfg.listen_host, "[::1]");
    assert_int_equal(cfg.port, 0);

    const char *bad[] = {"--listen=nocolon", "--listen=:8080", "--listen=host:", "--listen=h:99999",
                         "--listen=h:80a"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char *a[] = {(char *)bad[k]};
        i = 0;
        chr_err_clear(&err);
        int rc = config_apply_flag(&cfg, 1, a, &i, &err);
        if (rc != CHR_EINVAL) fail_msg("%s accepted (rc %d)", bad[k], rc);
        assert_string_equal(err.field, "--listen");
        assert_non_null(strstr(err.msg, "--listen"));
    }
}

static void test_flags_override_environment(void **state)
{
    (void)state;
    setenv("PORT", "9000", 1);
    setenv("LOG_LEVEL", "debug", 1);
    setenv("DATABASE_URL", "sqlite:env.db", 1);
    setenv("MAX_EVENT_BYTES", "4096", 1);
    config_t cfg;
    load(&cfg);
    assert_int_equal(cfg.port, 9000);
    char *argv[] = {"--port", "7000", "--log-level=error", "--database=sqlite:flag.db"};
    chr_err_t err;
    int consumed;
    assert_int_equal(apply_all(&cfg, 4, argv, &err, &consumed), CHR_OK);
    assert_int_equal(cfg.port, 7000);
    assert_string_equal(cfg.log_level, "error");
    assert_string_equal(cfg.database_url, "sqlite:flag.db");
    /* Variables without a flag on the command line keep their env value. */
    assert_int_equal(cfg.max_event_bytes, 4096);
}

/* A bad flag value is CHR_EINVAL naming the flag. */
static void assert_flag_rejected(int argc, char **argv, const char *flag)
{
    config_t cfg;
    load(&cfg);
    chr_err_t err;
    chr_err_clear(&err);
    int i = 0;
    int rc = config_apply_flag(&cfg, argc, argv, &i, &err);
    if (rc != CHR_EINVAL) fail_msg("%s %s accepted (rc %d)", argv[0], argc > 1 ? argv[1] : "", rc);
    assert_int_equal(err.code, CHR_EINVAL);
    assert_string_equal(err.field, flag);
    if (!strstr(err.msg, flag)) fail_msg("message \"%s\" does not name %s", err.msg, flag);
}

static void test_flags_bad_values(void **state)
{
    (void)state;
    char *a1[] = {"--port=abc"};
    assert_flag_rejected(1, a1, "--port");
    char *a2[] = {"--port", "65536"};
    assert_flag_rejected(2, a2, "--port");
    char *a3[] = {"--port"}; /* missing value */
    assert_flag_rejected(1, a3, "--port");
    char *a4[] = {"--port="}; /* empty value */
    assert_flag_rejected(1, a4, "--port");
    char *a5[] = {"--log-level=loud"};
    assert_flag_rejected(1, a5, "--log-level");
    char *a7[] = {"--sqlite-synchronous=extra"};
    assert_flag_rejected(1, a7, "--sqlite-synchronous");
    char *a8[] = {"--max-event-bytes=-5"};
    assert_flag_rejected(1, a8, "--max-event-bytes");
    char *a9[] = {"--max-body-bytes", "12abc"};
    assert_flag_rejected(2, a9, "--max-body-bytes");
    char *a10[] = {"--connection-timeout=0"};
    assert_flag_rejected(1, a10, "--connection-timeout");

    /* The message quotes the bad value. */
    config_t cfg;
    load(&cfg);
    chr_err_t err;
    char *a11[] = {"--port=seventy"};
    int i = 0;
    assert_int_equal(config_apply_flag(&cfg, 1, a11, &i, &err), CHR_EINVAL);
    assert_non_null(strstr(err.msg, "seventy"));
    assert_int_equal(cfg.port, 8080); /* unchanged */
}

static void test_unknown_flags(void **state)
{
    (void)state;
    config_t cfg;
    load(&cfg);
    config_t before;
    memcpy(&before, &cfg, sizeof cfg);
    const char *unknown[] = {"--nope", "--nope=1", "--portx=1", "--por=1",   "--Port=1",
                             "-p",     "port",     "--",        "---port=1", "-port=1"};
    for (size_t k = 0; k < sizeof unknown / sizeof unknown[0]; k++) {
        char *argv[] = {(char *)unknown[k], "123"};
        int i = 0;
        chr_err_t err;
        chr_err_clear(&err);
        int rc = config_apply_flag(&cfg, 2, argv, &i, &err);
        if (rc != CHR_ENOTFOUND) fail_msg("\"%s\" gave %d, want CHR_ENOTFOUND", unknown[k], rc);
        assert_int_equal(i, 0); /* the value after it is not consumed */
    }
    assert_memory_equal(&cfg, &before, sizeof cfg);
}

static void test_validate_cross_fields(void **state)
{
    (void)state;
    config_t cfg;
    load(&cfg);
    chr_err_t err;
    chr_err_clear(&err);
    cfg.max_event_bytes = 2 << 20;
    cfg.max_body_bytes = 1 << 20;
    assert_int_equal(config_validate(&cfg, &err), CHR_EINVAL);
    assert_true(err.msg[0] != '\0');
    assert_non_null(strstr(err.msg, "MAX_EVENT_BYTES"));
    cfg.max_body_bytes = 2 << 20;
    assert_int_equal(config_validate(&cfg, &err), CHR_OK);
}

static void test_print_masks_secrets(void **state)
{
    (void)state;
    setenv("API_SECRET", "s3cr3t-alpha,s3cr3t-beta", 1);
    setenv("PORT", "9123", 1);
    config_t cfg;
    load(&cfg);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    config_print(&cfg, f);
    fclose(f);
    assert_non_null(buf);
    assert_null(strstr(buf, "s3cr3t"));
    assert_null(strstr(buf, "alpha"));
    assert_non_null(strstr(buf, "9123"));
    assert_non_null(strstr(buf, "api-secret"));
    free(buf);

    buf = NULL;
    f = open_memstream(&buf, &len);
    assert_non_null(f);
    config_print_flags(f);
    fclose(f);
    assert_non_null(strstr(buf, "--port"));
    assert_non_null(strstr(buf, "PORT"));
    assert_non_null(strstr(buf, "--max-event-bytes"));
    assert_non_null(strstr(buf, "MAX_EVENT_BYTES"));
    free(buf);
}

static void test_store_options(void **state)
{
    (void)state;
    setenv("MAX_EVENT_BYTES", "65536", 1);
    setenv("SQLITE_SYNCHRONOUS", "normal", 1);
    setenv("SQLITE_READERS", "3", 1);
    config_t cfg;
    load(&cfg);
    store_options_t o = config_store_options(&cfg);
    assert_int_equal(o.max_event_bytes, 65536);
    assert_int_equal(o.sync, STORE_SYNC_NORMAL);
    assert_int_equal(o.readers, 3);
    assert_true(o.migrate);
    assert_false(o.read_only);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, clean_env, clean_env)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_environment),
        T(test_environment_bad_values),
        T(test_flags_both_forms),
        T(test_listen_flag),
        T(test_flags_override_environment),
        T(test_flags_bad_values),
        T(test_unknown_flags),
        T(test_validate_cross_fields),
        T(test_print_masks_secrets),
        T(test_store_options),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
