/*
 * monitor.c: the windows of request outcomes per series (see monitor.h).
 *
 * Series live in a fixed array addressed through an open-addressing table of indexes, both
 * sized at TG_MONITOR_MAX_SERIES (the table twice that), so nothing moves once a series
 * exists. A ring slot is valid only for the bucket start it records: a slot is reset when a
 * later bucket claims it, and a reader skips slots whose start is not the one it looks for,
 * so idle series need no sweeping.
 */
#include "monitor/monitor.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/mem.h"

/* Upper bounds of the histogram bins in milliseconds; the last bin is open. */
static const int64_t bin_upper_ms[TG_MONITOR_N_BINS] = {
    5,    10,   20,   30,   50,   75,   100,   150,   200,   300,   500,   750,
    1000, 1500, 2000, 3000, 5000, 7500, 10000, 15000, 20000, 30000, 60000, 120000};

struct bucket {
    int64_t start_ms; /* the bucket this slot holds; 0 = never used */
    uint32_t requests;
    uint32_t ok;
    uint32_t errors;
    uint32_t finish_length;
    uint32_t empty;
    uint32_t refusal;
    uint32_t feedback_count;
    double feedback_sum;
    uint32_t latency[TG_MONITOR_N_BINS];
    uint32_t ttft[TG_MONITOR_N_BINS];
};

struct series {
    char org_id[40];
    char project_id[40];
    char model[96];
    char provider[64];
    char deployment[96];
    struct bucket *fine;   /* TG_MONITOR_FINE_N */
    struct bucket *coarse; /* TG_MONITOR_COARSE_N */
};

#define N_SLOTS (2 * TG_MONITOR_MAX_SERIES)

struct recent {
    char request_id[40];
    char project_id[40];
    uint16_t series; /* index into series */
};

struct tg_monitor {
    pthread_mutex_t lock;
    struct series series[TG_MONITOR_MAX_SERIES];
    size_t n_series;
    int32_t slots[N_SLOTS]; /* series index + 1; 0 = empty */
    bool has_warned_full;
    int64_t started_ms;
    struct recent *recent; /* TG_MONITOR_RECENT, a ring */
    size_t recent_next;
};

