/* log.c - JSON lines on stderr; see log.h. */
#include "util/log.h"

#include "core/utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/timefmt.h"

static _Atomic int min_level = LOG_INFO;

/* Where lines go. When stderr is a pipe, lines are written through a
 * private non-blocking description of that pipe: a reader that stops
 * reading (a test harness that only waited for "listening") then costs
 * dropped lines, counted and reported once writing works again, instead of
 * blocking every thread that logs. Files and terminals get plain writes. */
static int out_fd = STDERR_FILENO;
static bool out_nonblocking;
static pthread_once_t out_once = PTHREAD_ONCE_INIT;
static atomic_ullong dropped;

static void out_init(void)
{
    struct stat st;
    if (fstat(STDERR_FILENO, &st) != 0 || !S_ISFIFO(st.st_mode)) return;
    int fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return;
    out_fd = fd;
    out_nonblocking = true;
}

static const char *const level_names[] = {"debug", "info", "warn", "error", "info"};

void log_set_level(log_level_t level)
{
    atomic_store_explicit(&min_level, (int)level, memory_order_relaxed);
}

int log_parse_level(const char *name, log_level_t *out)
{
    static const struct {
        const char *name;
        log_level_t level;
    } names[] = {{"debug", LOG_DEBUG},
                 {"info", LOG_INFO},
                 {"warn", LOG_WARN},
                 {"warning", LOG_WARN},
                 {"error", LOG_ERROR}};
    if (!name) return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(names[i].name, name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -1;
}

bool log_enabled(log_level_t level)
{
    return (int)level >= atomic_load_explicit(&min_level, memory_order_relaxed);
}

/* A bounded line writer: appends stop (and set full) rather than overflow;
 * LOG_TAIL bytes stay reserved for closing the object. */
#define LOG_TAIL 8
typedef struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
    bool full;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    if (l->full || l->len + n > LOG_LINE_MAX - LOG_TAIL) {
        l->full = true;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_lit(line_t *l, const char *s)
{
    put(l, s, strlen(s));
}


/* Appends s as a JSON string. A value too long for the line is cut at a
 * character boundary and marked with "..." so the line stays valid JSON. */
static void put_str(line_t *l, const char *str)
{
    const unsigned char *s = (const unsigned char *)(str ? str : "");
    size_t n = strlen((const char *)s);
    if (l->full || l->len + 2 > LOG_LINE_MAX - LOG_TAIL) {
        l->full = true;
        return;
    }
    l->buf[l->len++] = '"';
    size_t limit = LOG_LINE_MAX - LOG_TAIL - 8; /* room for "...\"" */
    for (size_t i = 0; i < n;) {
        char esc[8];
        size_t elen, adv = 1;
        const char *piece = esc;
        unsigned c = s[i];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            elen = 2;
        } else if (c == '\n') {
            piece = "\\n";
            elen = 2;
        } else if (c == '\t') {
            piece = "\\t";
            elen = 2;
        } else if (c == '\r') {
            piece = "\\r";
            elen = 2;
        } else if (c < 0x20 || c == 0x7f) {
            elen = (size_t)snprintf(esc, sizeof esc, "\\u%04x", c);
        } else if (c < 0x80) {
            esc[0] = (char)c;
            elen = 1;
        } else if ((adv = utf8_seq_len(s + i, n - i)) > 0) {
            piece = (const char *)s + i;
            elen = adv;
        } else {
            piece = "\\ufffd";
            elen = 6;
            adv = 1;
        }
        if (l->len + elen > limit) {
            memcpy(l->buf + l->len, "...", 3);
            l->len += 3;
            break;
        }
        memcpy(l->buf + l->len, piece, elen);
        l->len += elen;
        i += adv;
    }
    l->buf[l->len++] = '"';
}

/* Writes one whole line; see out_fd. must_write: lifecycle and error lines
 * wait (up to LOG_WAIT_MS) for a full pipe instead of being dropped. */
#define LOG_WAIT_MS 5000
static void write_line(const char *p, size_t left, bool must_write)
{
    pthread_once(&out_once, out_init);
    if (out_nonblocking) {
        /* <= PIPE_BUF bytes to a pipe: written whole or not at all. */
        ssize_t w;
        for (;;) {
            w = write(out_fd, p, left);
            if (w >= 0) break;
            if (errno == EINTR) continue;
            struct pollfd pfd = {.fd = out_fd, .events = POLLOUT};
            if (!must_write || errno != EAGAIN || poll(&pfd, 1, LOG_WAIT_MS) <= 0) break;
        }
        if (w < 0) {
            atomic_fetch_add(&dropped, 1);
            return;
        }
        unsigned long long n = atomic_exchange(&dropped, 0);
        if (n) {
            char note[160], ts[TIMEFMT_LEN + 1];
            time_format_us(time_now_us(), ts);
            int k = snprintf(note, sizeof note,
                             "{\"ts\":\"%s\",\"level\":\"warn\",\"msg\":\"log lines dropped\","
                             "\"count\":%llu}\n",
                             ts, n);
            if (k > 0 && write(out_fd, note, (size_t)k) < 0) atomic_fetch_add(&dropped, n);
        }
        return;
    }
    while (left > 0) {
        ssize_t w = write(out_fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += w;
        left -= (size_t)w;
    }
}

static void put_i64(line_t *l, int64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) tmp[--i] = '-';
    put(l, tmp + i, sizeof tmp - i);
}

/* A number with three decimals (durations in ms); printf for the rare
 * values out of the fast path's range. */
static void put_num(line_t *l, double d)
{
    if (!isfinite(d)) {
        puts_lit(l, "null");
        return;
    }
    if (d < 0 || d >= 1e15) {
        char num[64];
        snprintf(num, sizeof num, "%.3f", d);
        puts_lit(l, num);
        return;
    }
    int64_t milli = (int64_t)(d * 1000.0 + 0.5);
    put_i64(l, milli / 1000);
    char frac[4] = {'.', (char)('0' + milli / 100 % 10), (char)('0' + milli / 10 % 10),
                    (char)('0' + milli % 10)};
    put(l, frac, 4);
}

/* Appends the current time as RFC 3339 with microseconds. */
static void put_now(line_t *l)
{
    char ts[TIMEFMT_LEN + 1];
    time_format_us(time_now_us(), ts);
    put(l, ts, TIMEFMT_LEN);
}

void log_emit(log_level_t level, const char *msg, const log_field_t *fields, size_t n)
{
    if (!log_enabled(level)) return;
    int saved_errno = errno;
    line_t l;
    l.len = 0;
    l.full = false;
    puts_lit(&l, "{\"ts\":\"");
    put_now(&l);
    puts_lit(&l, "\",\"level\":\"");
    puts_lit(&l, level_names[level]);
    puts_lit(&l, "\",\"msg\":");
    put_str(&l, msg);
    for (size_t i = 0; i < n && !l.full; i++) {
        size_t mark = l.len;
        puts_lit(&l, ",");
        put_str(&l, fields[i].key);
        puts_lit(&l, ":");
        switch (fields[i].kind) {
        case LOG_KIND_STR:
            if (fields[i].s)
                put_str(&l, fields[i].s);
            else
                puts_lit(&l, "null");
            break;
        case LOG_KIND_INT:
            put_i64(&l, fields[i].i);
            break;
        case LOG_KIND_NUM:
            put_num(&l, fields[i].d);
            break;
        case LOG_KIND_BOOL:
            puts_lit(&l, fields[i].i ? "true" : "false");
            break;
        }
        if (l.full) l.len = mark; /* drop the field that did not fit */
    }
    l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    write_line(l.buf, l.len, level >= LOG_ERROR);
    errno = saved_errno;
}

void log_msg(log_level_t level, const char *msg)
{
    log_emit(level, msg, NULL, 0);
}
