/*
 * cli_fmt_org.c: the CLI's pure functions for the organization commands: tables of users,
 * invites, admin keys, members, service accounts, audit entries, config versions, diffs and
 * apply plans, the one-object view, and the builders of list options and audit queries
 * (see cli_int.h).
 *
 * Like cli_fmt.c, nothing here does I/O: API answers come in as jansson values and leave as
 * table text, so the unit tests drive every function with literal JSON. Values the API may
 * leave out or set to null print as "-" (the table's NULL cell), never as an empty column.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"

/* Longest compact JSON shown in one cell before it is cut with "...". */
#define CELL_JSON_MAX 60

/* ---- cells ---------------------------------------------------------------------------------- */

/* A time member (Unix seconds) as "YYYY-MM-DD HH:MM" in out, or NULL when absent or null. */
static const char *
time_cell(const json_t *o, const char *key, char out[32])
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) {
        return NULL;
    }
    tg_cli_time_format(json_integer_value(v), true, out);
    return out;
}

/* Any JSON value as cell text: a string as it is, null or absent as NULL, anything else as
 * compact JSON cut at CELL_JSON_MAX bytes. The result is a heap string (or NULL). */
static char *
value_cell(const json_t *v)
{
    if (v == NULL || json_is_null(v)) {
        return NULL;
    }
    if (json_is_string(v)) {
        return tg_xstrdup(json_string_value(v));
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    if (s == NULL) {
        return tg_xstrdup("?");
    }
    if (strlen(s) > CELL_JSON_MAX) {
        /* Cut on a character boundary: back up over UTF-8 continuation bytes. */
        size_t cut = CELL_JSON_MAX - 3;
        while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80) {
            cut--;
        }
        memcpy(s + cut, "...", 4);
    }
    return s;
}

/* Renders a list's "data" items with row_fn into a table of n_cols titles. */
typedef void (*row_fn)(struct tg_cli_table *t, const json_t *item);

static int
list_table(const json_t *list, size_t n_cols, const char *const *titles, row_fn fn,
           struct tg_buf *out)
{
    const json_t *data = json_object_get(list, "data");
    if (!json_is_array(data)) {
        return TG_EPARSE;
    }
    struct tg_cli_table t;
    tg_cli_table_init(&t, n_cols, titles, 0);
    size_t i;
    const json_t *item;
    json_array_foreach(data, i, item)
    {
        fn(&t, item);
    }
    tg_cli_table_render(&t, out);
    tg_cli_table_deinit(&t);
    return 0;
}

/* ---- the organization's lists ------------------------------------------------------------- */

static void
user_row(struct tg_cli_table *t, const json_t *u)
{
    char added[32];
    const char *row[] = {tg_json_str(u, "id"), tg_json_str(u, "name"), tg_json_str(u, "email"),
                         tg_json_str(u, "role"), time_cell(u, "added_at", added)};
    tg_cli_table_add(t, row);
}

int
tg_cli_users_table(const json_t *list, struct tg_buf *out)
{
    static const char *const titles[] = {"id", "name", "email", "role", "added (UTC)"};
    return list_table(list, 5, titles, user_row, out);
}

static void
invite_row(struct tg_cli_table *t, const json_t *v)
{
    char expires[32];
    const char *row[] = {tg_json_str(v, "id"), tg_json_str(v, "email"), tg_json_str(v, "role"),
                         tg_json_str(v, "status"), time_cell(v, "expires_at", expires)};
    tg_cli_table_add(t, row);
}

int
tg_cli_invites_table(const json_t *list, struct tg_buf *out)
{
    static const char *const titles[] = {"id", "email", "role", "status", "expires (UTC)"};
    return list_table(list, 5, titles, invite_row, out);
}

