/* loadgen/serve-log.c — `serve`'s lines on stderr (serve-log.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "serve-log.h"

void lg_serve_say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    memcpy(line, "serve: ", 7);
    va_start(ap, fmt);
    n = vsnprintf(line + 7, sizeof(line) - 8, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    n += 7;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n) < 0)
        return;   /* nowhere left to report it */
}
