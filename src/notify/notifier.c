/*
 * notifier.c: the notifier thread (notifier.h): each tick decides the budget events of every
 * level in the current snapshot, puts them into the store's outbox, then delivers due rows.
 *
 * Deciding is idempotent by construction: an event's key names the level, the budget period
 * and the threshold (or the new limit, for an increase), so re-deciding it every tick, or
 * after a restart, finds the outbox row already there. Only an automatic increase changes
 * state, and it does so in one store transaction that re-reads the level's settings and
 * applies only if the limit is still the one the decision saw, so a concurrent admin change
 * or a second node never double-raises.
 *
 * Delivery runs on this thread too, one row at a time, each bounded by its timeout and cut
 * short by stop; a failure is recorded with the next attempt time (exponential back-off), so
 * a row that keeps failing never delays the others for long and survives a restart.
 */
#include "notify/notifier.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/thread.h"
#include "gateway/state.h"
#include "monitor/alerts.h"
#include "notify/notify_int.h"
#include "store/ledger.h"

#define DUE_BATCH 16
/* A forecast from less than a day of spend is noise (one busy hour projects to a fortune). */
#define FORECAST_MIN_ELAPSED_MS (24LL * 3600 * 1000)
#define MAX_RECIPIENTS 64

/* ---- the set of event keys already queued ------------------------------------------------ */

static uint64_t
fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    }
    return h;
}

static void
seen_clear(struct notify_seen *s)
{
    for (size_t i = 0; i < s->cap; i++) {
        free(s->slots[i]);
    }
    free(s->slots);
    s->slots = NULL;
    s->cap = 0;
    s->n = 0;
}

static bool
seen_has(const struct notify_seen *s, const char *key)
{
    if (s->cap == 0) {
        return false;
    }
    for (size_t i = fnv1a(key) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (s->slots[i] == NULL) {
            return false;
        }
        if (strcmp(s->slots[i], key) == 0) {
            return true;
        }
    }
}

static void seen_add(struct notify_seen *s, const char *key);

static void
seen_grow(struct notify_seen *s)
{
    struct notify_seen bigger = {
        .slots = tg_xcalloc(s->cap ? s->cap * 2 : 64, sizeof(char *)),
        .cap = s->cap ? s->cap * 2 : 64,
        .period_start_ms = s->period_start_ms,
    };
    for (size_t i = 0; i < s->cap; i++) {
        if (s->slots[i] != NULL) {
            seen_add(&bigger, s->slots[i]);
        }
    }
    seen_clear(s);
    *s = bigger;
}

static void
seen_add(struct notify_seen *s, const char *key)
{
    if (seen_has(s, key)) {
        return;
    }
    if ((s->n + 1) * 2 > s->cap) {
        seen_grow(s);
    }
    size_t i = fnv1a(key) & (s->cap - 1);
    while (s->slots[i] != NULL) {
        i = (i + 1) & (s->cap - 1);
    }
    s->slots[i] = tg_xstrdup(key);
    s->n++;
}

/* ---- one tick's view of the levels ------------------------------------------------------- */

struct level {
    enum tg_scope scope;
    const char *id;
    const char *name;       /* project or org name; the key id for keys */
    const char *project_id; /* the project concerned, or NULL */
    const struct tg_budget_conf *budget;
};

struct tick {
    struct tg_notifier *n;
    struct tg_state *st;
    int64_t now_ms;
    int64_t period_start_ms;
    int64_t period_end_ms;
    bool has_owners; /* owners read (once per tick, on the first event) */
    char **owners;   /* org owners' e-mails */
    size_t n_owners;
    bool needs_reload; /* an increase was applied */
    int rc;            /* first store error */
};

