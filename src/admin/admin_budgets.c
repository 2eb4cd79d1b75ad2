/*
 * admin_budgets.c: monthly budgets of the organization, a project and a project's key, and the
 * settings of those three levels that budgets and rate limits share (admin_level_*).
 *
 * Routes (under /v1/organization/):
 *
 *   GET  budget                                            any admin key
 *   GET  projects/{project_id}/budget                      owners, project members
 *   GET  projects/{project_id}/api_keys/{key_id}/budget    owners, project members
 *       {"object":"organization.budget","scope":"organization"|"project"|"key",
 *        "scope_id":"org-..."|"proj_..."|"key_...","project_id":"proj_..."|null,
 *        "monthly_limit":{"value":"100.000000","currency":"usd"}|null,
 *        "monthly_limit_micros":100000000|null,           null: no hard limit
 *        "thresholds_pct":[50,80,100],"auto_increase":{"at_pct","by_micros","max_micros"}|null,
 *        "on_exceed":"refuse"|"lower_max_tokens","max_tokens_cap":4096,"max_n":8,
 *        "notify_emails":[...],"webhook_url":str|null,"webhook_secret":"env:..."|null,
 *        "spend":{"value":"1.250000","currency":"usd"},"spend_micros":1250000,
 *        "period_start":<unix s>,"period_end":<unix s>}
 *       Members not set show their defaults. webhook_secret is the stored reference, never
 *       the secret. spend is the month to date: the admission counters (settled plus reserved)
 *       when admission runs, else the ledger's settled spend since period_start.
 *   POST budget | projects/{project_id}/budget | projects/{project_id}/api_keys/{key_id}/budget
 *       Owners only (billing). A partial body of the members above (monthly_limit as
 *       {"value": "12.5"} or "12.5", or monthly_limit_micros; not both), null removing a member
 *       (back to its default). Checked with policy/limits.h's parser: 400 naming the member.
 *       Answers the budget object.
 *
 * Storage (policy/limits.h): the "budget" member of the level's settings, holding only the
 * members that are set; an empty budget leaves the settings. The organization's settings are
 * the document "org_settings" (id = org id), a key's the document "key_settings" (id = key id,
 * project_id = its project), a project's its settings column. A change is one transaction
 * (admin.c) with an audit entry "budget.updated" (target: the level's id; before and after:
 * the budget objects without spend) and, at project level, a numbered config version; a POST
 * that changes nothing writes neither. The snapshot is reloaded so admission sees it at once.
 */
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "policy/limits.h"
#include "policy/price.h"

/* ---- the settings of a level ------------------------------------------------------------- */

struct project_probe {
    const char *want_id;
    struct admin_level *l;
};

static int
copy_project(const struct tg_project_rec *p, void *arg)
{
    struct project_probe *pp = arg;
    struct admin_level *l = pp->l;
    if (l->is_found || strcmp(p->id, pp->want_id) != 0) {
        return 0;
    }
    l->is_found = true;
    l->org_id = tg_xstrdup(p->org_id);
    l->name = tg_xstrdup(p->name);
    l->environment = tg_xstrdup(p->environment != NULL ? p->environment : "");
    l->settings = tg_xstrdup(p->settings != NULL && p->settings[0] != '\0' ? p->settings : "{}");
    l->created_ms = p->created_ms;
    l->archived_ms = p->archived_ms;
    return 0;
}

struct key_probe {
    const char *want_id;
    const char *project_id;
    bool is_found;
};

static int
probe_key(const struct tg_key_rec *k, void *arg)
{
    struct key_probe *kp = arg;
    if (k->kind == TG_KEY_PROJECT && k->project_id != NULL && strcmp(k->id, kp->want_id) == 0 &&
        strcmp(k->project_id, kp->project_id) == 0) {
        kp->is_found = true;
        return 1;
    }
    return 0;
}

static int
copy_doc(const struct tg_doc *d, void *arg)
{
    struct admin_level *l = arg;
    free(l->settings);
    l->settings = tg_xstrdup(d->data != NULL && d->data[0] != '\0' ? d->data : "{}");
    l->created_ms = d->created_ms;
    l->has_doc = true;
    return 0;
}

/* Reads a settings document (absent: "{}"). 0 or a store error. */
static int
load_doc(struct admin_job *j, const char *kind, struct admin_level *l)
{
    l->settings = tg_xstrdup("{}");
    int rc = j->store->ops->doc_get(j->store, kind, l->id, copy_doc, l);
    return rc == TG_ENOTFOUND ? 0 : rc;
}