static void
admin_key_row(struct tg_cli_table *t, const json_t *k)
{
    char created[32];
    const json_t *owner = json_object_get(k, "owner");
    const char *row[] = {tg_json_str(k, "id"),
                         tg_json_str(k, "name"),
                         tg_json_str(k, "redacted_value"),
                         tg_json_str(owner, "id"),
                         tg_json_str(owner, "role"),
                         tg_json_str(k, "status"),
                         time_cell(k, "created_at", created)};
    tg_cli_table_add(t, row);
}

int
tg_cli_admin_keys_table(const json_t *list, struct tg_buf *out)
{
    static const char *const titles[] = {"id",   "name",   "redacted",     "owner",
                                         "role", "status", "created (UTC)"};
    return list_table(list, 7, titles, admin_key_row, out);
}

int
tg_cli_members_table(const json_t *list, struct tg_buf *out)
{
    /* A member has a user's fields; only the date means "added to the project". */
    return tg_cli_users_table(list, out);
}

static void
svc_row(struct tg_cli_table *t, const json_t *s)
{
    char created[32];
    const char *row[] = {tg_json_str(s, "id"), tg_json_str(s, "name"), tg_json_str(s, "role"),
                         time_cell(s, "created_at", created)};
    tg_cli_table_add(t, row);
}

int
tg_cli_service_accounts_table(const json_t *list, struct tg_buf *out)
{
    static const char *const titles[] = {"id", "name", "role", "created (UTC)"};
    return list_table(list, 4, titles, svc_row, out);
}

/* ---- rate limits ----------------------------------------------------------------------------- */

static const char *const rate_limit_fields[] = {"max_requests_per_1_minute",
                                                "max_tokens_per_1_minute", "max_requests_per_1_day",
                                                "max_tokens_per_1_day"};
#define N_RATE_LIMIT_FIELDS (sizeof(rate_limit_fields) / sizeof(rate_limit_fields[0]))

int
tg_cli_rate_limits_table(const json_t *list, struct tg_buf *out)
{
    static const char *const titles[] = {"model", "requests/min", "tokens/min", "requests/day",
                                         "tokens/day"};
    const json_t *data = json_object_get(list, "data");
    if (!json_is_array(data)) {
        return TG_EPARSE;
    }
    struct tg_cli_table t;
    tg_cli_table_init(&t, 1 + N_RATE_LIMIT_FIELDS, titles, 0x1Eu); /* numbers to the right */
    size_t i;
    const json_t *item;
    json_array_foreach(data, i, item)
    {
        char *cells[N_RATE_LIMIT_FIELDS];
        for (size_t k = 0; k < N_RATE_LIMIT_FIELDS; k++) {
            cells[k] = value_cell(json_object_get(item, rate_limit_fields[k]));
        }
        const char *row[] = {tg_json_str(item, "model"), cells[0], cells[1], cells[2], cells[3]};
        tg_cli_table_add(&t, row);
        for (size_t k = 0; k < N_RATE_LIMIT_FIELDS; k++) {
            free(cells[k]);
        }
    }
    tg_cli_table_render(&t, out);
    tg_cli_table_deinit(&t);
    return 0;
}

int
tg_cli_rate_limits_body(const struct tg_cli_args *a, json_t **out, char *err, size_t err_cap)
{
    static const struct {
        enum tg_cli_opt_id opt;
        const char *name;
    } opts[] = {{TG_CLI_OPT_RPM, "--rpm"},
                {TG_CLI_OPT_TPM, "--tpm"},
                {TG_CLI_OPT_RPD, "--rpd"},
                {TG_CLI_OPT_TPD, "--tpd"}};
    _Static_assert(sizeof(opts) / sizeof(opts[0]) == N_RATE_LIMIT_FIELDS, "one option a field");
    json_t *body = json_object();
    *out = NULL;
    for (size_t k = 0; k < N_RATE_LIMIT_FIELDS; k++) {
        const char *v = a->opt[opts[k].opt];
        if (v == NULL) {
            continue;
        }
        if (strcmp(v, "none") == 0) {
            json_object_set_new(body, rate_limit_fields[k], json_null());
            continue;
        }
        /* Digits only: no sign, no spaces; at most 15 of them, within what the API takes. */
        size_t n = strspn(v, "0123456789");
        if (n == 0 || v[n] != '\0' || n > 15) {
            snprintf(err, err_cap,
                     "%s wants a whole number of 0 or more (at most 15 digits), or none",
                     opts[k].name);
            json_decref(body);
            return TG_EINVAL;
        }
        json_object_set_new(body, rate_limit_fields[k], json_integer(strtoll(v, NULL, 10)));
    }
    if (json_object_size(body) == 0) {
        snprintf(err, err_cap, "give at least one of --rpm, --tpm, --rpd, --tpd");
        json_decref(body);
        return TG_EINVAL;
    }
    *out = body;
    return 0;
}