static int
collect_owner(const struct tg_doc *d, void *arg)
{
    struct tick *t = arg;
    json_t *data = json_loads(d->data, 0, NULL);
    const char *role = tg_json_str(data, "role");
    const char *email = tg_json_str(data, "email");
    if (role != NULL && strcmp(role, "owner") == 0 && email != NULL && email[0] != '\0' &&
        t->n_owners < MAX_RECIPIENTS) {
        t->owners = tg_xrealloc(t->owners, (t->n_owners + 1) * sizeof(char *));
        t->owners[t->n_owners++] = tg_xstrdup(email);
    }
    json_decref(data);
    return 0;
}

static void
read_owners(struct tick *t)
{
    if (t->has_owners) {
        return;
    }
    t->has_owners = true;
    struct tg_store *s = t->n->o.store;
    int rc = s->ops->doc_list(s, "user", t->st->org_id, NULL, collect_owner, t);
    if (rc < 0) {
        tg_log_warn("notifier: cannot list the organization's owners: %s", tg_strerror(rc));
    }
}

static bool
has_address(char *const *v, size_t n, const char *a)
{
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(v[i], a) == 0) {
            return true;
        }
    }
    return false;
}

/* The e-mail recipients of a level: the org owners and the level's notify_emails, each once
 * (case-insensitively). Pointers borrowed from t and the budget. */
static size_t
recipients(struct tick *t, const struct tg_budget_conf *b, char **out)
{
    read_owners(t);
    size_t n = 0;
    for (size_t i = 0; i < t->n_owners && n < MAX_RECIPIENTS; i++) {
        if (!has_address(out, n, t->owners[i])) {
            out[n++] = t->owners[i];
        }
    }
    for (size_t i = 0; i < b->n_notify_emails && n < MAX_RECIPIENTS; i++) {
        if (!has_address(out, n, b->notify_emails[i])) {
            out[n++] = b->notify_emails[i];
        }
    }
    return n;
}

static int
put_row(struct tick *t, const char *key, const char *channel, const char *target,
        const char *payload)
{
    struct tg_outbox_rec r = {
        .org_id = t->st->org_id,
        .event_key = key,
        .channel = channel,
        .target = target,
        .payload = payload,
        .created_ms = t->now_ms,
        .next_attempt_ms = t->now_ms,
    };
    bool inserted = false;
    int rc = t->n->o.store->ops->outbox_put(t->n->o.store, &r, &inserted);
    if (rc == 0 && inserted) {
        /* The webhook URL is not logged: it may carry the receiver's token. */
        tg_log_info("notifier: queued %s (%s%s%s)", key, channel,
                    strcmp(channel, "email") == 0 ? " to " : "",
                    strcmp(channel, "email") == 0 ? target : "");
    }
    return rc;
}

/* Queues event key (type, data) for every channel of the level; data is consumed. Marks the
 * key seen once every row is in the store. */
static void
emit(struct tick *t, const struct level *lv, const char *key, const char *type, json_t *data)
{
    if (seen_has(&t->n->seen, key)) {
        json_decref(data);
        return;
    }
    char id[40];
    tg_id_new(id, sizeof(id), "evt_", 24);
    json_object_set_new(data, "scope", json_string(tg_scope_name(lv->scope)));
    json_object_set_new(data, "id", json_string(lv->id));
    json_object_set_new(data, "name", json_string(lv->name));
    json_object_set_new(data, "project_id",
                        lv->project_id != NULL ? json_string(lv->project_id) : json_null());
    json_object_set_new(data, "period_start", json_integer(t->period_start_ms / 1000));
    json_object_set_new(data, "period_end", json_integer(t->period_end_ms / 1000));
    json_t *ev = json_pack("{s:s, s:s, s:I, s:o}", "id", id, "type", type, "created_at",
                           (json_int_t)(t->now_ms / 1000), "data", data);
    char *payload = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);

    int rc = 0;
    const struct tg_budget_conf *b = lv->budget;
    if (b->webhook_url != NULL) {
        rc = put_row(t, key, "webhook", b->webhook_url, payload);
    }
    const struct tg_smtp_conf *smtp = t->n->o.smtp;
    if (rc == 0 && smtp != NULL && smtp->host != NULL) {
        char *to[MAX_RECIPIENTS];
        size_t n = recipients(t, b, to);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            rc = put_row(t, key, "email", to[i], payload);
        }
    }
    free(payload);
    if (rc < 0) {
        tg_log_error("notifier: cannot queue %s: %s", key, tg_strerror(rc));
        t->rc = t->rc < 0 ? t->rc : rc;
        return;
    }
    seen_add(&t->n->seen, key);
}

