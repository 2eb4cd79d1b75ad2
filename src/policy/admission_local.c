/*
 * admission_local.c: the in-process admission (admission.h), one object shared by every
 * worker thread.
 *
 * Rate limits are GCRA counters, one per (level, id, model or all, requests or tokens, minute
 * or day): each holds a theoretical arrival time (TAT). A limit L per window W spaces units
 * by the emission interval W / L and tolerates a burst of the whole limit, so a cost c is
 * admitted at now when max(TAT, now) + c * W / L - now <= W. W / L is rarely a whole number of
 * milliseconds, so a TAT is kept exactly as milliseconds plus a fraction in units of 1 / L ms
 * (struct tick); limit x window then has to fit in 64 bits, hence TG_RATE_LIMIT_MAX.
 *
 * Budgets are (level, id, calendar month) entries of settled and reserved micro-dollars.
 * Spend is tracked at every level that has an id, budgeted or not, so a budget set mid-month
 * starts from the month's real spend.
 *
 * All counters live in one chained hash table behind one mutex. The critical section is a
 * few dozen lookups and integer updates: keys and hashes are built before taking the lock,
 * entries are allocated only on a counter's first use, and reservations are slots recycled
 * through a free list, so the steady state allocates nothing under the lock. An entry that
 * holds no information (a rate counter whose TAT has passed, a budget entry with nothing
 * reserved from a month before the previous one) is freed by an incremental sweep of a few
 * buckets on every admit; entries that a pending reservation points to are pinned.
 *
 * settle and release take no time argument: they use the latest now_ms an admit has seen
 * (the admission clock), so a test clock drives them too.
 */
#include "policy/admission.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"

#define MINUTE_MS INT64_C(60000)
#define DAY_MS INT64_C(86400000)
#define KEY_CAP 320
#define N_KINDS 4                             /* rpm, tpm, rpd, tpd */
#define N_RATE (TG_SCOPE_COUNT * 2 * N_KINDS) /* levels x (all models, model) x kinds */
#define SWEEP_BUCKETS 4
#define MIN_BUCKETS 256
/* Usage beyond a reservation is charged up to this many whole windows (a garbled usage
 * report must not overflow a counter; one so large blocks the counter for days anyway). */
#define EXTRA_WINDOWS_MAX 1000
#define TZ_MAX_MINUTES (18 * 60)
/* Money beyond this (2.3 million million dollars) is garbage, refused or clamped, so sums of
 * a few such amounts cannot overflow. */
#define MICROS_MAX (INT64_MAX / 4)

/* A point in time: ms + frac / limit milliseconds, 0 <= frac < limit. */
struct tick {
    int64_t ms;
    int64_t frac;
};

enum entry_kind { ENTRY_RATE, ENTRY_BUDGET };

struct entry {
    struct entry *next;
    uint64_t hash;
    int32_t n_pending; /* reservations pointing here: not swept while > 0 */
    enum entry_kind kind;
    union {
        struct {
            struct tick tat;
            int64_t limit; /* the limit tat's fraction is counted in */
            int64_t window_ms;
            bool is_tokens;
        } rate;
        struct {
            int64_t period_start_ms;
            int64_t settled;
            int64_t reserved;
        } budget;
    } u;
    size_t key_len;
    char key[];
};

/* One counter a request touches, prepared before the lock. */
struct probe {
    struct entry *e;
    uint64_t hash;
    size_t key_len;
    enum tg_scope scope;
    bool is_model;
    bool is_tokens;
    bool is_daily;
    int64_t limit; /* rate: the limit; budget: the hard limit or 0 */
    int64_t window_ms;
    int64_t cost;
    char key[KEY_CAP];
};

struct resv_rate {
    struct entry *e;
    int64_t a_ms; /* the counter's TAT right after this request's charge (floor) */
};