/* ---- audit log and history ---------------------------------------------------------------- */

static void
audit_row(struct tg_cli_table *t, const json_t *e)
{
    char when[32];
    const char *type = tg_json_str(e, "type");
    const json_t *key = json_object_get(json_object_get(e, "actor"), "api_key");
    const char *actor = tg_json_str(json_object_get(key, "user"), "email");
    const json_t *project = json_object_get(e, "project");
    const char *project_name = tg_json_str(project, "name");
    const json_t *detail = type != NULL ? json_object_get(e, type) : NULL;
    const char *row[] = {time_cell(e, "effective_at", when), type,
                         actor != NULL ? actor : tg_json_str(key, "id"),
                         project_name != NULL ? project_name : tg_json_str(project, "id"),
                         tg_json_str(detail, "id")};
    tg_cli_table_add(t, row);
}

int
tg_cli_audit_table(const json_t *list, struct tg_buf *out)
{
    static const char *const titles[] = {"time (UTC)", "type", "actor", "project", "target"};
    return list_table(list, 5, titles, audit_row, out);
}

static void
version_row(struct tg_cli_table *t, const json_t *v)
{
    char number[32], created[32];
    const char *project = tg_json_str(v, "project_name");
    snprintf(number, sizeof(number), "%lld", (long long)tg_json_int(v, "number", 0));
    char *settings = value_cell(json_object_get(v, "settings"));
    const char *row[] = {number,
                         project != NULL ? project : tg_json_str(v, "project_id"),
                         time_cell(v, "created_at", created),
                         tg_json_str(v, "actor_id"),
                         tg_json_str(v, "reason"),
                         settings};
    tg_cli_table_add(t, row);
    free(settings);
}

int
tg_cli_versions_table(const json_t *list, struct tg_buf *out)
{
    static const char *const titles[] = {"version", "project", "created (UTC)",
                                         "actor",   "reason",  "settings"};
    return list_table(list, 6, titles, version_row, out);
}

int
tg_cli_diff_table(const json_t *diff, struct tg_buf *out)
{
    static const char *const titles[] = {"path", "change", "old", "new"};
    const json_t *changes = json_object_get(diff, "changes");
    if (!json_is_array(changes)) {
        return TG_EPARSE;
    }
    if (json_array_size(changes) == 0) {
        tg_buf_append_str(out, "No differences.\n");
        return 0;
    }
    struct tg_cli_table t;
    tg_cli_table_init(&t, 4, titles, 0);
    size_t i;
    const json_t *c;
    json_array_foreach(changes, i, c)
    {
        char *old = value_cell(json_object_get(c, "old"));
        char *new = value_cell(json_object_get(c, "new"));
        const char *row[] = {tg_json_str(c, "path"), tg_json_str(c, "change"), old, new};
        tg_cli_table_add(&t, row);
        free(old);
        free(new);
    }
    tg_cli_table_render(&t, out);
    tg_cli_table_deinit(&t);
    return 0;
}

/* ---- apply -------------------------------------------------------------------------------- */

/* What an apply change does, in a few words: "k: old -> new" for each member that differs
 * (update), "k: value" for each member (create), nothing else. */