/* ---- automatic increase ------------------------------------------------------------------ */

struct raise {
    const struct level *lv;
    const char *org_id;
    int64_t now_ms;
    int64_t old_limit;
    int64_t new_limit;
    bool is_applied;
    /* what the store held, copied out of the listing callbacks */
    struct tg_project_rec proj;
    char *proj_strings[4]; /* name, environment, settings (owned copies) */
    bool is_found;
    struct tg_doc doc;
    char *doc_strings[4]; /* kind, id, project_id, data */
};

static char *
dup_or_null(const char *s)
{
    return s != NULL ? tg_xstrdup(s) : NULL;
}

static int
find_project(const struct tg_project_rec *r, void *arg)
{
    struct raise *x = arg;
    if (strcmp(r->id, x->lv->id) != 0) {
        return 0;
    }
    x->proj = *r;
    x->proj_strings[0] = tg_xstrdup(r->id);
    x->proj_strings[1] = dup_or_null(r->name);
    x->proj_strings[2] = dup_or_null(r->environment);
    x->proj_strings[3] = dup_or_null(r->settings);
    x->proj.id = x->proj_strings[0];
    x->proj.name = x->proj_strings[1];
    x->proj.environment = x->proj_strings[2];
    x->proj.settings = x->proj_strings[3];
    x->proj.org_id = x->org_id;
    x->is_found = true;
    return 1;
}

static int
copy_doc(const struct tg_doc *d, void *arg)
{
    struct raise *x = arg;
    x->doc = *d;
    x->doc_strings[0] = tg_xstrdup(d->kind);
    x->doc_strings[1] = tg_xstrdup(d->id);
    x->doc_strings[2] = dup_or_null(d->project_id);
    x->doc_strings[3] = dup_or_null(d->data);
    x->doc.kind = x->doc_strings[0];
    x->doc.id = x->doc_strings[1];
    x->doc.project_id = x->doc_strings[2];
    x->doc.data = x->doc_strings[3];
    x->doc.org_id = x->org_id;
    x->is_found = true;
    return 0;
}

/* The settings text of the level as the store holds it now (borrowed from x), or NULL. */
static const char *
read_settings(struct tg_store *s, struct raise *x, int *rc)
{
    if (x->lv->scope == TG_SCOPE_PROJECT) {
        *rc = s->ops->projects_list(s, x->org_id, find_project, x);
        *rc = *rc == 1 ? 0 : *rc;
        return x->is_found ? (x->proj.settings != NULL ? x->proj.settings : "{}") : NULL;
    }
    const char *kind = x->lv->scope == TG_SCOPE_ORG ? "org_settings" : "key_settings";
    *rc = s->ops->doc_get(s, kind, x->lv->id, copy_doc, x);
    *rc = *rc == TG_ENOTFOUND ? 0 : *rc;
    return x->is_found ? x->doc.data : NULL;
}

static int
write_settings(struct tg_store *s, struct raise *x, const char *settings)
{
    if (x->lv->scope == TG_SCOPE_PROJECT) {
        x->proj.settings = settings;
        int rc = s->ops->project_update(s, &x->proj);
        struct tg_version_rec v = {
            .org_id = x->org_id,
            .project_id = x->lv->id,
            .time_ms = x->now_ms,
            .actor_id = "system",
            .reason = "budget.updated",
            .settings = settings,
        };
        return rc < 0 ? rc : s->ops->version_append(s, &v);
    }
    x->doc.data = settings;
    x->doc.updated_ms = x->now_ms;
    return s->ops->doc_put(s, &x->doc);
}

