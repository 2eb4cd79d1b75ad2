/*
 * admission.h: rate limits and hard budgets, decided and reserved at once before a request
 * reaches the provider, and settled when its usage is known.
 *
 * One admit call sees every level of a request (key, project, organization) with the limits
 * that apply to it (for all models and for the request's model) and its monthly budget. The
 * request is admitted only if every rate limit (requests and tokens, per minute and per day,
 * GCRA) and every budget admits it; then all of them are charged together. A refusal at any
 * level charges nothing anywhere. Budgets reserve the request's cost bound; settle replaces
 * the reservation by the real cost (and refunds the token difference to the token limits);
 * release gives everything back (the call failed before the provider did any work). A request
 * is billed to the budget period it was admitted in.
 *
 * The local implementation (admission_local.c) keeps its counters in process memory, exact
 * under concurrency (every worker thread admits through the same object). The cluster
 * implementation (one Redis script) will be a second ops table with the same contract.
 *
 * Times are Unix milliseconds; money is integer micro-dollars; 0 means "no limit".
 */
#ifndef TG_POLICY_ADMISSION_H
#define TG_POLICY_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tg_scope { TG_SCOPE_KEY, TG_SCOPE_PROJECT, TG_SCOPE_ORG, TG_SCOPE_COUNT };

/* "key", "project", "organization" */
const char *tg_scope_name(enum tg_scope s);

/* Rate limits of one level; 0 = unlimited; a limit above TG_RATE_LIMIT_MAX counts as that
 * (the counters' exact arithmetic needs limit x window to fit in 64 bits). */
#define TG_RATE_LIMIT_MAX INT64_C(100000000000)
struct tg_rate_limit {
    int64_t rpm; /* requests per minute */
    int64_t tpm; /* tokens per minute */
    int64_t rpd; /* requests per day */
    int64_t tpd; /* tokens per day */
};

struct tg_admit_level {
    const char *id;                  /* key id, project id, org id; NULL skips the level */
    struct tg_rate_limit all_models; /* limits on every request of the level */
    struct tg_rate_limit model;      /* limits on requests for this model (separate counters) */
    int64_t budget_micros;           /* monthly hard limit; 0 = no budget at this level */
};

struct tg_admit_request {
    int64_t now_ms;
    const char *model;
    struct tg_admit_level levels[TG_SCOPE_COUNT];
    int64_t tokens;            /* token cost: prompt estimate + max_tokens x n (OpenAI's way) */
    int64_t cost_bound_micros; /* the most this request can cost */
};

enum tg_admit_verdict {
    TG_ADMIT_OK,
    TG_ADMIT_RATE_LIMITED, /* 429 rate_limit_exceeded, with retry-after */
    TG_ADMIT_OVER_BUDGET,  /* 429 insufficient_quota */
};

struct tg_admit_result {
    enum tg_admit_verdict verdict;
    /* The refusal: which level, and for rate limits what kind. */
    enum tg_scope scope;
    bool is_model_limit; /* the model's limit (else the all-models one) */
    bool is_tokens;      /* tokens (else requests) */
    bool is_daily;       /* per day (else per minute) */
    /* The request's tokens exceed the whole limit: no wait admits it (answer 429 tokens, as
     * OpenAI does for a request larger than TPM, with x-should-retry: false); retry_after_ms
     * is then 0. */
    bool is_too_large;
    int64_t limit; /* the limit that refused (requests, tokens or micro-dollars) */
    int64_t retry_after_ms;
    /* For x-ratelimit-* headers (OpenAI's): the tightest per-minute limit among the levels,
     * what remains of it after this request, and when it is whole again. -1 when no level has
     * such a limit (the headers are then left out). */
    int64_t limit_requests;
    int64_t remaining_requests;
    int64_t reset_requests_ms;
    int64_t limit_tokens;
    int64_t remaining_tokens;
    int64_t reset_tokens_ms;
    /* The least budget left among budgeted levels after the reservation; -1 when none. */
    int64_t budget_remaining_micros;
    /* Handle for settle or release (admitted requests only). */
    uint64_t reservation;
};

struct tg_admission;

struct tg_admission_ops {
    const char *name; /* "local" */
    /* Decides r (see above). Returns 0 with out filled (admitted or not), or a negative code
     * when the decision could not be made (the caller answers 503). Thread-safe. */
    int (*admit)(struct tg_admission *a, const struct tg_admit_request *r,
                 struct tg_admit_result *out);
    /* The admitted request's real usage: tokens replace the token reservation (the
     * difference is refunded or charged to the minute and day windows it was admitted in),
     * cost_micros replaces the cost bound in the budgets of the period it was admitted in. */
    void (*settle)(struct tg_admission *a, uint64_t reservation, int64_t tokens,
                   int64_t cost_micros);
    /* The admitted request cost nothing: undo its charges. */
    void (*release)(struct tg_admission *a, uint64_t reservation);
    /* Spend of a level in the budget period containing now_ms: settled plus reserved. */
    int64_t (*spend)(struct tg_admission *a, enum tg_scope scope, const char *id, int64_t now_ms);
    /* Adds already-settled spend of a level in the period starting at period_start_ms (at
     * start-up, from the ledger, so a restart keeps the month's spend). */
    void (*seed_spend)(struct tg_admission *a, enum tg_scope scope, const char *id,
                       int64_t period_start_ms, int64_t micros);
    void (*free)(struct tg_admission *a);
};

struct tg_admission {
    const struct tg_admission_ops *ops;
};

/* The in-process implementation. tz_offset_minutes places the calendar-month boundary (0 =
 * UTC). Returns 0 and sets *out, or a negative code. */
int tg_admission_local_new(int tz_offset_minutes, struct tg_admission **out);

/* Start of the calendar month containing t (ms), in the zone tz_offset_minutes east of UTC;
 * and the start of the next month. */
int64_t tg_period_start_ms(int64_t t, int tz_offset_minutes);
int64_t tg_period_next_ms(int64_t t, int tz_offset_minutes);

#endif
