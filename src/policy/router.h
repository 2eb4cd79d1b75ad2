/*
 * router.h: picks the deployment that serves a call of a model route, and keeps each
 * deployment's runtime state (outstanding calls, time-to-first-token EWMA, circuit breaker,
 * 429 cooldown).
 *
 * A route (one model name in the config) lists up to TG_ROUTER_MAX_DEPLOYMENTS deployments:
 * a provider and its name for the model, with a weight and a priority tier (lower tiers are
 * preferred; a higher tier serves only when every deployment of the lower tiers is excluded,
 * cooling down or open). One struct tg_router per route holds their state; every worker
 * thread shares it, so each router has one mutex (a pick touches a handful of fields, and a
 * route's calls are not frequent enough for the lock to matter next to an upstream call).
 *
 * Breaker: closed -> open when, within the current window of window_ms, at least `failures`
 * calls failed and they are at least error_rate_pct of the window's calls. Open -> half-open
 * once open_ms has passed: one probe call is let through; its success closes the breaker (a
 * fresh window), its failure opens it again for open_ms (the first verdict recorded on the
 * deployment after the probe was claimed decides: a call begun before the breaker opened may
 * end first and speak for the probe, which only moves the decision earlier). A 429 does not
 * count against the breaker: it cools the deployment down until its retry-after (or
 * TG_ROUTER_COOLDOWN_MS).
 *
 * Times are the caller's monotonic milliseconds, so tests drive them.
 */
#ifndef TG_POLICY_ROUTER_H
#define TG_POLICY_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TG_ROUTER_MAX_DEPLOYMENTS 64 /* the exclude set is a 64-bit mask */
#define TG_ROUTER_COOLDOWN_MS 1000   /* a 429 without a usable retry-after */

enum tg_route_strategy {
    TG_ROUTE_WEIGHTED,          /* random in proportion to weight */
    TG_ROUTE_LEAST_OUTSTANDING, /* fewest calls in flight (ties: by weight, at random) */
    TG_ROUTE_LOWEST_LATENCY,    /* lowest EWMA of time to first token (unmeasured first) */
};

struct tg_breaker_conf {
    uint32_t failures;       /* 5; failures in the window before it can open; 0: never */
    uint32_t error_rate_pct; /* 50; and the share of the window's calls that failed */
    uint64_t window_ms;      /* 30000 */
    uint64_t open_ms;        /* 10000 */
};

struct tg_router_deployment_conf {
    const char *provider;       /* copied */
    const char *upstream_model; /* copied */
    uint32_t weight;            /* >= 1 */
    int32_t priority;           /* tier; lower is preferred */
    /* Copied; non-NULL: the deployment is never picked, and this says why (its provider's
     * key could not be resolved at start, e.g. "provider 'x': environment variable X is not
     * set"). It never holds a secret. */
    const char *unavailable;
};

enum tg_breaker_state { TG_BREAKER_CLOSED, TG_BREAKER_OPEN, TG_BREAKER_HALF_OPEN };

enum tg_route_outcome {
    TG_ROUTE_OK,        /* answered (2xx or a client error the deployment is not to blame for) */
    TG_ROUTE_FAILED,    /* connect error, timeout, 5xx */
    TG_ROUTE_THROTTLED, /* 429: cool down */
    TG_ROUTE_ABANDONED, /* not attempted to the end (shutdown, client gone): no verdict */
};

/* One deployment's state, copied out for the admin API. */
struct tg_deployment_view {
    const char *provider;       /* borrowed from the router */
    const char *upstream_model; /* borrowed from the router */
    uint32_t weight;
    int32_t priority;
    const char *unavailable; /* borrowed from the router; NULL when it can be picked */
    enum tg_breaker_state breaker;
    int64_t outstanding;
    int64_t ewma_ttft_ms;       /* -1 when never measured */
    uint64_t cooldown_until_ms; /* monotonic; 0 or past when not cooling down */
    uint64_t open_until_ms;     /* monotonic; when an open breaker lets a probe through */
    uint64_t window_calls;
    uint64_t window_failures;
};

struct tg_router;

/* A router for n (1..TG_ROUTER_MAX_DEPLOYMENTS) deployments. Returns NULL when n is out of
 * range. Aborts on out-of-memory (tg_x*). */
struct tg_router *tg_router_new(const struct tg_router_deployment_conf *d, size_t n,
                                enum tg_route_strategy strategy,
                                const struct tg_breaker_conf *breaker);
void tg_router_free(struct tg_router *r);

size_t tg_router_size(const struct tg_router *r);

/*
 * Picks a deployment not in exclude_mask (bit i: deployment i) by the strategy, in the best
 * tier that has one available at now_ms; rnd is a random number (the caller's generator, so
 * tests are deterministic); an unavailable deployment is never chosen. Counts the call as
 * outstanding and, for a half-open breaker, claims its one probe. Returns the index, or -1 when
 * none is available. Every pick must be followed by exactly one tg_router_record for the same
 * index.
 */
int tg_router_pick(struct tg_router *r, uint64_t exclude_mask, uint64_t now_ms, uint64_t rnd);

/* The result of a picked call: outstanding is decremented; ttft_ms (>= 0 when known) feeds
 * the EWMA on success; retry_after_ms (0: unknown) sets the cooldown of a TG_ROUTE_THROTTLED. */
void tg_router_record(struct tg_router *r, int i, enum tg_route_outcome o, int64_t ttft_ms,
                      uint64_t retry_after_ms, uint64_t now_ms);

/* Deployment i's conf and state at now_ms (an open breaker whose open_ms has passed reads as
 * half-open). */
void tg_router_view(struct tg_router *r, size_t i, uint64_t now_ms, struct tg_deployment_view *out);

/* Why deployment i can never be picked (borrowed), or NULL when it can. */
const char *tg_router_unavailable(const struct tg_router *r, size_t i);

/* "closed", "open", "half_open". */
const char *tg_breaker_state_name(enum tg_breaker_state s);

/* "weighted", "least_outstanding", "lowest_latency"; parse returns false for anything else. */
const char *tg_route_strategy_name(enum tg_route_strategy s);
bool tg_route_strategy_parse(const char *s, enum tg_route_strategy *out);

#endif
