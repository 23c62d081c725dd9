/* common/parse.c — strict decimal parsing (common/parse.h). */
#include <errno.h>

#include "common/parse.h"

int cg_parse_u64_prefix(const char *s, uint64_t *v, const char **end)
{
    uint64_t n = 0;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (UINT64_MAX - (uint64_t)(*p - '0')) / 10) {
            while (*p >= '0' && *p <= '9')
                p++;
            *end = p;
            return -ERANGE;
        }
        n = n * 10 + (uint64_t)(*p - '0');
    }
    *v = n;
    *end = p;
    return 0;
}

int cg_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    const char *end;
    uint64_t v;

    if (!s || cg_parse_u64_prefix(s, &v, &end) < 0 || *end || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}
