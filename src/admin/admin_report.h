/*
 * admin_report.h: what the usage and costs APIs share: the page of time buckets a request
 * asks for, the ledger sums of that page (filtered by several projects, keys or models, and
 * merged to the groups asked for), the split of a cost into OpenAI's line items, and CSV.
 *
 * Private to src/admin. The pure parts (windows, cursors, rows, the split, CSV quoting) take
 * plain values so the unit tests drive them without a request or a store.
 *
 * Pages are pages of buckets, as OpenAI's: buckets sit on a grid aligned to the Unix epoch
 * (days start at 00:00 UTC), the first is the one holding start_time, a page holds at most
 * limit buckets (empty ones included, with "results": []), and next_page is an opaque cursor
 * ("page_" and 16 hex digits of the next bucket's Unix second) while buckets remain before
 * end_time (default: now).
 */
#ifndef TG_ADMIN_ADMIN_REPORT_H
#define TG_ADMIN_ADMIN_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin/admin_int.h"
#include "core/buf.h"
#include "policy/price.h"
#include "store/store.h"

/* Most values one list filter (project_ids, api_key_ids, models) may hold. */
#define ADMIN_REPORT_MAX_IDS 64
/* Most buckets one CSV answer covers (it is not paged): 31 days of minutes. */
#define ADMIN_REPORT_CSV_MAX_BUCKETS 44640

/* The buckets one answer covers. */
struct admin_report_window {
    int64_t bucket_ms;
    int64_t first_ms;  /* start of the first bucket of the page */
    int64_t n_buckets; /* buckets in the page (0 when the window is empty) */
    int64_t start_ms;  /* rows counted: time_ms in [start_ms, end_ms) */
    int64_t end_ms;
    bool has_more;
    int64_t next_s; /* the next page's first bucket (Unix seconds) when has_more */
};

/*
 * The page of buckets for start_s (inclusive) .. end_ms (exclusive, already defaulted to now
 * by the caller) in buckets of bucket_ms, at most limit of them, starting at the cursor's
 * bucket when page_s >= 0 (else at the bucket holding start_s). Returns false when the
 * cursor lies outside the window (a cursor of another query).
 */
bool admin_report_window_make(int64_t start_s, int64_t end_ms, int64_t bucket_ms, int64_t limit,
                              int64_t page_s, struct admin_report_window *out);

/* The cursor text for Unix second s ("page_" + 16 hex digits) into out[24]; and back
 * (false when text is not one). */
void admin_report_cursor(int64_t s, char out[24]);
bool admin_report_cursor_parse(const char *text, int64_t *s_out);

/* One group of one bucket: the store's sums, strings owned by the report. */
struct admin_report_row {
    int64_t bucket_ms;
    char *project_id; /* NULL unless grouped by it */
    char *key_id;
    char *model;
    int64_t requests;
    int64_t prompt_tokens;
    int64_t cached_tokens;
    int64_t completion_tokens;
    int64_t reasoning_tokens;
    int64_t cost_micros;
};

/* Which groups the answer shows, and the list filters (ids already resolved). A filter
 * with one value is passed to the store; with several, the store groups by that column and
 * the rows are filtered and merged here. */
struct admin_report_spec {
    bool by_project;
    bool by_key;
    bool by_model;
    const char *project_ids[ADMIN_REPORT_MAX_IDS];
    size_t n_project_ids;
    const char *key_ids[ADMIN_REPORT_MAX_IDS];
    size_t n_key_ids;
    const char *models[ADMIN_REPORT_MAX_IDS];
    size_t n_models;
};

struct admin_report {
    struct admin_report_spec spec;
    struct admin_report_row *rows; /* sorted by bucket, project, key, model (NULL first) */
    size_t n_rows;
    size_t rows_cap;
};

void admin_report_init(struct admin_report *r, const struct admin_report_spec *spec);
void admin_report_deinit(struct admin_report *r);

/* Adds one store result: dropped unless it passes the list filters; the columns not grouped
 * by are cleared. Call admin_report_finish after the last. */
void admin_report_add(struct admin_report *r, const struct tg_usage_result *u);

/* Sorts the rows and merges those of the same bucket and groups (sums are exact integers). */
void admin_report_finish(struct admin_report *r);

/*
 * Runs the store's usage query for the window (endpoint filters as in tg_usage_query) into
 * r and finishes it. Returns 0 or the store's error.
 */
int admin_report_load(struct admin_report *r, struct tg_store *store, const char *org_id,
                      const struct admin_report_window *w, const char *endpoint,
                      const char *const *endpoints, size_t n_endpoints);

/*
 * Reads the request's report parameters shared by usage and costs: start_time (required),
 * end_time, page, limit (def_limit when absent, 1..max_limit), format (json or csv: a CSV
 * answer covers the whole window, unpaged, up to ADMIN_REPORT_CSV_MAX_BUCKETS buckets), and
 * the list filters project_ids (names accepted), api_key_ids and, when with_models, models
 * (each repeated or name[] or comma-separated). Returns false after answering 400.
 */
bool admin_report_params(struct admin_job *j, int64_t bucket_ms, int64_t def_limit,
                         int64_t max_limit, bool with_models, struct admin_report_window *w,
                         struct admin_report_spec *spec, bool *is_csv);

/* Whether group_by names column (repeated parameters or a comma-separated list). */
bool admin_report_has_group(struct admin_job *j, const char *column);

/* Refuses (400, false) a group_by value outside the NULL-terminated allowed list. */
bool admin_report_groups_check(struct admin_job *j, const char *const *allowed);

/*
 * Splits cost_micros into OpenAI's line items of one model: [0] input (uncached prompt
 * tokens), [1] cached input, [2] output. The parts are shares of the ledger's cost in the
 * proportion of tokens x price (price NULL or all-zero weights: of the token counts; no tokens
 * at all: all of it input), rounded by largest remainder, so they always sum to cost_micros
 * exactly whatever the prices were when the requests were billed.
 */
void admin_cost_split(int64_t cost_micros, int64_t prompt_tokens, int64_t cached_tokens,
                      int64_t completion_tokens, const struct tg_price *price, int64_t out[3]);

/* Appends s as one CSV field (RFC 4180: quoted when it holds a comma, quote or line break;
 * a leading =, +, - or @ is prefixed with ' so a spreadsheet never runs it as a formula);
 * NULL is an empty field. */
void admin_csv_field(struct tg_buf *b, const char *s);

/* Appends micro-dollars as a decimal USD number ("0.000150"), valid in JSON and CSV. */
void admin_usd_number(struct tg_buf *b, int64_t micros);

/* Appends Unix milliseconds as ISO 8601 UTC ("2026-01-01T00:00:00Z"). */
void admin_iso_time(struct tg_buf *b, int64_t ms);

#endif