struct tg_monitor *
tg_monitor_new(void)
{
    struct tg_monitor *m = tg_xcalloc(1, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    m->recent = tg_xcalloc(TG_MONITOR_RECENT, sizeof(*m->recent));
    m->started_ms = tg_clock_unix_ms();
    return m;
}

void
tg_monitor_free(struct tg_monitor *m)
{
    if (m == NULL) {
        return;
    }
    for (size_t i = 0; i < m->n_series; i++) {
        free(m->series[i].fine);
        free(m->series[i].coarse);
    }
    free(m->recent);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static struct tg_monitor *default_monitor;

static void
default_init(void)
{
    default_monitor = tg_monitor_new();
}

struct tg_monitor *
tg_monitor_default(void)
{
    pthread_once(&default_once, default_init);
    return default_monitor;
}

int64_t
tg_monitor_started_ms(const struct tg_monitor *m)
{
    return m->started_ms;
}

void
tg_monitor_set_started_ms(struct tg_monitor *m, int64_t ms)
{
    m->started_ms = ms;
}

int
tg_monitor_bin(int64_t ms)
{
    for (int i = 0; i < TG_MONITOR_N_BINS - 1; i++) {
        if (ms <= bin_upper_ms[i]) {
            return i;
        }
    }
    return TG_MONITOR_N_BINS - 1;
}

double
tg_monitor_percentile(const uint64_t *bins, double p)
{
    uint64_t total = 0;
    for (int i = 0; i < TG_MONITOR_N_BINS; i++) {
        total += bins[i];
    }
    if (total == 0) {
        return -1;
    }
    double rank = p * (double)total;
    uint64_t below = 0;
    for (int i = 0; i < TG_MONITOR_N_BINS; i++) {
        if (bins[i] > 0 && (double)(below + bins[i]) >= rank) {
            double lo = i == 0 ? 0 : (double)bin_upper_ms[i - 1];
            double hi = (double)bin_upper_ms[i];
            double share = (rank - (double)below) / (double)bins[i];
            share = share < 0 ? 0 : share > 1 ? 1 : share;
            return lo + (hi - lo) * share;
        }
        below += bins[i];
    }
    return (double)bin_upper_ms[TG_MONITOR_N_BINS - 1];
}

/* ---- series lookup -------------------------------------------------------------------------- */

static uint64_t
hash_str(uint64_t h, const char *s)
{
    for (; s != NULL && *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    }
    return (h ^ 0xff) * 1099511628211ULL; /* a separator, so ("ab","c") != ("a","bc") */
}

static const char *
nz(const char *s)
{
    return s != NULL ? s : "";
}

/* Copies src into dst (cap bytes), cut to fit; the observe path avoids printf. */
static void
copy_to(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(nz(src), cap - 1);
    memcpy(dst, nz(src), n);
    dst[n] = '\0';
}

/* True when stored (a field of cap bytes) holds key as copy_to would have cut it. */
static bool
eq(const char *stored, size_t cap, const char *key)
{
    size_t n = strnlen(nz(key), cap - 1);
    return strncmp(stored, nz(key), n) == 0 && stored[n] == '\0';
}

#define EQ(field, key) eq(s->field, sizeof(s->field), (key))

static bool
same(const struct series *s, const struct tg_monitor_key *k)
{
    return EQ(org_id, k->org_id) && EQ(project_id, k->project_id) && EQ(model, k->model) &&
           EQ(provider, k->provider) && EQ(deployment, k->deployment);
}

/* The series of k, created when absent and create is set; -1 when absent or the table is
 * full. Called with the lock held. */
static int
find_series(struct tg_monitor *m, const struct tg_monitor_key *k, bool create)
{
    uint64_t h = 1469598103934665603ULL;
    h = hash_str(h, k->org_id);
    h = hash_str(h, k->project_id);
    h = hash_str(h, k->model);
    h = hash_str(h, k->provider);
    h = hash_str(h, k->deployment);
    for (size_t i = h % N_SLOTS, n = 0; n < N_SLOTS; i = (i + 1) % N_SLOTS, n++) {
        int32_t v = m->slots[i];
        if (v == 0) {
            if (!create) {
                return -1;
            }
            if (m->n_series == TG_MONITOR_MAX_SERIES) {
                if (!m->has_warned_full) {
                    m->has_warned_full = true;
                    tg_log_warn("monitor: more than %d model series; later ones are not counted",
                                TG_MONITOR_MAX_SERIES);
                }
                return -1;
            }
            struct series *s = &m->series[m->n_series];
            copy_to(s->org_id, sizeof(s->org_id), k->org_id);
            copy_to(s->project_id, sizeof(s->project_id), k->project_id);
            copy_to(s->model, sizeof(s->model), k->model);
            copy_to(s->provider, sizeof(s->provider), k->provider);
            copy_to(s->deployment, sizeof(s->deployment), k->deployment);
            s->fine = tg_xcalloc(TG_MONITOR_FINE_N, sizeof(struct bucket));
            s->coarse = tg_xcalloc(TG_MONITOR_COARSE_N, sizeof(struct bucket));
            m->slots[i] = (int32_t)++m->n_series;
            return (int)m->n_series - 1;
        }
        if (same(&m->series[v - 1], k)) {
            return v - 1;
        }
    }
    return -1;
}

/* The slot of the bucket holding now_ms in a ring, reset when it held an older bucket. */
static struct bucket *
claim(struct bucket *ring, size_t n, int64_t width_ms, int64_t now_ms)
{
    int64_t start = now_ms - now_ms % width_ms;
    struct bucket *b = &ring[(size_t)(start / width_ms) % n];
    if (b->start_ms != start) {
        memset(b, 0, sizeof(*b));
        b->start_ms = start;
    }
    return b;
}

static void
add_to(struct bucket *b, const struct tg_monitor_sample *s)
{
    b->requests++;
    if (s->status >= 500) {
        b->errors++;
    }
    b->latency[tg_monitor_bin(s->latency_ms < 0 ? 0 : s->latency_ms)]++;
    if (s->ttft_ms >= 0) {
        b->ttft[tg_monitor_bin(s->ttft_ms)]++;
    }
    if (s->status >= 200 && s->status < 300 && s->finish_reason != NULL &&
        s->finish_reason[0] != '\0') {
        b->ok++;
        b->finish_length += strcmp(s->finish_reason, "length") == 0;
        b->empty += s->is_empty;
        b->refusal += s->is_refusal;
    }
}

void
tg_monitor_add(struct tg_monitor *m, const struct tg_monitor_sample *s, int64_t now_ms)
{
    struct tg_monitor_key k = {s->org_id, s->project_id, s->model, s->provider, s->deployment};
    pthread_mutex_lock(&m->lock);
    int i = find_series(m, &k, true);
    if (i >= 0) {
        struct series *se = &m->series[i];
        add_to(claim(se->fine, TG_MONITOR_FINE_N, TG_MONITOR_FINE_MS, now_ms), s);
        add_to(claim(se->coarse, TG_MONITOR_COARSE_N, TG_MONITOR_COARSE_MS, now_ms), s);
        if (s->request_id != NULL && s->request_id[0] != '\0') {
            struct recent *r = &m->recent[m->recent_next];
            m->recent_next = (m->recent_next + 1) % TG_MONITOR_RECENT;
            copy_to(r->request_id, sizeof(r->request_id), s->request_id);
            copy_to(r->project_id, sizeof(r->project_id), s->project_id);
            r->series = (uint16_t)i;
        }
    }
    pthread_mutex_unlock(&m->lock);
}

void
tg_monitor_add_feedback(struct tg_monitor *m, const struct tg_monitor_key *k, double score,
                        int64_t now_ms)
{
    pthread_mutex_lock(&m->lock);
    int i = find_series(m, k, true);
    if (i >= 0) {
        struct series *se = &m->series[i];
        struct bucket *b[2] = {
            claim(se->fine, TG_MONITOR_FINE_N, TG_MONITOR_FINE_MS, now_ms),
            claim(se->coarse, TG_MONITOR_COARSE_N, TG_MONITOR_COARSE_MS, now_ms),
        };
        for (int j = 0; j < 2; j++) {
            b[j]->feedback_count++;
            b[j]->feedback_sum += score;
        }
    }
    pthread_mutex_unlock(&m->lock);
}

bool
tg_monitor_recent_find(struct tg_monitor *m, const char *request_id, const char *project_id,
                       char *model, char *provider, char *deployment)
{
    bool is_found = false;
    pthread_mutex_lock(&m->lock);
    /* Newest first: the ring may hold a retried id twice; the last one counts. */
    for (size_t n = 0; n < TG_MONITOR_RECENT && !is_found; n++) {
        const struct recent *r =
            &m->recent[(m->recent_next + TG_MONITOR_RECENT - 1 - n) % TG_MONITOR_RECENT];
        if (r->request_id[0] == '\0') {
            break;
        }
        if (strcmp(r->request_id, request_id) == 0 && strcmp(r->project_id, project_id) == 0) {
            const struct series *s = &m->series[r->series];
            snprintf(model, 96, "%s", s->model);
            snprintf(provider, 96, "%s", s->provider);
            snprintf(deployment, 96, "%s", s->deployment);
            is_found = true;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return is_found;
}

/* ---- queries ------------------------------------------------------------------------------- */

static bool
matches(const struct series *s, const struct tg_monitor_filter *f)
{
    return strcmp(s->org_id, nz(f->org_id)) == 0 &&
           (f->project_id == NULL || strcmp(s->project_id, f->project_id) == 0) &&
           (f->model == NULL || strcmp(s->model, f->model) == 0) &&
           (f->provider == NULL || strcmp(s->provider, f->provider) == 0) &&
           (f->deployment == NULL || strcmp(s->deployment, f->deployment) == 0);
}

static void
sum_bucket(struct tg_monitor_stats *out, const struct bucket *b, bool is_counts_only)
{
    out->requests += b->requests;
    out->ok += b->ok;
    out->errors += b->errors;
    out->finish_length += b->finish_length;
    out->empty += b->empty;
    out->refusal += b->refusal;
    out->feedback_count += b->feedback_count;
    out->feedback_sum += b->feedback_sum;
    for (int i = 0; !is_counts_only && i < TG_MONITOR_N_BINS; i++) {
        out->latency[i] += b->latency[i];
        out->ttft[i] += b->ttft[i];
    }
}

/* Sums one series' buckets whose start lies in [from_ms, to_ms), from the fine ring when the
 * range lies within its hour before to_ms, else from the coarse ring (whole 5-minute buckets:
 * a range not aligned to them reads a little more). */
static void
sum_series(const struct series *s, int64_t from_ms, int64_t to_ms, bool is_counts_only,
           struct tg_monitor_stats *out)
{
    bool is_fine = to_ms - from_ms <= TG_MONITOR_FINE_MS * (TG_MONITOR_FINE_N - 1);
    const struct bucket *ring = is_fine ? s->fine : s->coarse;
    int64_t width = is_fine ? TG_MONITOR_FINE_MS : TG_MONITOR_COARSE_MS;
    size_t n = is_fine ? TG_MONITOR_FINE_N : TG_MONITOR_COARSE_N;
    int64_t oldest = to_ms - width * (int64_t)(n - 1);
    from_ms = from_ms < oldest ? oldest : from_ms;
    for (int64_t start = from_ms - from_ms % width; start < to_ms; start += width) {
        const struct bucket *b = &ring[(size_t)(start / width) % n];
        if (b->start_ms == start && start > 0) {
            sum_bucket(out, b, is_counts_only);
        }
    }
}

size_t
tg_monitor_sum(struct tg_monitor *m, const struct tg_monitor_filter *f, int64_t from_ms,
               int64_t to_ms, struct tg_monitor_stats *out)
{
    memset(out, 0, sizeof(*out));
    size_t n = 0;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_series; i++) {
        if (matches(&m->series[i], f)) {
            sum_series(&m->series[i], from_ms, to_ms, f->is_counts_only, out);
            n++;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return n;
}

void
tg_monitor_each(struct tg_monitor *m, const char *org_id, int64_t from_ms, int64_t to_ms,
                tg_monitor_each_cb cb, void *arg)
{
    struct tg_monitor_stats *st = tg_xcalloc(1, sizeof(*st));
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_series; i++) {
        const struct series *s = &m->series[i];
        if (strcmp(s->org_id, nz(org_id)) != 0) {
            continue;
        }
        memset(st, 0, sizeof(*st));
        sum_series(s, from_ms, to_ms, false, st);
        if (st->requests == 0 && st->feedback_count == 0) {
            continue;
        }
        struct tg_monitor_key k = {s->org_id, s->project_id, s->model, s->provider, s->deployment};
        cb(&k, st, arg);
    }
    pthread_mutex_unlock(&m->lock);
    free(st);
}

/* ---- the observation hook ------------------------------------------------------------------- */

void
tg_monitor_observe(const struct tg_observation *o)
{
    const struct tg_ledger_row *r = o->row;
    struct tg_monitor_sample s = {
        .request_id = r->request_id,
        .org_id = r->org_id,
        .project_id = r->project_id,
        .model = r->model_requested,
        .provider = r->provider,
        .deployment = r->deployment,
        .status = r->status,
        .latency_ms = r->latency_ms,
        .ttft_ms = r->ttft_ms,
        .finish_reason = o->finish_reason,
        .is_empty = o->is_empty,
        .is_refusal = o->is_refusal,
    };
    tg_monitor_add(tg_monitor_default(), &s, tg_clock_unix_ms());
}
