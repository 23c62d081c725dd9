/* loadgen/main.c — corogate-loadgen: dispatches to a subcommand.
 *
 * A subcommand is one row of <commands>: its name, a one-line summary, its entry point
 * (called with argv[0] = the subcommand's name) and its usage printer.
 */
#include <stdio.h>
#include <string.h>

#include "run.h"
#include "serve.h"

#ifndef CG_VERSION
#define CG_VERSION "0.0.0"
#endif

struct command {
    const char *name;
    const char *summary;
    int       (*main)(int argc, char **argv);
    void      (*usage)(FILE *f);
};

static const struct command commands[] = {
    { "run",   "load: many TCP/WebSocket connections, rates, latency, a verdict",
      lg_run_main, lg_run_usage },
    { "serve", "echo backend for corogate, its tests and capacity runs",
      lg_serve_main, lg_serve_usage },
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct command *find_command(const char *name)
{
    size_t i;

    for (i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void usage(FILE *f)
{
    size_t i;

    fprintf(f, "usage: corogate-loadgen COMMAND [options]\n"
               "       corogate-loadgen help [COMMAND]\n\n"
               "Commands:\n");
    for (i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-10s %s\n", "help", "this help, or one command's (also -h, --help)");
    fprintf(f, "  %-10s %s\n", "version", "print the version (also --version)");
    for (i = 0; i < NCOMMANDS; i++) {
        fputc('\n', f);
        commands[i].usage(f);
    }
}

int main(int argc, char **argv)
{
    const struct command *cmd;
    const char *name = argc > 1 ? argv[1] : NULL;

    if (!name) {
        usage(stderr);
        return 2;
    }
    if (strcmp(name, "help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
        if (argc > 2) {
            cmd = find_command(argv[2]);
            if (!cmd) {
                fprintf(stderr, "corogate-loadgen: unknown command '%s'\n\n", argv[2]);
                usage(stderr);
                return 2;
            }
            cmd->usage(stdout);
            return 0;
        }
        usage(stdout);
        return 0;
    }
    if (strcmp(name, "version") == 0 || strcmp(name, "--version") == 0) {
        printf("corogate-loadgen %s\n", CG_VERSION);
        return 0;
    }
    cmd = find_command(name);
    if (!cmd) {
        fprintf(stderr, "corogate-loadgen: unknown command '%s'\n\n", name);
        usage(stderr);
        return 2;
    }
    return cmd->main(argc - 1, argv + 1);
}