bool
admin_level_load(struct admin_job *j, enum tg_scope scope, struct admin_level *l)
{
    memset(l, 0, sizeof(*l));
    l->scope = scope;
    int rc = 0;
    if (scope == TG_SCOPE_ORG) {
        l->id = tg_xstrdup(j->state->org_id);
        rc = load_doc(j, "org_settings", l);
    } else if (scope == TG_SCOPE_PROJECT) {
        l->id = tg_xstrdup(j->project->id);
        l->project_id = tg_xstrdup(j->project->id);
        struct project_probe pp = {l->id, l};
        rc = j->store->ops->projects_list(j->store, j->state->org_id, copy_project, &pp);
        if (rc == 0 && !l->is_found) {
            admin_error(j, 404, "No such project.", "project_id", "not_found");
            return false;
        }
    } else {
        const char *key_id = admin_param(j, "key_id");
        struct key_probe kp = {key_id != NULL ? key_id : "", j->project->id, false};
        rc = j->store->ops->keys_list(j->store, j->state->org_id, probe_key, &kp);
        if (rc >= 0 && !kp.is_found) {
            admin_error(j, 404, "No such API key in this project.", "key_id", "not_found");
            return false;
        }
        l->id = tg_xstrdup(kp.want_id);
        l->project_id = tg_xstrdup(j->project->id);
        rc = rc < 0 ? rc : load_doc(j, "key_settings", l);
    }
    if (rc < 0) {
        admin_store_error(j, rc, "settings");
        return false;
    }
    return true;
}

void
admin_level_deinit(struct admin_level *l)
{
    free(l->id);
    free(l->project_id);
    free(l->settings);
    free(l->org_id);
    free(l->name);
    free(l->environment);
    memset(l, 0, sizeof(*l));
}

bool
admin_level_writable(struct admin_job *j, const struct admin_level *l)
{
    if (l->archived_ms != 0 || (j->project != NULL && j->project->is_archived)) {
        admin_error(j, 400, "The project is archived and can no longer be changed.", NULL,
                    "project_archived");
        return false;
    }
    return true;
}

bool
admin_level_check(struct admin_job *j, const char *settings)
{
    json_t *root = json_loads(settings, 0, NULL);
    struct tg_level_limits lim;
    char err[200];
    int rc = tg_level_limits_parse(root, &lim, err, sizeof(err));
    json_decref(root);
    if (rc == 0) {
        tg_level_limits_free(&lim);
        return true;
    }
    /* "budget.thresholds_pct: ..." names the member: the body's name is the part after the
     * first dot ("rate_limits.<model>.<member>" gives the member). */
    char param[96] = "";
    const char *colon = strchr(err, ':');
    size_t n = colon != NULL ? (size_t)(colon - err) : 0;
    if (n > 0 && n < sizeof(param)) {
        memcpy(param, err, n);
        param[n] = '\0';
    }
    const char *name = strrchr(param, '.');
    char msg[240];
    snprintf(msg, sizeof(msg), "Invalid value: %s.", err);
    admin_error(j, 400, msg, name != NULL ? name + 1 : (param[0] ? param : NULL), "invalid_value");
    return false;
}

/* Writes a settings document, or deletes it when the settings are empty. */
static int
save_doc(struct admin_job *j, const char *kind, const struct admin_level *l, const char *settings)
{
    if (strcmp(settings, "{}") == 0) {
        int rc = l->has_doc ? j->store->ops->doc_delete(j->store, kind, l->id) : 0;
        return rc == TG_ENOTFOUND ? 0 : rc;
    }
    int64_t now = tg_clock_unix_ms();
    struct tg_doc d = {
        .kind = kind,
        .id = l->id,
        .org_id = j->state->org_id,
        .project_id = l->project_id,
        .data = settings,
        .created_ms = l->has_doc ? l->created_ms : now,
        .updated_ms = now,
    };
    return j->store->ops->doc_put(j->store, &d);
}

int
admin_level_save(struct admin_job *j, const struct admin_level *l, const char *settings,
                 const char *type, const char *target_id, const char *before, const char *after)
{
    int rc;
    if (l->scope == TG_SCOPE_PROJECT) {
        struct tg_project_rec rec = {
            .id = l->id,
            .org_id = l->org_id,
            .name = l->name,
            .environment = l->environment,
            .created_ms = l->created_ms,
            .archived_ms = l->archived_ms,
            .settings = settings,
        };
        rc = j->store->ops->project_update(j->store, &rec);
        rc = rc < 0 ? rc : admin_version(j, l->id, settings, type);
    } else {
        rc = save_doc(j, l->scope == TG_SCOPE_ORG ? "org_settings" : "key_settings", l, settings);
    }
    return rc < 0 ? rc : admin_audit(j, type, l->project_id, target_id, before, after);
}

