/*
 * router.c: deployment choice and per-deployment runtime state (see router.h).
 *
 * All state of a route sits behind one mutex: a pick must see every deployment's breaker,
 * cooldown and outstanding count at once, and claiming a half-open probe must be atomic with
 * the choice. The critical sections are a loop over at most 64 entries.
 */
#include "policy/router.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

/* EWMA weight of a new sample, in eighths: new = old + (sample - old) * 2 / 8. */
#define EWMA_NUM 2
#define EWMA_DEN 8

struct dep {
    char *provider;
    char *upstream_model;
    char *unavailable; /* NULL: can be picked */
    uint32_t weight;
    int32_t priority;
    enum tg_breaker_state breaker;
    bool is_probing; /* half-open: the one probe is in flight */
    int64_t outstanding;
    int64_t ewma_ttft_ms; /* -1: unmeasured */
    uint64_t cooldown_until_ms;
    uint64_t open_until_ms;
    uint64_t window_start_ms;
    uint64_t window_calls;
    uint64_t window_failures;
};

struct tg_router {
    pthread_mutex_t mu;
    enum tg_route_strategy strategy;
    struct tg_breaker_conf breaker;
    size_t n;
    struct dep d[];
};

struct tg_router *
tg_router_new(const struct tg_router_deployment_conf *d, size_t n, enum tg_route_strategy strategy,
              const struct tg_breaker_conf *breaker)
{
    if (n == 0 || n > TG_ROUTER_MAX_DEPLOYMENTS) {
        return NULL;
    }
    struct tg_router *r = tg_xcalloc(1, sizeof(*r) + n * sizeof(r->d[0]));
    pthread_mutex_init(&r->mu, NULL);
    r->strategy = strategy;
    r->breaker = *breaker;
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        r->d[i].provider = tg_xstrdup(d[i].provider);
        r->d[i].upstream_model = tg_xstrdup(d[i].upstream_model);
        r->d[i].unavailable = d[i].unavailable ? tg_xstrdup(d[i].unavailable) : NULL;
        r->d[i].weight = d[i].weight > 0 ? d[i].weight : 1;
        r->d[i].priority = d[i].priority;
        r->d[i].ewma_ttft_ms = -1;
    }
    return r;
}

void
tg_router_free(struct tg_router *r)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        free(r->d[i].provider);
        free(r->d[i].upstream_model);
        free(r->d[i].unavailable);
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

size_t
tg_router_size(const struct tg_router *r)
{
    return r->n;
}

/* Set once at creation and never changed: no lock needed. */
const char *
tg_router_unavailable(const struct tg_router *r, size_t i)
{
    return i < r->n ? r->d[i].unavailable : NULL;
}

/* The breaker as seen at now: an open one past its open_ms is half-open. */
static enum tg_breaker_state
breaker_at(const struct dep *d, uint64_t now_ms)
{
    if (d->breaker == TG_BREAKER_OPEN && now_ms >= d->open_until_ms) {
        return TG_BREAKER_HALF_OPEN;
    }
    return d->breaker;
}

static bool
is_available(const struct dep *d, uint64_t now_ms)
{
    if (d->unavailable != NULL || now_ms < d->cooldown_until_ms) {
        return false;
    }
    switch (breaker_at(d, now_ms)) {
    case TG_BREAKER_CLOSED:
        return true;
    case TG_BREAKER_HALF_OPEN:
        return !d->is_probing;
    case TG_BREAKER_OPEN:
        return false;
    }
    return false;
}

/* Whether candidate a beats the best so far b under the strategy (weighted is handled by
 * the caller). Equal candidates keep the earlier one; the caller rotates the start. */
static bool
is_better(enum tg_route_strategy s, const struct dep *a, const struct dep *b)
{
    if (s == TG_ROUTE_LOWEST_LATENCY) {
        if (a->ewma_ttft_ms != b->ewma_ttft_ms) {
            /* Unmeasured (-1) first: a deployment must serve once to be measured. */
            return a->ewma_ttft_ms < b->ewma_ttft_ms;
        }
    }
    if (a->outstanding != b->outstanding) {
        return a->outstanding < b->outstanding;
    }
    return a->weight > b->weight;
}

static int
choose(struct tg_router *r, uint64_t exclude_mask, uint64_t now_ms, uint64_t rnd)
{
    bool ok[TG_ROUTER_MAX_DEPLOYMENTS];
    bool any = false;
    int32_t tier = 0;
    for (size_t i = 0; i < r->n; i++) {
        ok[i] = !(exclude_mask & (UINT64_C(1) << i)) && is_available(&r->d[i], now_ms);
        if (ok[i] && (!any || r->d[i].priority < tier)) {
            tier = r->d[i].priority;
        }
        any = any || ok[i];
    }
    if (!any) {
        return -1;
    }
    if (r->strategy == TG_ROUTE_WEIGHTED) {
        uint64_t total = 0;
        for (size_t i = 0; i < r->n; i++) {
            total += ok[i] && r->d[i].priority == tier ? r->d[i].weight : 0;
        }
        uint64_t x = rnd % total;
        for (size_t i = 0; i < r->n; i++) {
            if (!ok[i] || r->d[i].priority != tier) {
                continue;
            }
            if (x < r->d[i].weight) {
                return (int)i;
            }
            x -= r->d[i].weight;
        }
        return -1; /* not reached */
    }
    /* Start at a random place so ties spread instead of always landing on the first. */
    int best = -1;
    for (size_t k = 0; k < r->n; k++) {
        size_t i = (size_t)((rnd + k) % r->n);
        if (ok[i] && r->d[i].priority == tier &&
            (best < 0 || is_better(r->strategy, &r->d[i], &r->d[best]))) {
            best = (int)i;
        }
    }
    return best;
}