static void
describe_change(const json_t *before, const json_t *after, struct tg_buf *out)
{
    const char *k;
    const json_t *v;
    if (!json_is_object(after)) {
        return;
    }
    json_object_foreach((json_t *)after, k, v)
    {
        const json_t *was = json_is_object(before) ? json_object_get(before, k) : NULL;
        if (json_is_object(before) && was != NULL && json_equal((json_t *)was, (json_t *)v)) {
            continue;
        }
        char *now_text = value_cell(v);
        if (out->len > 0) {
            tg_buf_append_str(out, ", ");
        }
        if (json_is_object(before)) {
            char *was_text = value_cell(was);
            tg_buf_appendf(out, "%s: %s -> %s", k, was_text ? was_text : "-",
                           now_text ? now_text : "-");
            free(was_text);
        } else {
            tg_buf_appendf(out, "%s: %s", k, now_text ? now_text : "-");
        }
        free(now_text);
    }
}

int
tg_cli_apply_table(const json_t *ans, struct tg_buf *out)
{
    static const char *const titles[] = {"action", "kind", "name", "changes"};
    const json_t *changes = json_object_get(ans, "changes");
    if (!json_is_array(changes)) {
        return TG_EPARSE;
    }
    if (json_array_size(changes) == 0) {
        tg_buf_append_str(out, "No changes.\n");
        return 0;
    }
    struct tg_cli_table t;
    struct tg_buf what;
    tg_cli_table_init(&t, 4, titles, 0);
    tg_buf_init(&what, 0);
    size_t i;
    const json_t *c;
    json_array_foreach(changes, i, c)
    {
        tg_buf_reset(&what);
        describe_change(json_object_get(c, "before"), json_object_get(c, "after"), &what);
        const char *row[] = {tg_json_str(c, "action"), tg_json_str(c, "kind"),
                             tg_json_str(c, "name"), what.len > 0 ? what.data : NULL};
        tg_cli_table_add(&t, row);
    }
    tg_cli_table_render(&t, out);
    tg_buf_deinit(&what);
    tg_cli_table_deinit(&t);
    return 0;
}

/* ---- one object --------------------------------------------------------------------------- */

int
tg_cli_object_table(const json_t *obj, struct tg_buf *out)
{
    static const char *const titles[] = {"field", "value"};
    if (!json_is_object(obj)) {
        return TG_EPARSE;
    }
    struct tg_cli_table t;
    tg_cli_table_init(&t, 2, titles, 0);
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        char when[32];
        /* The API's times are Unix seconds in members named *_at: show them as dates. */
        size_t len = strlen(k);
        bool is_time = len > 3 && strcmp(k + len - 3, "_at") == 0 && json_is_integer(v);
        char *text = is_time ? NULL : value_cell(v);
        const char *row[] = {k, is_time ? time_cell(obj, k, when) : text};
        tg_cli_table_add(&t, row);
        free(text);
    }
    tg_cli_table_render(&t, out);
    tg_cli_table_deinit(&t);
    return 0;
}

/* ---- request building ---------------------------------------------------------------------- */

int
tg_cli_list_split(const char *list, const char *option, json_t **out, char *err, size_t err_cap)
{
    json_t *arr = json_array();
    const char *p = list;
    for (;;) {
        size_t len = strcspn(p, ",");
        const char *s = p;
        size_t n = len;
        while (n > 0 && isspace((unsigned char)s[0])) {
            s++;
            n--;
        }
        while (n > 0 && isspace((unsigned char)s[n - 1])) {
            n--;
        }
        if (n == 0) {
            snprintf(err, err_cap, "%s has an empty item in '%s'", option, list);
            json_decref(arr);
            *out = NULL;
            return TG_EINVAL;
        }
        json_array_append_new(arr, json_stringn(s, n));
        if (p[len] == '\0') {
            break;
        }
        p += len + 1;
    }
    *out = arr;
    return 0;
}

