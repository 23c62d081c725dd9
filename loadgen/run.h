/* loadgen/run.h — `corogate-loadgen run`: the load generator's client.
 *
 * Opens N TCP or WebSocket connections at a connect rate, optionally from many source
 * addresses and several processes, holds them for a duration idle or with traffic (open
 * loop at a constant rate per connection, closed loop, or receiving server pushes),
 * verifies every message that comes back, and reports connect and round-trip latency
 * percentiles, throughput, errors by kind and whether the requested connection count was
 * reached and held (lg_client.h has the model, lg_report.h the report, README.md the CLI
 * and the JSON schema).
 */
#ifndef LG_RUN_H
#define LG_RUN_H

#include <stdio.h>

/* Runs `run` with its own <argc>/<argv> (argv[0] = "run"). Returns the exit status: 0 the
 * connection count was reached and held and every message came back intact; 1 it was not
 * reached or not held (also when interrupted or when the run could not start); 2 usage
 * error; 3 reached and held, but messages were corrupt, lost or reordered. */
int lg_run_main(int argc, char **argv);

/* Writes the usage of `run` to <f>. */
void lg_run_usage(FILE *f);

#endif
