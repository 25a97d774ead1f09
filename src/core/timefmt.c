/* timefmt.c - RFC 3339 formatting and parsing; see timefmt.h. */
#include "core/timefmt.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t time_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* Formats us from scratch. */
static void format_full(int64_t us, char out[TIMEFMT_LEN + 1])
{
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    int64_t days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    char buf[96]; /* roomy: the compiler cannot see that every field fits */
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", y % 10000, m, d,
             (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), (int)frac);
    memcpy(out, buf, TIMEFMT_LEN);
    out[TIMEFMT_LEN] = '\0';
}

void time_format_us(int64_t us, char out[TIMEFMT_LEN + 1])
{
    /* Logs and responses format "now" many times a second: the date and
     * time of day change once a second, so keep them per thread and write
     * only the microseconds by hand. */
    static _Thread_local int64_t cached_sec = INT64_MIN;
    static _Thread_local char cached[TIMEFMT_LEN + 1];
    if (us < 0 || us > (INT64_C(1) << 60)) {
        format_full(us, out);
        return;
    }
    int64_t sec = us / 1000000, frac = us % 1000000;
    if (sec != cached_sec) {
        format_full(sec * 1000000, cached);
        cached_sec = sec;
    }
    memcpy(out, cached, 20); /* "YYYY-MM-DDTHH:MM:SS." */
    for (int i = 25; i >= 20; i--) {
        out[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    out[26] = 'Z';
    out[TIMEFMT_LEN] = '\0';
}

static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int time_parse_rfc3339(const char *s, int64_t *us)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h = 0, mi = 0, se = 0;
    if (!s || strlen(s) < 10) return -1;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap(y))) return -1;
    const char *p = s + 10;
    int64_t frac_us = 0, offset_s = 0;
    if (*p != '\0') {
        if (*p != 'T' && *p != 't' && *p != ' ') return -1;
        p++;
        if (strlen(p) < 8 || !digits(p, 2, &h) || p[2] != ':' || !digits(p + 3, 2, &mi) ||
            p[5] != ':' || !digits(p + 6, 2, &se))
            return -1;
        if (h > 23 || mi > 59 || se > 60) return -1;
        p += 8;
        if (*p == '.') {
            p++;
            int n = 0;
            int64_t scale = 100000;
            while (*p >= '0' && *p <= '9') {
                if (n < 6) frac_us += (*p - '0') * scale;
                scale /= 10;
                n++;
                p++;
            }
            if (n == 0 || n > 9) return -1;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int oh, om;
            if (strlen(p) != 6 || !digits(p + 1, 2, &oh) || p[3] != ':' ||
                !digits(p + 4, 2, &om) || oh > 23 || om > 59)
                return -1;
            offset_s = (oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
            p += 6;
        } else {
            return -1;
        }
        if (*p != '\0') return -1;
    }
    if (se == 60) se = 59; /* a leap second is clamped, not rejected */
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset_s;
    *us = secs * 1000000 + frac_us;
    return 0;
}