json_t *
admin_settings_root(const char *settings)
{
    json_t *root = json_loads(settings != NULL ? settings : "{}", 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        root = json_object();
    }
    return root;
}

char *
admin_settings_text(const json_t *root)
{
    char *text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    return text != NULL ? text : tg_xstrdup("{}");
}

/* ---- the budget object ----------------------------------------------------------------- */

static const char *const budget_members[] = {
    "monthly_limit",
    "monthly_limit_micros",
    "thresholds_pct",
    "auto_increase",
    "on_exceed",
    "max_tokens_cap",
    "max_n",
    "notify_emails",
    "webhook_url",
    "webhook_secret",
    NULL,
};

static void
append_usd(struct tg_buf *b, int64_t micros)
{
    char usd[40];
    tg_price_format_usd(micros, usd, sizeof(usd));
    tg_buf_appendf(b, "{\"value\":\"%s\",\"currency\":\"usd\"}", usd);
}

static void
append_opt_str(struct tg_buf *b, const char *s)
{
    if (s != NULL) {
        tg_json_quote(b, s);
    } else {
        tg_buf_append_str(b, "null");
    }
}

struct spend_probe {
    enum tg_scope scope;
    const char *id;
    int64_t micros;
};

static int
match_spend(const struct tg_spend_rec *r, void *arg)
{
    struct spend_probe *sp = arg;
    bool is_match = false;
    switch (sp->scope) {
    case TG_SCOPE_KEY:
        is_match = r->key_id != NULL && strcmp(r->key_id, sp->id) == 0;
        break;
    case TG_SCOPE_PROJECT:
        is_match = r->key_id == NULL && r->project_id != NULL && strcmp(r->project_id, sp->id) == 0;
        break;
    default:
        is_match = r->key_id == NULL && r->project_id == NULL;
        break;
    }
    if (is_match) {
        sp->micros = r->cost_micros;
    }
    return 0;
}

/* Month-to-date spend of the level: admission's counters, else the ledger's settled rows. */
static int64_t
level_spend(struct admin_job *j, const struct admin_level *l, int64_t now_ms, int64_t start_ms)
{
    struct tg_admission *a = tg_state_env_get()->admission;
    if (a != NULL) {
        return a->ops->spend(a, l->scope, l->id, now_ms);
    }
    struct spend_probe sp = {l->scope, l->id, 0};
    if (j->store->ops->spend_by_level == NULL ||
        j->store->ops->spend_by_level(j->store, j->state->org_id, start_ms, match_spend, &sp) < 0) {
        return 0;
    }
    return sp.micros;
}