static int
raise_tx(struct tg_store *s, void *arg)
{
    struct raise *x = arg;
    int rc = 0;
    const char *text = read_settings(s, x, &rc);
    if (rc < 0 || text == NULL) {
        return rc;
    }
    json_t *root = json_loads(text, 0, NULL);
    json_t *budget = json_object_get(root, "budget");
    json_t *limit = json_object_get(budget, "monthly_limit_micros");
    /* Apply only over the limit the decision saw: an admin may have changed it meanwhile. */
    if (!json_is_integer(limit) || json_integer_value(limit) != x->old_limit) {
        json_decref(root);
        return 0;
    }
    char *before = json_dumps(budget, JSON_COMPACT | JSON_SORT_KEYS);
    json_object_set_new(budget, "monthly_limit_micros", json_integer(x->new_limit));
    char *after = json_dumps(budget, JSON_COMPACT | JSON_SORT_KEYS);
    char *settings = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    rc = write_settings(s, x, settings);
    char audit_id[48];
    tg_id_new(audit_id, sizeof(audit_id), "audit_log-", 24);
    struct tg_audit_rec a = {
        .id = audit_id,
        .org_id = x->org_id,
        .time_ms = x->now_ms,
        .type = "budget.updated",
        .actor_type = "system",
        .actor_id = "system",
        .project_id = x->lv->project_id,
        .target_id = x->lv->id,
        .before = before,
        .after = after,
    };
    rc = rc < 0 ? rc : s->ops->audit_append(s, &a);
    x->is_applied = rc == 0;
    free(before);
    free(after);
    free(settings);
    return rc;
}

/* Raises the level's limit in the store. True when it was applied. */
static bool
apply_increase(struct tick *t, const struct level *lv, int64_t old_limit, int64_t new_limit)
{
    struct raise x = {
        .lv = lv,
        .org_id = t->st->org_id,
        .now_ms = t->now_ms,
        .old_limit = old_limit,
        .new_limit = new_limit,
    };
    struct tg_store *s = t->n->o.store;
    int rc = s->ops->transact(s, raise_tx, &x);
    for (size_t i = 0; i < 4; i++) {
        free(x.proj_strings[i]);
        free(x.doc_strings[i]);
    }
    if (rc < 0) {
        tg_log_error("notifier: cannot raise the budget of %s %s: %s", tg_scope_name(lv->scope),
                     lv->id, tg_strerror(rc));
        t->rc = t->rc < 0 ? t->rc : rc;
        return false;
    }
    if (x.is_applied) {
        tg_log_info("notifier: raised the monthly budget of %s %s from %lld to %lld micro-USD",
                    tg_scope_name(lv->scope), lv->id, (long long)old_limit, (long long)new_limit);
        t->needs_reload = true;
    }
    return x.is_applied;
}

/* ---- deciding ---------------------------------------------------------------------------- */

