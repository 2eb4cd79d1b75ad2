/*
 * sqlite_monitor.c: the SQLite store's notification outbox, alert rules and events, and
 * feedback. See sqlite.c for the design and sqlite_int.h for the helpers.
 */
#include "store/sqlite_int.h"

#include "core/err.h"

/* ---- notification outbox ------------------------------------------------------------------- */

int
sq_outbox_put(struct tg_store *store, const struct tg_outbox_rec *r, bool *inserted)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_OUTBOX_PUT);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, r->org_id);
        sq_bind_text(st, 2, r->event_key);
        sq_bind_text(st, 3, r->channel);
        sq_bind_text(st, 4, r->target);
        sq_bind_text(st, 5, r->payload);
        sqlite3_bind_int64(st, 6, r->created_ms);
        sqlite3_bind_int64(st, 7, r->next_attempt_ms);
        rc = sq_run(s, st, "put outbox row");
    }
    if (inserted != NULL) {
        *inserted = rc == 0 && sqlite3_changes(s->db) > 0;
    }
    sq_unlock(s);
    return rc;
}

struct outbox_walk {
    tg_store_outbox_cb cb;
    void *arg;
};

static int
outbox_row(sqlite3_stmt *st, void *arg)
{
    struct outbox_walk *w = arg;
    struct tg_outbox_rec r = {
        .id = sqlite3_column_int64(st, 0),
        .org_id = sq_col_text(st, 1),
        .event_key = sq_col_text(st, 2),
        .channel = sq_col_text(st, 3),
        .target = sq_col_text(st, 4),
        .payload = sq_col_text(st, 5),
        .created_ms = sqlite3_column_int64(st, 6),
        .attempts = sqlite3_column_int(st, 7),
        .next_attempt_ms = sqlite3_column_int64(st, 8),
        .delivered_ms = sqlite3_column_int64(st, 9),
        .last_error = sq_col_text(st, 10),
    };
    return w->cb(&r, w->arg);
}

int
sq_outbox_due(struct tg_store *store, int64_t now_ms, size_t limit, tg_store_outbox_cb cb,
              void *arg)
{
    struct sq *s = sq_of(store);
    struct outbox_walk w = {cb, arg};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_OUTBOX_DUE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, now_ms);
        sqlite3_bind_int64(st, 2, limit == 0 || limit > INT64_MAX ? -1 : (sqlite3_int64)limit);
        rc = sq_each_row(s, st, outbox_row, &w, "list due outbox rows");
    }
    sq_unlock(s);
    return rc;
}

int
sq_outbox_mark(struct tg_store *store, int64_t id, int64_t delivered_ms, const char *error,
               int64_t next_attempt_ms)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, delivered_ms > 0 ? S_OUTBOX_DELIVERED : S_OUTBOX_FAILED);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, id);
        if (delivered_ms > 0) {
            sqlite3_bind_int64(st, 2, delivered_ms);
        } else {
            sq_bind_text(st, 2, error);
            sqlite3_bind_int64(st, 3, next_attempt_ms);
        }
        rc = sq_run(s, st, "mark outbox row");
    }
    if (rc == 0 && sqlite3_changes(s->db) == 0) {
        rc = TG_ENOTFOUND;
    }
    sq_unlock(s);
    return rc;
}

int
sq_outbox_list(struct tg_store *store, const char *org_id, size_t limit, tg_store_outbox_cb cb,
               void *arg)
{
    struct sq *s = sq_of(store);
    struct outbox_walk w = {cb, arg};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_OUTBOX_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, org_id);
        sqlite3_bind_int64(st, 2, limit == 0 || limit > INT64_MAX ? -1 : (sqlite3_int64)limit);
        rc = sq_each_row(s, st, outbox_row, &w, "list outbox rows");
    }
    sq_unlock(s);
    return rc;
}

/* ---- alert rules and events ------------------------------------------------------------------ */