/* The budget object of l (its parsed limits in lim). With spend, the month so far too. */
static void
append_budget(struct admin_job *j, struct tg_buf *b, const struct admin_level *l,
              const struct tg_level_limits *lim, bool with_spend)
{
    const struct tg_budget_conf *c = &lim->budget;
    tg_buf_append_str(b, "{\"object\":\"organization.budget\",\"scope\":");
    tg_json_quote(b, tg_scope_name(l->scope));
    tg_buf_append_str(b, ",\"scope_id\":");
    tg_json_quote(b, l->id);
    tg_buf_append_str(b, ",\"project_id\":");
    append_opt_str(b, l->project_id);
    tg_buf_append_str(b, ",\"monthly_limit\":");
    if (c->monthly_limit_micros > 0) {
        append_usd(b, c->monthly_limit_micros);
        tg_buf_appendf(b, ",\"monthly_limit_micros\":%lld", (long long)c->monthly_limit_micros);
    } else {
        tg_buf_append_str(b, "null,\"monthly_limit_micros\":null");
    }
    tg_buf_append_str(b, ",\"thresholds_pct\":[");
    for (size_t i = 0; i < c->n_thresholds; i++) {
        tg_buf_appendf(b, "%s%d", i > 0 ? "," : "", c->thresholds_pct[i]);
    }
    tg_buf_append_str(b, "],\"auto_increase\":");
    if (c->auto_at_pct > 0) {
        tg_buf_appendf(b, "{\"at_pct\":%lld,\"by_micros\":%lld,\"max_micros\":%lld}",
                       (long long)c->auto_at_pct, (long long)c->auto_by_micros,
                       (long long)c->auto_max_micros);
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_appendf(b, ",\"on_exceed\":\"%s\",\"max_tokens_cap\":%lld,\"max_n\":%lld",
                   c->lower_max_tokens ? "lower_max_tokens" : "refuse",
                   (long long)c->max_tokens_cap, (long long)c->max_n);
    tg_buf_append_str(b, ",\"notify_emails\":[");
    for (size_t i = 0; i < c->n_notify_emails; i++) {
        tg_buf_append_str(b, i > 0 ? "," : "");
        tg_json_quote(b, c->notify_emails[i]);
    }
    tg_buf_append_str(b, "],\"webhook_url\":");
    append_opt_str(b, c->webhook_url);
    tg_buf_append_str(b, ",\"webhook_secret\":");
    append_opt_str(b, c->webhook_secret);
    if (with_spend) {
        int tz = j->state->config->budget_tz_offset_minutes;
        int64_t now = tg_clock_unix_ms();
        int64_t start = tg_period_start_ms(now, tz);
        int64_t spend = level_spend(j, l, now, start);
        tg_buf_append_str(b, ",\"spend\":");
        append_usd(b, spend);
        tg_buf_appendf(b, ",\"spend_micros\":%lld,\"period_start\":%lld,\"period_end\":%lld",
                       (long long)spend, (long long)(start / 1000),
                       (long long)(tg_period_next_ms(now, tz) / 1000));
    }
    tg_buf_append_str(b, "}");
}

/* The level's limits parsed from settings; a level without a budget shows the defaults. */
static void
parse_level(const char *settings, struct tg_level_limits *lim)
{
    json_t *root = admin_settings_root(settings);
    if (json_object_get(root, "budget") == NULL) {
        json_object_set_new(root, "budget", json_object());
    }
    char err[200];
    if (tg_level_limits_parse(root, lim, err, sizeof(err)) < 0) {
        /* stored by hand: show what admission sees (nothing), with defaults */
        json_t *empty = json_pack("{s:{}}", "budget");
        tg_level_limits_parse(empty, lim, NULL, 0);
        json_decref(empty);
    }
    json_decref(root);
}

static char *
budget_text(struct admin_job *j, const struct admin_level *l, const char *settings, bool with_spend)
{
    struct tg_level_limits lim;
    parse_level(settings, &lim);
    struct tg_buf b;
    tg_buf_init(&b, 0);
    append_budget(j, &b, l, &lim, with_spend);
    tg_level_limits_free(&lim);
    return tg_buf_steal(&b, NULL);
}

/* ---- routes ----------------------------------------------------------------------------- */

static void
get_budget(struct admin_job *j, enum tg_scope scope)
{
    struct admin_level l;
    if (admin_level_load(j, scope, &l)) {
        char *text = budget_text(j, &l, l.settings, true);
        tg_buf_append_str(&j->out, text);
        free(text);
    }
    admin_level_deinit(&l);
}

/* monthly_limit ({"value": "12.5", "currency": "usd"} or "12.5") as micro-dollars into
 * *micros (-1 for null). False after answering 400. */
static bool
read_monthly_limit(struct admin_job *j, const json_t *v, int64_t *micros)
{
    if (json_is_null(v)) {
        *micros = -1;
        return true;
    }
    const json_t *value = v;
    if (json_is_object(v)) {
        const char *cur = json_string_value(json_object_get(v, "currency"));
        value = json_object_get(v, "value");
        bool is_only = json_object_size(v) == (json_object_get(v, "currency") != NULL ? 2u : 1u);
        if (!is_only ||
            (json_object_get(v, "currency") != NULL && (cur == NULL || strcmp(cur, "usd") != 0))) {
            admin_error(j, 400,
                        "Invalid value for 'monthly_limit': expected {\"value\": \"<USD>\", "
                        "\"currency\": \"usd\"}.",
                        "monthly_limit", "invalid_value");
            return false;
        }
    }
    const char *s = json_string_value(value);
    char num[48];
    if (json_is_integer(value) && json_integer_value(value) >= 0) {
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(value));
        s = num;
    }
    if (s == NULL || tg_price_parse_usd(s, micros) < 0 || *micros > INT64_C(1000000000000)) {
        admin_error(j, 400,
                    "Invalid value for 'monthly_limit': expected USD as a decimal string with at "
                    "most six decimals, such as \"100\" or \"12.50\" (at most 1000000).",
                    "monthly_limit", "invalid_value");
        return false;
    }
    return true;
}