static void
check_level(struct tick *t, const struct level *lv)
{
    const struct tg_budget_conf *b = lv->budget;
    int64_t limit = b->monthly_limit_micros;
    if (limit <= 0) {
        return;
    }
    struct tg_admission *a = t->n->o.admission;
    int64_t spend = a->ops->spend(a, lv->scope, lv->id, t->now_ms);
    const char *scope = tg_scope_name(lv->scope);
    char key[256];

    int crossed[TG_MAX_THRESHOLDS];
    size_t n = tg_notify_crossed(b, limit, spend, crossed);
    for (size_t i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "budget:%s:%s:%lld:%d", scope, lv->id,
                 (long long)t->period_start_ms, crossed[i]);
        emit(t, lv, key, "budget.threshold",
             json_pack("{s:i, s:I, s:I}", "threshold_pct", crossed[i], "spend_micros",
                       (json_int_t)spend, "limit_micros", (json_int_t)limit));
    }

    int64_t raised = 0;
    if (tg_notify_auto_increase(b, limit, spend, &raised) && apply_increase(t, lv, limit, raised)) {
        snprintf(key, sizeof(key), "budget-increase:%s:%s:%lld:%lld", scope, lv->id,
                 (long long)t->period_start_ms, (long long)raised);
        emit(t, lv, key, "budget.increased",
             json_pack("{s:I, s:I, s:I, s:I, s:I}", "previous_limit_micros", (json_int_t)limit,
                       "limit_micros", (json_int_t)raised, "max_micros",
                       (json_int_t)b->auto_max_micros, "spend_micros", (json_int_t)spend, "at_pct",
                       (json_int_t)b->auto_at_pct));
    }

    int64_t forecast = tg_notify_forecast_micros(spend, t->period_start_ms, t->period_end_ms,
                                                 t->now_ms, FORECAST_MIN_ELAPSED_MS);
    if (forecast > limit) {
        snprintf(key, sizeof(key), "budget-forecast:%s:%s:%lld", scope, lv->id,
                 (long long)t->period_start_ms);
        emit(t, lv, key, "budget.forecast_exceeded",
             json_pack("{s:I, s:I, s:I}", "forecast_micros", (json_int_t)forecast, "spend_micros",
                       (json_int_t)spend, "limit_micros", (json_int_t)limit));
    }
}

static void
decide(struct tick *t)
{
    const struct tg_state *st = t->st;
    if (st->org_id == NULL) {
        return;
    }
    if (st->org_limits.has_budget) {
        struct level lv = {TG_SCOPE_ORG, st->org_id, st->org_name, NULL, &st->org_limits.budget};
        check_level(t, &lv);
    }
    for (size_t i = 0; i < st->n_projects; i++) {
        const struct tg_project *p = &st->projects[i];
        if (!p->is_archived && p->limits.has_budget) {
            struct level lv = {TG_SCOPE_PROJECT, p->id, p->name, p->id, &p->limits.budget};
            check_level(t, &lv);
        }
    }
    for (size_t i = 0; i < st->n_key_limits; i++) {
        const struct tg_key_limits *k = &st->key_limits[i];
        if (k->limits.has_budget) {
            struct level lv = {TG_SCOPE_KEY, k->key_id, k->key_id, NULL, &k->limits.budget};
            check_level(t, &lv);
        }
    }
}

/* ---- delivering -------------------------------------------------------------------------- */

struct due_row {
    int64_t id;
    char *channel;
    char *target;
    char *payload;
    int attempts;
};

struct due_list {
    struct due_row rows[DUE_BATCH];
    size_t n;
};

static int
collect_due(const struct tg_outbox_rec *r, void *arg)
{
    struct due_list *l = arg;
    if (l->n == DUE_BATCH) {
        return 1;
    }
    struct due_row *d = &l->rows[l->n++];
    d->id = r->id;
    d->channel = tg_xstrdup(r->channel);
    d->target = tg_xstrdup(r->target);
    d->payload = tg_xstrdup(r->payload);
    d->attempts = r->attempts;
    return 0;
}

/* The webhook secret reference of the level an event is about (its current settings), or
 * NULL when it has none. */
static const char *
secret_ref(const struct tg_state *st, const json_t *data)
{
    const char *scope = tg_json_str(data, "scope");
    const char *id = tg_json_str(data, "id");
    if (st == NULL || scope == NULL || id == NULL) {
        return NULL;
    }
    const struct tg_level_limits *l = NULL;
    if (strcmp(scope, "organization") == 0 && st->org_id && strcmp(st->org_id, id) == 0) {
        l = &st->org_limits;
    } else if (strcmp(scope, "project") == 0) {
        const struct tg_project *p = tg_state_project(st, id);
        l = p != NULL ? &p->limits : NULL;
    } else if (strcmp(scope, "key") == 0) {
        l = tg_state_key_limits(st, id);
    }
    return l != NULL && l->has_budget ? l->budget.webhook_secret : NULL;
}