int
tg_cli_invite_projects(const char *list, json_t **out, char *err, size_t err_cap)
{
    json_t *names = NULL;
    int rc = tg_cli_list_split(list, "--projects", &names, err, err_cap);
    *out = NULL;
    if (rc < 0) {
        return rc;
    }
    json_t *arr = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(names, i, v)
    {
        const char *item = json_string_value(v);
        const char *colon = strrchr(item, ':');
        const char *role = colon != NULL ? colon + 1 : "member";
        size_t name_len = colon != NULL ? (size_t)(colon - item) : strlen(item);
        if (strcmp(role, "owner") != 0 && strcmp(role, "member") != 0) {
            snprintf(err, err_cap, "--projects: the role in '%s' must be owner or member", item);
            rc = TG_EINVAL;
            break;
        }
        if (name_len == 0) {
            snprintf(err, err_cap, "--projects: '%s' names no project", item);
            rc = TG_EINVAL;
            break;
        }
        json_array_append_new(arr, json_pack("{s:s%,s:s}", "id", item, name_len, "role", role));
    }
    json_decref(names);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int
tg_cli_audit_query_path(const struct tg_cli_args *a, struct tg_buf *out, char *err, size_t err_cap)
{
    const char *since = a->opt[TG_CLI_OPT_SINCE];
    const char *until = a->opt[TG_CLI_OPT_UNTIL];
    int64_t since_s = 0, until_s = 0;
    if (since != NULL && tg_cli_time_parse(since, false, &since_s) < 0) {
        snprintf(err, err_cap, "--since: '%s' is not YYYY-MM-DD[THH:MM[:SS]] or Unix seconds",
                 since);
        return TG_EINVAL;
    }
    if (until != NULL && tg_cli_time_parse(until, true, &until_s) < 0) {
        snprintf(err, err_cap, "--until: '%s' is not YYYY-MM-DD[THH:MM[:SS]] or Unix seconds",
                 until);
        return TG_EINVAL;
    }
    if (since != NULL && until != NULL && until_s <= since_s) {
        snprintf(err, err_cap, "--until must be later than --since");
        return TG_EINVAL;
    }
    tg_buf_append_str(out, "/v1/organization/audit_logs");
    if (a->opt[TG_CLI_OPT_TYPE] != NULL) {
        tg_cli_url_param(out, "event_types%5B%5D", a->opt[TG_CLI_OPT_TYPE]);
    }
    if (a->opt[TG_CLI_OPT_ACTOR] != NULL) {
        tg_cli_url_param(out, "actor_ids%5B%5D", a->opt[TG_CLI_OPT_ACTOR]);
    }
    if (a->opt[TG_CLI_OPT_PROJECT] != NULL) {
        tg_cli_url_param(out, "project_ids%5B%5D", a->opt[TG_CLI_OPT_PROJECT]);
    }
    char num[32];
    if (since != NULL) {
        snprintf(num, sizeof(num), "%lld", (long long)since_s);
        tg_cli_url_param(out, "effective_at%5Bgte%5D", num);
    }
    if (until != NULL) {
        snprintf(num, sizeof(num), "%lld", (long long)until_s);
        tg_cli_url_param(out, "effective_at%5Blt%5D", num);
    }
    return 0;
}

int
tg_cli_limit_parse(const struct tg_cli_args *a, size_t def, size_t *out, char *err, size_t err_cap)
{
    const char *s = a->opt[TG_CLI_OPT_LIMIT];
    *out = def;
    if (s == NULL) {
        return 0;
    }
    size_t n = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p) || n > 100000000) {
            snprintf(err, err_cap, "--limit takes a number from 0 to 100000000, not '%s'", s);
            return TG_EINVAL;
        }
        n = n * 10 + (size_t)(*p - '0');
    }
    if (n > 100000000) {
        snprintf(err, err_cap, "--limit takes a number from 0 to 100000000, not '%s'", s);
        return TG_EINVAL;
    }
    *out = n;
    return 0;
}