struct resv {
    uint32_t gen;
    uint32_t next_free; /* index + 1 of the next free slot; 0 ends the list */
    bool in_use;
    int64_t tokens;
    int64_t cost_micros;
    size_t n_rate;
    size_t n_budget;
    struct resv_rate rate[N_RATE];
    struct entry *budget[TG_SCOPE_COUNT];
};

struct local {
    struct tg_admission base;
    pthread_mutex_t mu;
    int tz_offset_minutes;
    int64_t now_ms; /* latest now_ms seen by admit */
    struct entry **buckets;
    size_t n_buckets; /* a power of two */
    size_t n_entries;
    size_t sweep_cursor;
    struct resv *slots;
    size_t n_slots;
    uint32_t free_head; /* index + 1; 0 = none */
};

const char *
tg_scope_name(enum tg_scope s)
{
    switch (s) {
    case TG_SCOPE_KEY:
        return "key";
    case TG_SCOPE_PROJECT:
        return "project";
    case TG_SCOPE_ORG:
        return "organization";
    case TG_SCOPE_COUNT:
        break;
    }
    return "unknown";
}

/* ---- calendar months ------------------------------------------------------------------- */

static int64_t
floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if (a % b != 0 && (a < 0) != (b < 0)) {
        q--;
    }
    return q;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t
days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void
civil_from_days(int64_t z, int64_t *y, int64_t *m)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yoe + era * 400 + (*m <= 2);
}

static int64_t
month_start_ms(int64_t t, int tz_offset_minutes, int months_ahead)
{
    int64_t off = (int64_t)tz_offset_minutes * MINUTE_MS;
    int64_t y, m;
    civil_from_days(floor_div(t + off, DAY_MS), &y, &m);
    m += months_ahead;
    if (m > 12) {
        m -= 12;
        y++;
    }
    return days_from_civil(y, m, 1) * DAY_MS - off;
}

int64_t
tg_period_start_ms(int64_t t, int tz_offset_minutes)
{
    return month_start_ms(t, tz_offset_minutes, 0);
}

int64_t
tg_period_next_ms(int64_t t, int tz_offset_minutes)
{
    return month_start_ms(t, tz_offset_minutes, 1);
}

/* ---- exact GCRA arithmetic ------------------------------------------------------------- */

static int
tick_cmp(struct tick a, struct tick b)
{
    if (a.ms != b.ms) {
        return a.ms < b.ms ? -1 : 1;
    }
    return a.frac < b.frac ? -1 : a.frac > b.frac;
}

static struct tick
tick_add(struct tick a, struct tick b, int64_t limit)
{
    struct tick r = {a.ms + b.ms, a.frac + b.frac};
    if (r.frac >= limit) {
        r.frac -= limit;
        r.ms++;
    }
    return r;
}

static struct tick
tick_sub(struct tick a, struct tick b, int64_t limit)
{
    struct tick r = {a.ms - b.ms, a.frac - b.frac};
    if (r.frac < 0) {
        r.frac += limit;
        r.ms--;
    }
    return r;
}

/* cost x window / limit as a tick; cost <= limit x EXTRA_WINDOWS_MAX. Splitting cost by the
 * limit keeps every product below limit x window. */
static struct tick
span(int64_t cost, int64_t window_ms, int64_t limit)
{
    int64_t q = cost / limit, r = cost % limit;
    struct tick t = {q * window_ms + r * window_ms / limit, r * window_ms % limit};
    return t;
}

static int64_t
ceil_ms(struct tick t)
{
    return t.ms + (t.frac > 0);
}

/* Units of the limit left at now: floor((W - (tat - now)) / (W / L)), 0 when overdrawn. */
static int64_t
rate_remaining(const struct entry *e, int64_t now)
{
    int64_t w = e->u.rate.window_ms, l = e->u.rate.limit;
    struct tick tat = e->u.rate.tat;
    if (tick_cmp(tat, (struct tick){now, 0}) <= 0) {
        return l;
    }
    int64_t d_ms = tat.ms - now;
    if (d_ms >= w) {
        return 0; /* d >= W (d == W has frac 0 only if exactly full) */
    }
    return ((w - d_ms) * l - tat.frac) / w;
}