/* The stored budget member after the body's changes, or NULL after answering 400. */
static json_t *
changed_budget(struct admin_job *j, json_t *root)
{
    if (!admin_body_only(j, budget_members)) {
        return NULL;
    }
    json_t *body = j->body;
    json_t *ml = json_object_get(body, "monthly_limit");
    json_t *mlm = json_object_get(body, "monthly_limit_micros");
    if (ml != NULL && mlm != NULL) {
        admin_error(j, 400, "Give monthly_limit or monthly_limit_micros, not both.",
                    "monthly_limit", "invalid_value");
        return NULL;
    }
    int64_t micros = 0;
    if (ml != NULL && !read_monthly_limit(j, ml, &micros)) {
        return NULL;
    }
    json_t *old = json_object_get(root, "budget");
    json_t *b = json_is_object(old) ? json_deep_copy(old) : json_object();
    const char *name;
    json_t *v;
    json_object_foreach(body, name, v)
    {
        if (strcmp(name, "monthly_limit") == 0) {
            if (micros < 0) {
                json_object_del(b, "monthly_limit_micros");
            } else {
                json_object_set_new(b, "monthly_limit_micros", json_integer(micros));
            }
        } else if (json_is_null(v)) {
            json_object_del(b, name);
        } else {
            json_object_set(b, name, v);
        }
    }
    return b;
}

static void
post_budget(struct admin_job *j, enum tg_scope scope)
{
    struct admin_level l;
    json_t *root = NULL;
    json_t *budget = NULL;
    char *settings = NULL;
    char *before = NULL;
    char *after = NULL;
    if (!admin_level_load(j, scope, &l) || !admin_level_writable(j, &l)) {
        goto out;
    }
    root = admin_settings_root(l.settings);
    budget = changed_budget(j, root);
    if (budget == NULL) {
        goto out;
    }
    if (json_object_size(budget) > 0) {
        json_object_set(root, "budget", budget);
    } else {
        json_object_del(root, "budget");
    }
    settings = admin_settings_text(root);
    if (!admin_level_check(j, settings)) {
        goto out;
    }
    before = budget_text(j, &l, l.settings, false);
    after = budget_text(j, &l, settings, false);
    json_t *old_root = admin_settings_root(l.settings);
    char *old_settings = admin_settings_text(old_root);
    json_decref(old_root);
    bool is_same = strcmp(old_settings, settings) == 0;
    free(old_settings);
    if (!is_same) {
        int rc = admin_level_save(j, &l, settings, "budget.updated", l.id, before, after);
        if (rc < 0) {
            admin_store_error(j, rc, "budget");
            goto out;
        }
        j->reload = true; /* admission reads budgets from the snapshot */
        tg_log_info("admin: budget of %s %s updated by %s", tg_scope_name(scope), l.id, j->key->id);
    }
    char *text = budget_text(j, &l, settings, true);
    tg_buf_append_str(&j->out, text);
    free(text);
out:
    json_decref(budget);
    json_decref(root);
    free(settings);
    free(before);
    free(after);
    admin_level_deinit(&l);
}

static void
get_org_budget(struct admin_job *j)
{
    get_budget(j, TG_SCOPE_ORG);
}

static void
get_project_budget(struct admin_job *j)
{
    get_budget(j, TG_SCOPE_PROJECT);
}

static void
get_key_budget(struct admin_job *j)
{
    get_budget(j, TG_SCOPE_KEY);
}

static void
post_org_budget(struct admin_job *j)
{
    post_budget(j, TG_SCOPE_ORG);
}

static void
post_project_budget(struct admin_job *j)
{
    post_budget(j, TG_SCOPE_PROJECT);
}

static void
post_key_budget(struct admin_job *j)
{
    post_budget(j, TG_SCOPE_KEY);
}

const struct admin_route tg_admin_routes_budgets[] = {
    {TG_HTTP_GET, "budget", ADMIN_ORG_READ,
     "The organization's monthly budget and its spend this month", get_org_budget},
    {TG_HTTP_POST, "budget", ADMIN_OWNER,
     "Change the organization's budget (partial body; null restores a default)", post_org_budget},
    {TG_HTTP_GET, "projects/{project_id}/budget", ADMIN_PROJECT,
     "A project's monthly budget and its spend this month", get_project_budget},
    {TG_HTTP_POST, "projects/{project_id}/budget", ADMIN_OWNER,
     "Change a project's budget (partial body; null restores a default)", post_project_budget},
    {TG_HTTP_GET, "projects/{project_id}/api_keys/{key_id}/budget", ADMIN_PROJECT,
     "A project API key's monthly budget and its spend this month", get_key_budget},
    {TG_HTTP_POST, "projects/{project_id}/api_keys/{key_id}/budget", ADMIN_OWNER,
     "Change a project API key's budget (partial body; null restores a default)", post_key_budget},
    {0, NULL, 0, NULL, NULL},
};
