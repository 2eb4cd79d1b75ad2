/*
 * serve.h: `tollgate serve`: start-up (config, store, first-start bootstrap, workers), the
 * signal handling, and the orderly stop that loses no ledger row.
 */
#ifndef TG_GATEWAY_SERVE_H
#define TG_GATEWAY_SERVE_H

/* Runs the gateway until SIGTERM/SIGINT. argv holds the options after "serve". Returns the
 * process exit code. */
int tg_serve_main(int argc, char **argv);

#endif