/* Milliseconds until the counter is whole again (tat <= now). */
static int64_t
rate_reset_ms(const struct entry *e, int64_t now)
{
    struct tick tat = e->u.rate.tat;
    if (tick_cmp(tat, (struct tick){now, 0}) <= 0) {
        return 0;
    }
    return ceil_ms(tick_sub(tat, (struct tick){now, 0}, e->u.rate.limit));
}

static struct tick
tick_max_now(struct tick t, int64_t now)
{
    struct tick n = {now, 0};
    return tick_cmp(t, n) < 0 ? n : t;
}

/* Moves the counter's TAT back by cost, but by no more than what is left of the charge that
 * ended at a_ms. While a_ms - now covers the refund, no admission since that charge can have
 * found the counter idle had the request cost less, so the result is exactly the TAT the real
 * cost would have given; beyond that only the undrained part is refunded, so a refund never
 * lets a window admit more than its limit. Never before now: a GCRA counter banks no credit. */
static void
rate_refund(struct entry *e, int64_t cost, int64_t a_ms, int64_t now)
{
    int64_t l = e->u.rate.limit;
    if (cost <= 0 || a_ms <= now) {
        return;
    }
    if (cost > l * EXTRA_WINDOWS_MAX) {
        cost = l * EXTRA_WINDOWS_MAX;
    }
    struct tick r = span(cost, e->u.rate.window_ms, l);
    struct tick cap = {a_ms - now, 0};
    if (tick_cmp(r, cap) > 0) {
        r = cap;
    }
    struct tick t = tick_sub(e->u.rate.tat, r, l);
    e->u.rate.tat = tick_max_now(t, now);
}

static void
rate_charge(struct entry *e, int64_t cost, int64_t now)
{
    int64_t l = e->u.rate.limit;
    if (cost > l * EXTRA_WINDOWS_MAX) {
        cost = l * EXTRA_WINDOWS_MAX;
    }
    e->u.rate.tat =
        tick_add(tick_max_now(e->u.rate.tat, now), span(cost, e->u.rate.window_ms, l), l);
}

