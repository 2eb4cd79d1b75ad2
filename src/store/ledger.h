/*
 * ledger.h: the usage ledger's write queue.
 *
 * Loop threads push finished rows (a copy, no I/O, one mutex hold); a background thread takes
 * them in batches (up to batch_rows, or whatever arrived within flush_ms) and appends them to
 * the store in one transaction. A failed append is retried with back-off and the rows are
 * kept, so nothing recorded is lost while the process lives. The queue has a cap: beyond
 * max_rows pushes still succeed (a request is never refused for accounting) but a warning is
 * logged, since memory is then growing. tg_ledger_stop drains everything before returning.
 */
#ifndef TG_STORE_LEDGER_H
#define TG_STORE_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct tg_ledger;

struct tg_ledger_opts {
    size_t batch_rows; /* default 64 */
    uint64_t flush_ms; /* default 200 */
    size_t max_rows;   /* warning threshold; default 100000 */
};

/* Starts the writer thread on store (borrowed; must outlive the ledger). */
int tg_ledger_start(struct tg_store *store, const struct tg_ledger_opts *opts,
                    struct tg_ledger **out);

/* Queues a copy of row. Thread-safe, never blocks on I/O. */
void tg_ledger_push(struct tg_ledger *l, const struct tg_ledger_row *row);

/* Rows queued and not yet written. */
size_t tg_ledger_depth(struct tg_ledger *l);

/* Blocks until every row queued before the call is written (or failed for good). */
void tg_ledger_flush(struct tg_ledger *l);

/* Flushes, stops the thread, frees the ledger. */
void tg_ledger_stop(struct tg_ledger *l);

#endif