int
sq_alert_rule_put(struct tg_store *store, const struct tg_alert_rule_rec *r)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_ALERT_RULE_PUT);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, r->id);
        sq_bind_text(st, 2, r->org_id);
        sq_bind_text(st, 3, r->name);
        sq_bind_text(st, 4, r->project_id);
        sq_bind_text(st, 5, r->model);
        sq_bind_text(st, 6, r->metric);
        sq_bind_text(st, 7, r->condition);
        sqlite3_bind_double(st, 8, r->threshold);
        sqlite3_bind_int64(st, 9, r->window_s);
        sqlite3_bind_int64(st, 10, r->min_requests);
        sq_bind_text(st, 11, r->channels != NULL ? r->channels : "{}");
        sqlite3_bind_int(st, 12, r->is_enabled ? 1 : 0);
        sqlite3_bind_int64(st, 13, r->created_ms);
        sqlite3_bind_int64(st, 14, r->updated_ms);
        rc = sq_run(s, st, "put alert rule");
    }
    sq_unlock(s);
    return rc;
}

struct rule_walk {
    tg_store_alert_rule_cb cb;
    void *arg;
    bool is_found;
};

static int
alert_rule_row(sqlite3_stmt *st, void *arg)
{
    struct rule_walk *w = arg;
    struct tg_alert_rule_rec r = {
        .id = sq_col_text(st, 0),
        .org_id = sq_col_text(st, 1),
        .name = sq_col_text(st, 2),
        .project_id = sq_col_text(st, 3),
        .model = sq_col_text(st, 4),
        .metric = sq_col_text(st, 5),
        .condition = sq_col_text(st, 6),
        .threshold = sqlite3_column_double(st, 7),
        .window_s = sqlite3_column_int64(st, 8),
        .min_requests = sqlite3_column_int64(st, 9),
        .channels = sq_col_text(st, 10),
        .is_enabled = sqlite3_column_int(st, 11) != 0,
        .created_ms = sqlite3_column_int64(st, 12),
        .updated_ms = sqlite3_column_int64(st, 13),
    };
    w->is_found = true;
    return w->cb(&r, w->arg);
}

int
sq_alert_rule_get(struct tg_store *store, const char *id, tg_store_alert_rule_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct rule_walk w = {cb, arg, false};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_ALERT_RULE_GET);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, id);
        rc = sq_each_row(s, st, alert_rule_row, &w, "get alert rule");
    }
    sq_unlock(s);
    return rc == 0 && !w.is_found ? TG_ENOTFOUND : rc;
}

int
sq_alert_rule_delete(struct tg_store *store, const char *id)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_ALERT_RULE_DELETE);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, id);
        rc = sq_run(s, st, "delete alert rule");
    }
    if (rc == 0 && sqlite3_changes(s->db) == 0) {
        rc = TG_ENOTFOUND;
    }
    sq_unlock(s);
    return rc;
}

int
sq_alert_rules_list(struct tg_store *store, const char *org_id, tg_store_alert_rule_cb cb,
                    void *arg)
{
    struct sq *s = sq_of(store);
    struct rule_walk w = {cb, arg, false};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_ALERT_RULES_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, org_id);
        rc = sq_each_row(s, st, alert_rule_row, &w, "list alert rules");
    }
    sq_unlock(s);
    return rc;
}

int
sq_alert_event_put(struct tg_store *store, const struct tg_alert_event_rec *r)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_ALERT_EVENT_PUT);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, r->id);
        sq_bind_text(st, 2, r->org_id);
        sq_bind_text(st, 3, r->rule_id);
        sq_bind_text(st, 4, r->name);
        sq_bind_text(st, 5, r->metric);
        sq_bind_text(st, 6, r->project_id);
        sq_bind_text(st, 7, r->model);
        sqlite3_bind_double(st, 8, r->value);
        sqlite3_bind_double(st, 9, r->threshold);
        sqlite3_bind_int64(st, 10, r->fired_ms);
        sqlite3_bind_int64(st, 11, r->resolved_ms);
        rc = sq_run(s, st, "put alert event");
    }
    sq_unlock(s);
    return rc;
}