/* Sums of spend saturate rather than wrap: a saturated budget refuses, a wrapped one admits. */
static int64_t
add_micros(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static int64_t
spend_of(const struct entry *e)
{
    return add_micros(e->u.budget.settled, e->u.budget.reserved);
}

/* ---- the table ------------------------------------------------------------------------- */

static uint64_t
hash_key(const char *key, size_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)key[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static struct entry *
lookup(struct local *l, const struct probe *p)
{
    struct entry *e = l->buckets[p->hash & (l->n_buckets - 1)];
    for (; e != NULL; e = e->next) {
        if (e->hash == p->hash && e->key_len == p->key_len &&
            memcmp(e->key, p->key, p->key_len) == 0) {
            return e;
        }
    }
    return NULL;
}

static void
grow(struct local *l)
{
    size_t n = l->n_buckets * 2;
    struct entry **b = tg_xcalloc(n, sizeof(*b));
    for (size_t i = 0; i < l->n_buckets; i++) {
        struct entry *e = l->buckets[i];
        while (e != NULL) {
            struct entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(l->buckets);
    l->buckets = b;
    l->n_buckets = n;
}

/* The probe's entry, made on first use (the only allocation under the lock). */
static struct entry *
find_or_add(struct local *l, const struct probe *p, enum entry_kind kind)
{
    struct entry *e = lookup(l, p);
    if (e != NULL) {
        return e;
    }
    if (l->n_entries >= l->n_buckets) {
        grow(l);
    }
    e = tg_xcalloc(1, sizeof(*e) + p->key_len);
    e->hash = p->hash;
    e->kind = kind;
    e->key_len = p->key_len;
    memcpy(e->key, p->key, p->key_len);
    size_t b = p->hash & (l->n_buckets - 1);
    e->next = l->buckets[b];
    l->buckets[b] = e;
    l->n_entries++;
    return e;
}

/* The counter is as if it did not exist: nothing pending, nothing to remember. */
static bool
is_idle(const struct local *l, const struct entry *e, int64_t now)
{
    if (e->n_pending > 0) {
        return false;
    }
    if (e->kind == ENTRY_RATE) {
        return tick_cmp(e->u.rate.tat, (struct tick){now, 0}) <= 0;
    }
    if (e->u.budget.reserved != 0) {
        return false;
    }
    if (e->u.budget.settled == 0) {
        return true;
    }
    /* Keep the previous month (late readers of spend); drop anything older. */
    return tg_period_next_ms(e->u.budget.period_start_ms, l->tz_offset_minutes) <
           tg_period_start_ms(now, l->tz_offset_minutes);
}

static void
sweep(struct local *l, int64_t now)
{
    for (int i = 0; i < SWEEP_BUCKETS; i++) {
        struct entry **pp = &l->buckets[l->sweep_cursor++ & (l->n_buckets - 1)];
        while (*pp != NULL) {
            struct entry *e = *pp;
            if (is_idle(l, e, now)) {
                *pp = e->next;
                free(e);
                l->n_entries--;
            } else {
                pp = &e->next;
            }
        }
    }
}

/* ---- keys ------------------------------------------------------------------------------ */

/* Rate key: 'r', scope, kind, is_model, id, NUL, model. Ids and models are C strings, so the
 * NUL separates them unambiguously. */
static int
rate_key(struct probe *p, int kind, const char *id, const char *model)
{
    size_t id_len = strlen(id), model_len = p->is_model ? strlen(model) : 0;
    if (4 + id_len + 1 + model_len > KEY_CAP) {
        return TG_EINVAL;
    }
    char *k = p->key;
    k[0] = 'r';
    k[1] = (char)p->scope;
    k[2] = (char)kind;
    k[3] = (char)p->is_model;
    memcpy(k + 4, id, id_len);
    k[4 + id_len] = '\0';
    memcpy(k + 5 + id_len, model, model_len);
    p->key_len = 5 + id_len + model_len;
    p->hash = hash_key(p->key, p->key_len);
    return 0;
}

/* Budget key: 'b', scope, the period start (8 bytes), id. */
static int
budget_key(struct probe *p, enum tg_scope scope, const char *id, int64_t period_start_ms)
{
    size_t id_len = strlen(id);
    if (2 + sizeof(period_start_ms) + id_len > KEY_CAP) {
        return TG_EINVAL;
    }
    p->scope = scope;
    p->key[0] = 'b';
    p->key[1] = (char)scope;
    memcpy(p->key + 2, &period_start_ms, sizeof(period_start_ms));
    memcpy(p->key + 2 + sizeof(period_start_ms), id, id_len);
    p->key_len = 2 + sizeof(period_start_ms) + id_len;
    p->hash = hash_key(p->key, p->key_len);
    return 0;
}

static bool
rate_valid(const struct tg_rate_limit *r)
{
    return r->rpm >= 0 && r->tpm >= 0 && r->rpd >= 0 && r->tpd >= 0;
}

/* Appends a probe for each limit of one level that is set. Returns 0 or TG_EINVAL. */
static int
level_probes(const struct tg_admit_request *r, enum tg_scope s, struct probe *probes, size_t *n)
{
    const struct tg_admit_level *lv = &r->levels[s];
    for (int is_model = 0; is_model < 2; is_model++) {
        if (is_model && r->model == NULL) {
            break;
        }
        const struct tg_rate_limit *rl = is_model ? &lv->model : &lv->all_models;
        int64_t limits[N_KINDS] = {rl->rpm, rl->tpm, rl->rpd, rl->tpd};
        for (int k = 0; k < N_KINDS; k++) {
            if (limits[k] == 0) {
                continue;
            }
            struct probe *p = &probes[(*n)++];
            p->scope = s;
            p->is_model = is_model;
            p->is_tokens = k == 1 || k == 3;
            p->is_daily = k >= 2;
            p->limit = limits[k] > TG_RATE_LIMIT_MAX ? TG_RATE_LIMIT_MAX : limits[k];
            p->window_ms = p->is_daily ? DAY_MS : MINUTE_MS;
            p->cost = p->is_tokens ? r->tokens : 1;
            int err = rate_key(p, k, lv->id, r->model);
            if (err != 0) {
                return err;
            }
        }
    }
    return 0;
}

/* ---- reservations ---------------------------------------------------------------------- */

static uint32_t
resv_alloc(struct local *l)
{
    if (l->free_head == 0) {
        size_t n = l->n_slots == 0 ? 64 : l->n_slots * 2;
        l->slots = tg_xrealloc(l->slots, n * sizeof(*l->slots));
        for (size_t i = l->n_slots; i < n; i++) {
            l->slots[i].gen = 1;
            l->slots[i].in_use = false;
            l->slots[i].next_free = i + 1 < n ? (uint32_t)(i + 2) : 0;
        }
        l->free_head = (uint32_t)(l->n_slots + 1);
        l->n_slots = n;
    }
    uint32_t idx = l->free_head - 1;
    l->free_head = l->slots[idx].next_free;
    l->slots[idx].in_use = true;
    return idx;
}

/* The slot of a live reservation id, or NULL (unknown, already settled or released). */
static struct resv *
resv_find(struct local *l, uint64_t id)
{
    uint64_t idx = (id & UINT32_MAX) - 1;
    if ((id & UINT32_MAX) == 0 || idx >= l->n_slots) {
        return NULL;
    }
    struct resv *v = &l->slots[idx];
    if (!v->in_use || v->gen != (uint32_t)(id >> 32)) {
        return NULL;
    }
    return v;
}

static void
resv_free(struct local *l, struct resv *v)
{
    for (size_t i = 0; i < v->n_rate; i++) {
        v->rate[i].e->n_pending--;
    }
    for (size_t i = 0; i < v->n_budget; i++) {
        v->budget[i]->n_pending--;
    }
    v->in_use = false;
    v->gen++;
    if (v->gen == 0) {
        v->gen = 1;
    }
    v->next_free = l->free_head;
    l->free_head = (uint32_t)(v - l->slots) + 1;
}

/* ---- admit ----------------------------------------------------------------------------- */

/* Picks the per-minute counter of one unit the client is closest to running out of, for the
 * x-ratelimit-* headers. */
static void
fill_headers(struct tg_admit_result *out, const struct probe *probes, size_t n, int64_t now)
{
    out->limit_requests = out->remaining_requests = out->reset_requests_ms = -1;
    out->limit_tokens = out->remaining_tokens = out->reset_tokens_ms = -1;
    for (size_t i = 0; i < n; i++) {
        const struct probe *p = &probes[i];
        if (p->is_daily) {
            continue;
        }
        int64_t rem = rate_remaining(p->e, now);
        int64_t *lim = p->is_tokens ? &out->limit_tokens : &out->limit_requests;
        int64_t *left = p->is_tokens ? &out->remaining_tokens : &out->remaining_requests;
        int64_t *reset = p->is_tokens ? &out->reset_tokens_ms : &out->reset_requests_ms;
        if (*lim < 0 || rem < *left || (rem == *left && p->limit < *lim)) {
            *lim = p->limit;
            *left = rem;
            *reset = rate_reset_ms(p->e, now);
        }
    }
}

/* The first budgeted level the cost bound does not fit in, or -1. */
static int
check_budgets(const struct tg_admit_request *r, const struct probe *bp, size_t n_b)
{
    for (size_t i = 0; i < n_b; i++) {
        int64_t limit = bp[i].limit;
        if (limit == 0) {
            continue;
        }
        int64_t spend = spend_of(bp[i].e);
        if (spend > limit || r->cost_bound_micros > limit - spend) {
            return (int)i;
        }
    }
    return -1;
}

/* Refuses on the counter that admits last (the request waits for all of them); a request
 * larger than a whole limit wins, since no wait helps it. */
static void
check_rates(struct probe *rp, size_t n_r, int64_t now, struct tg_admit_result *out)
{
    const struct probe *worst = NULL;
    for (size_t i = 0; i < n_r; i++) {
        struct probe *p = &rp[i];
        int64_t retry = 0;
        bool too_large = p->cost > p->limit;
        if (!too_large) {
            struct tick after = tick_add(tick_max_now(p->e->u.rate.tat, now),
                                         span(p->cost, p->window_ms, p->limit), p->limit);
            if (tick_cmp(after, (struct tick){now + p->window_ms, 0}) <= 0) {
                continue;
            }
            retry = ceil_ms(after) - p->window_ms - now;
        }
        if (worst == NULL || (too_large && !out->is_too_large) ||
            (!out->is_too_large && retry > out->retry_after_ms)) {
            worst = p;
            out->verdict = TG_ADMIT_RATE_LIMITED;
            out->scope = p->scope;
            out->is_model_limit = p->is_model;
            out->is_tokens = p->is_tokens;
            out->is_daily = p->is_daily;
            out->is_too_large = too_large;
            out->limit = p->limit;
            out->retry_after_ms = retry;
        }
    }
}

static void
charge(struct local *l, const struct tg_admit_request *r, struct probe *rp, size_t n_r,
       struct probe *bp, size_t n_b, struct tg_admit_result *out)
{
    uint32_t idx = resv_alloc(l);
    struct resv *v = &l->slots[idx];
    v->tokens = r->tokens;
    v->cost_micros = r->cost_bound_micros;
    v->n_rate = n_r;
    v->n_budget = n_b;
    for (size_t i = 0; i < n_r; i++) {
        rate_charge(rp[i].e, rp[i].cost, r->now_ms);
        rp[i].e->n_pending++;
        v->rate[i].e = rp[i].e;
        v->rate[i].a_ms = rp[i].e->u.rate.tat.ms;
    }
    for (size_t i = 0; i < n_b; i++) {
        bp[i].e->u.budget.reserved = add_micros(bp[i].e->u.budget.reserved, r->cost_bound_micros);
        bp[i].e->n_pending++;
        v->budget[i] = bp[i].e;
    }
    out->reservation = ((uint64_t)v->gen << 32) | (idx + 1);
}

static int64_t
budget_remaining(const struct probe *bp, size_t n_b)
{
    int64_t least = -1;
    for (size_t i = 0; i < n_b; i++) {
        if (bp[i].limit == 0) {
            continue;
        }
        int64_t left = bp[i].limit - spend_of(bp[i].e);
        if (left < 0) {
            left = 0;
        }
        if (least < 0 || left < least) {
            least = left;
        }
    }
    return least;
}

static bool
request_valid(const struct tg_admit_request *r)
{
    if (r->tokens < 0 || r->cost_bound_micros < 0 || r->cost_bound_micros > MICROS_MAX) {
        return false;
    }
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        const struct tg_admit_level *lv = &r->levels[s];
        if (lv->id != NULL &&
            (!rate_valid(&lv->all_models) || !rate_valid(&lv->model) || lv->budget_micros < 0)) {
            return false;
        }
    }
    return true;
}

static int
local_admit(struct tg_admission *a, const struct tg_admit_request *r, struct tg_admit_result *out)
{
    struct local *l = (struct local *)a;
    struct probe rp[N_RATE], bp[TG_SCOPE_COUNT];
    size_t n_r = 0, n_b = 0;
    if (!request_valid(r)) {
        return TG_EINVAL;
    }
    int64_t period = tg_period_start_ms(r->now_ms, l->tz_offset_minutes);
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        const char *id = r->levels[s].id;
        if (id == NULL) {
            continue;
        }
        int err = level_probes(r, (enum tg_scope)s, rp, &n_r);
        if (err == 0) {
            err = budget_key(&bp[n_b], (enum tg_scope)s, id, period);
        }
        if (err != 0) {
            return err;
        }
        bp[n_b++].limit = r->levels[s].budget_micros;
    }

    memset(out, 0, sizeof(*out));
    out->verdict = TG_ADMIT_OK;
    pthread_mutex_lock(&l->mu);
    if (r->now_ms > l->now_ms) {
        l->now_ms = r->now_ms;
    }
    for (size_t i = 0; i < n_r; i++) {
        struct entry *e = find_or_add(l, &rp[i], ENTRY_RATE);
        if (e->u.rate.limit != rp[i].limit) {
            /* New counter, or the limit changed: the fraction was in the old limit's units;
             * rounding the TAT up to a whole millisecond keeps it conservative. */
            e->u.rate.tat.ms += e->u.rate.tat.frac > 0;
            e->u.rate.tat.frac = 0;
            e->u.rate.limit = rp[i].limit;
            e->u.rate.window_ms = rp[i].window_ms;
            e->u.rate.is_tokens = rp[i].is_tokens;
        }
        rp[i].e = e;
    }
    for (size_t i = 0; i < n_b; i++) {
        bp[i].e = find_or_add(l, &bp[i], ENTRY_BUDGET);
        bp[i].e->u.budget.period_start_ms = period;
    }

    /* Budgets first: a spent budget stays spent for the month, so telling the client to
     * retry in a second would be wrong. */
    int refused = check_budgets(r, bp, n_b);
    if (refused >= 0) {
        out->verdict = TG_ADMIT_OVER_BUDGET;
        out->scope = bp[refused].scope;
        out->limit = bp[refused].limit;
    } else {
        check_rates(rp, n_r, r->now_ms, out);
    }
    if (out->verdict == TG_ADMIT_OK) {
        charge(l, r, rp, n_r, bp, n_b, out);
    }
    fill_headers(out, rp, n_r, r->now_ms);
    out->budget_remaining_micros = budget_remaining(bp, n_b);
    sweep(l, r->now_ms);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

/* ---- settle, release, spend ------------------------------------------------------------ */

static void
local_settle(struct tg_admission *a, uint64_t reservation, int64_t tokens, int64_t cost_micros)
{
    struct local *l = (struct local *)a;
    pthread_mutex_lock(&l->mu);
    struct resv *v = resv_find(l, reservation);
    if (v == NULL) {
        pthread_mutex_unlock(&l->mu);
        tg_log_warn("admission: settle of unknown reservation %llx",
                    (unsigned long long)reservation);
        return;
    }
    /* Negative usage is garbled: keep the reservation as the bill (never under-bill). */
    if (tokens < 0) {
        tokens = v->tokens;
    }
    if (cost_micros < 0) {
        cost_micros = v->cost_micros;
    } else if (cost_micros > MICROS_MAX) {
        cost_micros = MICROS_MAX;
    }
    int64_t now = l->now_ms;
    for (size_t i = 0; i < v->n_rate; i++) {
        struct entry *e = v->rate[i].e;
        if (!e->u.rate.is_tokens) {
            continue;
        }
        if (tokens > v->tokens) {
            rate_charge(e, tokens - v->tokens, now);
        } else {
            rate_refund(e, v->tokens - tokens, v->rate[i].a_ms, now);
        }
    }
    for (size_t i = 0; i < v->n_budget; i++) {
        v->budget[i]->u.budget.reserved -= v->cost_micros;
        v->budget[i]->u.budget.settled = add_micros(v->budget[i]->u.budget.settled, cost_micros);
    }
    resv_free(l, v);
    pthread_mutex_unlock(&l->mu);
}

static void
local_release(struct tg_admission *a, uint64_t reservation)
{
    struct local *l = (struct local *)a;
    pthread_mutex_lock(&l->mu);
    struct resv *v = resv_find(l, reservation);
    if (v == NULL) {
        pthread_mutex_unlock(&l->mu);
        tg_log_warn("admission: release of unknown reservation %llx",
                    (unsigned long long)reservation);
        return;
    }
    for (size_t i = 0; i < v->n_rate; i++) {
        struct entry *e = v->rate[i].e;
        rate_refund(e, e->u.rate.is_tokens ? v->tokens : 1, v->rate[i].a_ms, l->now_ms);
    }
    for (size_t i = 0; i < v->n_budget; i++) {
        v->budget[i]->u.budget.reserved -= v->cost_micros;
    }
    resv_free(l, v);
    pthread_mutex_unlock(&l->mu);
}

static int64_t
local_spend(struct tg_admission *a, enum tg_scope scope, const char *id, int64_t now_ms)
{
    struct local *l = (struct local *)a;
    struct probe p;
    if (id == NULL ||
        budget_key(&p, scope, id, tg_period_start_ms(now_ms, l->tz_offset_minutes)) != 0) {
        return 0;
    }
    int64_t spend = 0;
    pthread_mutex_lock(&l->mu);
    struct entry *e = lookup(l, &p);
    if (e != NULL) {
        spend = spend_of(e);
    }
    pthread_mutex_unlock(&l->mu);
    return spend;
}

static void
local_seed_spend(struct tg_admission *a, enum tg_scope scope, const char *id,
                 int64_t period_start_ms, int64_t micros)
{
    struct local *l = (struct local *)a;
    struct probe p;
    /* The caller's period start is normalised, so any time inside the month seeds it. */
    int64_t period = tg_period_start_ms(period_start_ms, l->tz_offset_minutes);
    if (id == NULL || micros <= 0 || budget_key(&p, scope, id, period) != 0) {
        return;
    }
    if (micros > MICROS_MAX) {
        micros = MICROS_MAX;
    }
    pthread_mutex_lock(&l->mu);
    struct entry *e = find_or_add(l, &p, ENTRY_BUDGET);
    e->u.budget.period_start_ms = period;
    e->u.budget.settled = add_micros(e->u.budget.settled, micros);
    pthread_mutex_unlock(&l->mu);
}

static void
local_free(struct tg_admission *a)
{
    struct local *l = (struct local *)a;
    if (l == NULL) {
        return;
    }
    for (size_t i = 0; i < l->n_buckets; i++) {
        struct entry *e = l->buckets[i];
        while (e != NULL) {
            struct entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(l->buckets);
    free(l->slots);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static const struct tg_admission_ops local_ops = {
    .name = "local",
    .admit = local_admit,
    .settle = local_settle,
    .release = local_release,
    .spend = local_spend,
    .seed_spend = local_seed_spend,
    .free = local_free,
};

int
tg_admission_local_new(int tz_offset_minutes, struct tg_admission **out)
{
    if (tz_offset_minutes < -TZ_MAX_MINUTES || tz_offset_minutes > TZ_MAX_MINUTES) {
        return TG_EINVAL;
    }
    struct local *l = tg_xcalloc(1, sizeof(*l));
    l->base.ops = &local_ops;
    l->tz_offset_minutes = tz_offset_minutes;
    l->n_buckets = MIN_BUCKETS;
    l->buckets = tg_xcalloc(l->n_buckets, sizeof(*l->buckets));
    if (pthread_mutex_init(&l->mu, NULL) != 0) {
        free(l->buckets);
        free(l);
        return TG_ENOMEM;
    }
    *out = &l->base;
    return 0;
}
