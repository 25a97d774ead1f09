/*
 * auth_check.c - the CPU cost of authenticating one request, without HTTP:
 * http_auth_check on an API key, on a cached HS256 JWT (the steady state of
 * a client reusing its token), and on an HS256 JWT verified from scratch
 * every time (a new token per request: the cache defeated). Single thread,
 * a fixed number of calls each; prints ns per call. Comparing these with
 * the time of a whole GET (bench/auth.sh, bench/http.sh) tells what the
 * JWT path costs independent of the machine's load.
 *
 * Usage: bench_auth_check [--calls N]   (default 1000000; 1/50 of it uncached)
 * Not a test: nothing is asserted beyond every credential being accepted.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/jwt.h"
#include "http/auth.h"

#define SECRET "bench-secret-0123456789abcdef-0123456789"
#define KEY "bench-api-key-0123456789abcdef"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* An "Authorization: Bearer <jwt>" value for sub, signed with SECRET. */
static char *bearer_jwt(const auth_jwt_t *j, const char *sub, long long exp)
{
    json_t *c = json_pack("{s:s, s:I, s:[s]}", "sub", sub, "exp", (json_int_t)exp, "roles", "reader");
    char *tok = NULL;
    chr_err_t err;
    if (!c || auth_jwt_sign(j, c, &tok, &err) != CHR_OK) exit(1);
    json_decref(c);
    size_t n = strlen(tok) + 8;
    char *h = malloc(n);
    if (!h) exit(1);
    snprintf(h, n, "Bearer %s", tok);
    free(tok);
    return h;
}

static double run(http_auth_t *a, const char *header, long n)
{
    auth_principal_t p;
    const char *why;
    int64_t t = (int64_t)time(NULL);
    double t0 = now_s();
    for (long i = 0; i < n; i++)
        if (http_auth_check(a, header, t, &p, &why) != HTTP_AUTH_OK) {
            fprintf(stderr, "refused: %s\n", why);
            exit(1);
        }
    return (now_s() - t0) * 1e9 / (double)n;
}

int main(int argc, char **argv)
{
    long calls = 1000000;
    for (int i = 1; i + 1 < argc; i += 2)
        if (strcmp(argv[i], "--calls") == 0) calls = strtol(argv[i + 1], NULL, 10);
    if (calls < 100 || sodium_init() < 0) return 2;
    setenv("JWT_SECRET", SECRET, 1);
    setenv("BENCH_AUTH_KEY", KEY, 1);
    char path[] = "/tmp/bench-auth-keys-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) return 1;
    fputs("{\"keys\":[{\"name\":\"bench\",\"key_env\":\"BENCH_AUTH_KEY\"}]}", f);
    fclose(f);
    setenv("API_KEYS_FILE", path, 1);
    http_auth_t *a = NULL;
    chr_err_t err;
    int rc = http_auth_new("operator-secret", NULL, &a, &err);
    remove(path);
    if (rc) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    long long exp = (long long)time(NULL) + 3600;
    char *jwt = bearer_jwt(http_auth_jwt(a), "bench-user", exp);
    double key_ns = run(a, "Bearer " KEY, calls);
    double cached_ns = run(a, jwt, calls);
    /* a different token each call: every one verified (and cached) afresh */
    long fresh_n = calls / 50;
    char **fresh = malloc((size_t)fresh_n * sizeof *fresh);
    if (!fresh) return 1;
    for (long i = 0; i < fresh_n; i++) {
        char sub[32];
        snprintf(sub, sizeof sub, "user-%ld", i);
        fresh[i] = bearer_jwt(http_auth_jwt(a), sub, exp);
    }
    auth_principal_t p;
    const char *why;
    double t0 = now_s();
    for (long i = 0; i < fresh_n; i++)
        if (http_auth_check(a, fresh[i], (int64_t)time(NULL), &p, &why) != HTTP_AUTH_OK) return 1;
    double fresh_ns = (now_s() - t0) * 1e9 / (double)fresh_n;
    printf("http_auth_check, one thread, %ld calls (%ld uncached):\n", calls, fresh_n);
    printf("  API key                  %8.0f ns/call\n", key_ns);
    printf("  HS256 JWT, cached        %8.0f ns/call\n", cached_ns);
    printf("  HS256 JWT, verified      %8.0f ns/call\n", fresh_ns);
    for (long i = 0; i < fresh_n; i++)
        free(fresh[i]);
    free(fresh);
    free(jwt);
    http_auth_free(a);
    return 0;
}
