/* common/parse.h — decimal numbers from text, strictly: no sign, no spaces, no junk, no
 * silent overflow. One parser for the daemon's config and environment and the loadgen's
 * command line. */
#ifndef CG_PARSE_H
#define CG_PARSE_H

#include <stdint.h>

/* Parses the run of decimal digits at the start of <s> into *<v>; *<end> gets the first
 * byte after them (the caller decides whether a unit or nothing may follow). Returns 0,
 * -EINVAL when <s> does not start with a digit, or -ERANGE on overflow (*<end> then past
 * every digit all the same). */
int cg_parse_u64_prefix(const char *s, uint64_t *v, const char **end);

/* Parses all of <s> as a decimal number in <min>..<max> into *<out>. Returns 0 or -EINVAL
 * (no number, junk after it, out of range, NULL). */
int cg_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

#endif