int
tg_router_pick(struct tg_router *r, uint64_t exclude_mask, uint64_t now_ms, uint64_t rnd)
{
    pthread_mutex_lock(&r->mu);
    int i = choose(r, exclude_mask, now_ms, rnd);
    if (i >= 0) {
        struct dep *d = &r->d[i];
        d->outstanding++;
        if (breaker_at(d, now_ms) == TG_BREAKER_HALF_OPEN) {
            d->breaker = TG_BREAKER_HALF_OPEN;
            d->is_probing = true;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return i;
}

static void
window_roll(struct dep *d, const struct tg_breaker_conf *b, uint64_t now_ms)
{
    if (now_ms - d->window_start_ms >= b->window_ms || now_ms < d->window_start_ms) {
        d->window_start_ms = now_ms;
        d->window_calls = 0;
        d->window_failures = 0;
    }
}

static void
trip(struct dep *d, const struct tg_breaker_conf *b, uint64_t now_ms)
{
    d->breaker = TG_BREAKER_OPEN;
    d->open_until_ms = now_ms + b->open_ms;
}

void
tg_router_record(struct tg_router *r, int i, enum tg_route_outcome o, int64_t ttft_ms,
                 uint64_t retry_after_ms, uint64_t now_ms)
{
    if (i < 0 || (size_t)i >= r->n) {
        return;
    }
    const struct tg_breaker_conf *b = &r->breaker;
    pthread_mutex_lock(&r->mu);
    struct dep *d = &r->d[i];
    d->outstanding -= d->outstanding > 0;
    bool was_probe = d->is_probing;
    if (o != TG_ROUTE_ABANDONED) {
        /* The probe ends with any verdict; an abandoned one frees the slot for another. */
        d->is_probing = false;
    } else if (was_probe) {
        d->is_probing = false;
        pthread_mutex_unlock(&r->mu);
        return;
    }
    switch (o) {
    case TG_ROUTE_OK:
        if (ttft_ms >= 0) {
            d->ewma_ttft_ms = d->ewma_ttft_ms < 0 ? ttft_ms
                                                  : d->ewma_ttft_ms + (ttft_ms - d->ewma_ttft_ms) *
                                                                          EWMA_NUM / EWMA_DEN;
        }
        if (was_probe) {
            d->breaker = TG_BREAKER_CLOSED;
            d->window_start_ms = now_ms;
            d->window_calls = 0;
            d->window_failures = 0;
        }
        window_roll(d, b, now_ms);
        d->window_calls++;
        break;
    case TG_ROUTE_FAILED:
        if (was_probe) {
            trip(d, b, now_ms);
            break;
        }
        window_roll(d, b, now_ms);
        d->window_calls++;
        d->window_failures++;
        if (d->breaker == TG_BREAKER_CLOSED && b->failures > 0 &&
            d->window_failures >= b->failures &&
            d->window_failures * 100 >= (uint64_t)b->error_rate_pct * d->window_calls) {
            trip(d, b, now_ms);
        }
        break;
    case TG_ROUTE_THROTTLED: {
        uint64_t until = now_ms + (retry_after_ms > 0 ? retry_after_ms : TG_ROUTER_COOLDOWN_MS);
        if (until > d->cooldown_until_ms) {
            d->cooldown_until_ms = until;
        }
        if (was_probe) {
            /* Not a verdict on health: let the next call probe again. */
            d->breaker = TG_BREAKER_OPEN;
        }
        break;
    }
    case TG_ROUTE_ABANDONED:
        break;
    }
    pthread_mutex_unlock(&r->mu);
}

void
tg_router_view(struct tg_router *r, size_t i, uint64_t now_ms, struct tg_deployment_view *out)
{
    memset(out, 0, sizeof(*out));
    if (i >= r->n) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    const struct dep *d = &r->d[i];
    out->provider = d->provider;
    out->upstream_model = d->upstream_model;
    out->weight = d->weight;
    out->priority = d->priority;
    out->unavailable = d->unavailable;
    out->breaker = breaker_at(d, now_ms);
    out->outstanding = d->outstanding;
    out->ewma_ttft_ms = d->ewma_ttft_ms;
    out->cooldown_until_ms = d->cooldown_until_ms;
    out->open_until_ms = d->open_until_ms;
    out->window_calls = d->window_calls;
    out->window_failures = d->window_failures;
    pthread_mutex_unlock(&r->mu);
}

const char *
tg_breaker_state_name(enum tg_breaker_state s)
{
    switch (s) {
    case TG_BREAKER_CLOSED:
        return "closed";
    case TG_BREAKER_OPEN:
        return "open";
    case TG_BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "closed";
}

static const char *const strategy_names[] = {"weighted", "least_outstanding", "lowest_latency"};

const char *
tg_route_strategy_name(enum tg_route_strategy s)
{
    return (size_t)s < sizeof(strategy_names) / sizeof(strategy_names[0]) ? strategy_names[s]
                                                                          : "weighted";
}

bool
tg_route_strategy_parse(const char *s, enum tg_route_strategy *out)
{
    for (size_t i = 0; s != NULL && i < sizeof(strategy_names) / sizeof(strategy_names[0]); i++) {
        if (strcmp(s, strategy_names[i]) == 0) {
            *out = (enum tg_route_strategy)i;
            return true;
        }
    }
    return false;
}
