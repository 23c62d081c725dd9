/* tests/fuzz/fuzz_config.c — the configuration file (inih and gateway/config/), as `corogate
 * -t` reads it: parsed and validated from memory. Every error must name the file (and its
 * line, key), and a file with errors gives no configuration. */
#include <string.h>

#include "config/config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cg_config *cfg = NULL;
    struct cg_errors errs;
    char *text = malloc(size + 1);
    size_t i, n;
    int rc;

    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    cg_errors_init(&errs);
    rc = cg_config_parse_string("fuzz.ini", text, &cfg, &errs);
    n = cg_errors_count(&errs);
    if (rc == 0) {
        FUZZ_CHECK(cfg != NULL, "no config and no error");
    } else {
        FUZZ_CHECK(cfg == NULL, "a config despite %d", rc);
        FUZZ_CHECK(n > 0, "refused (%d) without a message", rc);
    }
    for (i = 0; i < n; i++)
        FUZZ_CHECK(strncmp(cg_errors_get(&errs, i), "fuzz.ini", 8) == 0,
                   "error without the file: %s", cg_errors_get(&errs, i));
    cg_config_free(cfg);
    cg_errors_deinit(&errs);
    free(text);
    return 0;
}