struct event_walk {
    tg_store_alert_event_cb cb;
    void *arg;
};

static int
alert_event_row(sqlite3_stmt *st, void *arg)
{
    struct event_walk *w = arg;
    struct tg_alert_event_rec r = {
        .id = sq_col_text(st, 0),
        .org_id = sq_col_text(st, 1),
        .rule_id = sq_col_text(st, 2),
        .name = sq_col_text(st, 3),
        .metric = sq_col_text(st, 4),
        .project_id = sq_col_text(st, 5),
        .model = sq_col_text(st, 6),
        .value = sqlite3_column_double(st, 7),
        .threshold = sqlite3_column_double(st, 8),
        .fired_ms = sqlite3_column_int64(st, 9),
        .resolved_ms = sqlite3_column_int64(st, 10),
    };
    return w->cb(&r, w->arg);
}

int
sq_alert_events_list(struct tg_store *store, const char *org_id, const char *rule_id, int state,
                     size_t limit, tg_store_alert_event_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct event_walk w = {cb, arg};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_ALERT_EVENTS_LIST);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, org_id);
        sq_bind_text(st, 2, rule_id);
        sqlite3_bind_int(st, 3, state);
        sqlite3_bind_int64(st, 4, limit == 0 || limit > INT64_MAX ? -1 : (sqlite3_int64)limit);
        rc = sq_each_row(s, st, alert_event_row, &w, "list alert events");
    }
    sq_unlock(s);
    return rc;
}

/* ---- feedback ----------------------------------------------------------------------------------
 */

int
sq_feedback_insert(struct tg_store *store, const struct tg_feedback_rec *r)
{
    struct sq *s = sq_of(store);
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_FEEDBACK_INSERT);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, r->id);
        sq_bind_text(st, 2, r->org_id);
        sq_bind_text(st, 3, r->project_id);
        sq_bind_text(st, 4, r->request_id);
        sq_bind_text(st, 5, r->model != NULL ? r->model : "");
        sq_bind_text(st, 6, r->provider != NULL ? r->provider : "");
        sq_bind_text(st, 7, r->deployment != NULL ? r->deployment : "");
        sqlite3_bind_double(st, 8, r->score);
        sq_bind_text(st, 9, r->label);
        sq_bind_text(st, 10, r->comment);
        sqlite3_bind_int64(st, 11, r->created_ms);
        rc = sq_run(s, st, "insert feedback");
    }
    sq_unlock(s);
    return rc;
}

struct agg_walk {
    tg_store_feedback_agg_cb cb;
    void *arg;
};

static int
feedback_agg_row(sqlite3_stmt *st, void *arg)
{
    struct agg_walk *w = arg;
    struct tg_feedback_agg r = {
        .model = sq_col_text(st, 0),
        .deployment = sq_col_text(st, 1),
        .label = sq_col_text(st, 2),
        .count = sqlite3_column_int64(st, 3),
        .score_sum = sqlite3_column_double(st, 4),
    };
    return w->cb(&r, w->arg);
}

int
sq_feedback_aggregate(struct tg_store *store, const char *org_id, int64_t start_ms, int64_t end_ms,
                      bool by_deployment, tg_store_feedback_agg_cb cb, void *arg)
{
    struct sq *s = sq_of(store);
    struct agg_walk w = {cb, arg};
    sq_lock(s);
    sqlite3_stmt *st = sq_stmt(s, S_FEEDBACK_AGG);
    int rc = st != NULL ? 0 : TG_ESTORE;
    if (rc == 0) {
        sq_bind_text(st, 1, org_id);
        sqlite3_bind_int64(st, 2, start_ms);
        sqlite3_bind_int64(st, 3, end_ms);
        sqlite3_bind_int(st, 4, by_deployment ? 1 : 0);
        rc = sq_each_row(s, st, feedback_agg_row, &w, "aggregate feedback");
    }
    sq_unlock(s);
    return rc;
}