static int
deliver_webhook(struct tg_notifier *n, const struct tg_state *st, const struct due_row *d,
                int64_t now_ms, char *err, size_t err_cap)
{
    json_t *ev = json_loads(d->payload, 0, NULL);
    const char *ref = secret_ref(st, json_object_get(ev, "data"));
    char *secret = NULL;
    int rc = 0;
    if (ref != NULL) {
        char msg[256];
        secret = tg_config_resolve_secret(ref, "budget.webhook_secret", msg, sizeof(msg));
        if (secret == NULL) {
            snprintf(err, err_cap, "%s", msg);
            rc = TG_ECONFIG;
        }
    }
    json_decref(ev);
    if (rc == 0) {
        rc = notify_send_webhook(n, d->target, secret, secret ? strlen(secret) : 0, d->payload,
                                 now_ms, err, err_cap);
    }
    if (secret != NULL) {
        memset(secret, 0, strlen(secret));
        free(secret);
    }
    return rc;
}

static int
deliver(struct tg_notifier *n, int64_t now_ms)
{
    struct tg_store *s = n->o.store;
    struct due_list l = {.n = 0};
    int rc = s->ops->outbox_due(s, now_ms, DUE_BATCH, collect_due, &l);
    rc = rc == 1 ? 0 : rc;
    struct tg_state *st = l.n > 0 ? tg_state_acquire() : NULL;
    for (size_t i = 0; i < l.n; i++) {
        struct due_row *d = &l.rows[i];
        if (atomic_load(&n->is_stopping)) {
            break; /* left due: the next start delivers it */
        }
        char err[256] = "";
        int sent;
        if (strcmp(d->channel, "webhook") == 0) {
            sent = deliver_webhook(n, st, d, now_ms, err, sizeof(err));
        } else if (strcmp(d->channel, "email") == 0) {
            sent = notify_send_email(n, d->target, d->payload, err, sizeof(err));
        } else {
            snprintf(err, sizeof(err), "unknown channel");
            sent = TG_EINVAL;
        }
        /* Times from the tick's clock (now_ms), so back-off follows the same clock as "due". */
        int64_t done_ms = now_ms;
        int mrc;
        if (sent == 0) {
            mrc = s->ops->outbox_mark(s, d->id, done_ms > 0 ? done_ms : 1, NULL, 0);
            tg_log_info("notifier: delivered outbox row %lld (%s)", (long long)d->id, d->channel);
        } else {
            int64_t next = done_ms + tg_notify_backoff_ms(d->attempts + 1);
            mrc = s->ops->outbox_mark(s, d->id, 0, err, next);
            tg_log_warn("notifier: delivery of outbox row %lld (%s) failed (attempt %d): %s; "
                        "retrying in %lld ms",
                        (long long)d->id, d->channel, d->attempts + 1, err,
                        (long long)(next - done_ms));
        }
        rc = rc < 0 ? rc : mrc;
    }
    for (size_t i = 0; i < l.n; i++) {
        free(l.rows[i].channel);
        free(l.rows[i].target);
        free(l.rows[i].payload);
    }
    tg_state_unref(st);
    return rc;
}

/* ---- the thread -------------------------------------------------------------------------- */

int
tg_notifier_tick(struct tg_notifier *n, int64_t now_ms)
{
    struct tick t = {.n = n, .now_ms = now_ms};
    t.st = tg_state_acquire();
    if (t.st != NULL && n->o.admission != NULL) {
        t.period_start_ms = tg_period_start_ms(now_ms, n->o.tz_offset_minutes);
        t.period_end_ms = tg_period_next_ms(now_ms, n->o.tz_offset_minutes);
        if (t.period_start_ms != n->seen.period_start_ms) {
            seen_clear(&n->seen);
            n->seen.period_start_ms = t.period_start_ms;
        }
        decide(&t);
    } else if (n->o.admission == NULL && !n->has_warned_no_admission) {
        n->has_warned_no_admission = true;
        tg_log_warn("notifier: no admission object: budget alerts are off");
    }
    tg_state_unref(t.st);
    for (size_t i = 0; i < t.n_owners; i++) {
        free(t.owners[i]);
    }
    free(t.owners);
    if (t.needs_reload) {
        /* The raised limit must reach admission, which reads the snapshot. */
        int rc = tg_state_reload();
        if (rc < 0) {
            tg_log_error("notifier: reload after a budget increase failed: %s", tg_strerror(rc));
        }
    }
    struct tg_alerts_env env = {
        .store = n->o.store,
        .monitor = tg_monitor_default(),
        .admission = n->o.admission,
        .tz_offset_minutes = n->o.tz_offset_minutes,
        .forecast_min_elapsed_ms = FORECAST_MIN_ELAPSED_MS,
        .ledger_backlog = n->o.ledger != NULL ? (int64_t)tg_ledger_depth(n->o.ledger) : -1,
        .has_smtp = n->o.smtp != NULL && n->o.smtp->host != NULL,
    };
    int arc = tg_alerts_tick(&env, now_ms);
    int rc = deliver(n, now_ms);
    rc = rc < 0 ? rc : arc;
    return t.rc < 0 ? t.rc : rc;
}

static void *
run(void *arg)
{
    struct tg_notifier *n = arg;
    tg_thread_set_name("tg-notifier");
    for (;;) {
        pthread_mutex_lock(&n->lock);
        if (!n->is_woken && !atomic_load(&n->is_stopping)) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            uint64_t ns = (uint64_t)until.tv_nsec + (n->o.interval_ms % 1000) * 1000000ULL;
            until.tv_sec += (time_t)(n->o.interval_ms / 1000 + ns / 1000000000ULL);
            until.tv_nsec = (long)(ns % 1000000000ULL);
            while (!n->is_woken && !atomic_load(&n->is_stopping)) {
                if (pthread_cond_timedwait(&n->cond, &n->lock, &until) == ETIMEDOUT) {
                    break;
                }
            }
        }
        n->is_woken = false;
        pthread_mutex_unlock(&n->lock);
        if (atomic_load(&n->is_stopping)) {
            break;
        }
        tg_notifier_tick(n, tg_clock_unix_ms());
    }
    return NULL;
}

static struct tg_notifier *
notifier_new(const struct tg_notifier_opts *opts)
{
    struct tg_notifier *n = tg_xcalloc(1, sizeof(*n));
    n->o = *opts;
    if (n->o.interval_ms == 0) {
        n->o.interval_ms = 1000;
    }
    if (n->o.webhook_timeout_ms == 0) {
        n->o.webhook_timeout_ms = 10000;
    }
    pthread_mutex_init(&n->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    /* Monotonic: a test moving the Unix clock (or NTP) must not stall or hurry the ticks. */
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cond, &attr);
    pthread_condattr_destroy(&attr);
    atomic_init(&n->is_stopping, false);
    return n;
}

static void
notifier_free(struct tg_notifier *n)
{
    seen_clear(&n->seen);
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->lock);
    free(n);
}

int
tg_notifier_start(const struct tg_notifier_opts *opts, struct tg_notifier **out)
{
    *out = NULL;
    if (opts->store == NULL) {
        return TG_EINVAL;
    }
    struct tg_notifier *n = notifier_new(opts);
    if (pthread_create(&n->thread, NULL, run, n) != 0) {
        notifier_free(n);
        return TG_ENOMEM;
    }
    n->has_thread = true;
    *out = n;
    return 0;
}

void
tg_notifier_wake(struct tg_notifier *n)
{
    pthread_mutex_lock(&n->lock);
    n->is_woken = true;
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->lock);
}

void
tg_notifier_stop(struct tg_notifier *n)
{
    if (n == NULL) {
        return;
    }
    pthread_mutex_lock(&n->lock);
    atomic_store(&n->is_stopping, true);
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->lock);
    if (n->has_thread) {
        pthread_join(n->thread, NULL);
    }
    notifier_free(n);
}
