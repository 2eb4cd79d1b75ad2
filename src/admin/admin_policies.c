/*
 * admin_policies.c: a project's (and a project key's) token policy and model aliases
 * (policy/token_policy.h).
 *
 * Routes (under /v1/organization/):
 *
 *   GET  projects/{project_id}/token_policy                         owners, members
 *   POST projects/{project_id}/token_policy                         owners
 *   GET  projects/{project_id}/api_keys/{key_id}/token_policy       owners, members
 *   POST projects/{project_id}/api_keys/{key_id}/token_policy       owners
 *   GET  projects/{project_id}/aliases                              owners, members
 *   POST projects/{project_id}/aliases                              owners
 *       The answer: {"object":"project.token_policy" | "project.api_key.token_policy" |
 *       "project.aliases", "id": <project or key id>, "token_policy" | "aliases": {...}}.
 *       A POST body is the whole new object (it replaces the old one; {} removes it), checked
 *       as the proxy will read it (a bad member is a 400 naming it).
 *
 * Storage: the member "token_policy" or "aliases" of the level's settings (admin_level_*: a
 * project's settings column, the document "key_settings"), so export, history and rollback
 * carry them with the rest. Each change is one transaction (admin.c) with one audit entry
 * ("token_policy.updated" or "aliases.updated", before and after) and, at project level, a
 * numbered config version; a POST that changes nothing writes neither.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_int.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "policy/token_policy.h"

/* The stored member as a JSON object text ({} when none). */
static char *
member_text(const char *settings, const char *member)
{
    json_t *root = admin_settings_root(settings);
    json_t *v = json_object_get(root, member);
    char *text = json_is_object(v) ? admin_settings_text(v) : tg_xstrdup("{}");
    json_decref(root);
    return text;
}

static const char *
object_name(enum tg_scope scope, const char *member)
{
    if (strcmp(member, "aliases") == 0) {
        return "project.aliases";
    }
    return scope == TG_SCOPE_KEY ? "project.api_key.token_policy" : "project.token_policy";
}

static void
answer(struct admin_job *j, enum tg_scope scope, const char *id, const char *member,
       const char *value)
{
    tg_buf_appendf(&j->out, "{\"object\":\"%s\",\"id\":", object_name(scope, member));
    tg_json_quote(&j->out, id);
    tg_buf_appendf(&j->out, ",\"%s\":%s}", member, value);
}

static void
get_member(struct admin_job *j, enum tg_scope scope, const char *member)
{
    struct admin_level l;
    if (admin_level_load(j, scope, &l)) {
        char *text = member_text(l.settings, member);
        answer(j, scope, l.id, member, text);
        free(text);
    }
    admin_level_deinit(&l);
}

/* Parses settings as the state snapshot will; false after a 400 naming the member. */
static bool
check(struct admin_job *j, const json_t *root, const char *member)
{
    char err[200];
    int rc;
    if (strcmp(member, "aliases") == 0) {
        struct tg_aliases a;
        rc = tg_aliases_parse(root, &a, err, sizeof(err));
        tg_aliases_free(&a);
    } else {
        struct tg_token_policy p;
        rc = tg_token_policy_parse(root, &p, err, sizeof(err));
        tg_token_policy_free(&p);
    }
    if (rc == 0) {
        return true;
    }
    /* "token_policy.max_n must ..." names the member: the param is the part after the dot. */
    char param[96] = "";
    const char *dot = strchr(err, '.');
    if (dot != NULL) {
        size_t n = strcspn(dot + 1, " :[");
        if (n > 0 && n < sizeof(param)) {
            memcpy(param, dot + 1, n);
            param[n] = '\0';
        }
    }
    char msg[240];
    snprintf(msg, sizeof(msg), "Invalid value: %s.", err);
    admin_error(j, 400, msg, param[0] != '\0' ? param : NULL, "invalid_value");
    return false;
}

static void
set_member(struct admin_job *j, enum tg_scope scope, const char *member)
{
    struct admin_level l;
    memset(&l, 0, sizeof(l));
    json_t *root = NULL;
    char *settings = NULL;
    char *before = NULL;
    char *after = NULL;
    if (!json_is_object(j->body)) {
        admin_error(j, 400, "The request body must be a JSON object.", NULL, "invalid_value");
        goto out;
    }
    if (!admin_level_load(j, scope, &l) || !admin_level_writable(j, &l)) {
        goto out;
    }
    root = admin_settings_root(l.settings);
    if (json_object_size(j->body) > 0) {
        json_object_set(root, member, j->body);
    } else {
        json_object_del(root, member);
    }
    if (!check(j, root, member)) {
        goto out;
    }
    settings = admin_settings_text(root);
    if (!admin_level_check(j, settings)) {
        goto out;
    }
    before = member_text(l.settings, member);
    after = member_text(settings, member);
    if (strcmp(before, after) != 0) {
        char type[64];
        snprintf(type, sizeof(type), "%s.updated", member);
        int rc = admin_level_save(j, &l, settings, type, l.id, before, after);
        if (rc < 0) {
            admin_store_error(j, rc, member);
            goto out;
        }
        j->reload = true; /* the proxy reads policies from the snapshot */
        tg_log_info("admin: %s of %s %s updated by %s", member, tg_scope_name(scope), l.id,
                    j->key->id);
    }
    answer(j, scope, l.id, member, after);
out:
    json_decref(root);
    free(settings);
    free(before);
    free(after);
    admin_level_deinit(&l);
}

static void
get_project_policy(struct admin_job *j)
{
    get_member(j, TG_SCOPE_PROJECT, "token_policy");
}

static void
set_project_policy(struct admin_job *j)
{
    set_member(j, TG_SCOPE_PROJECT, "token_policy");
}

static void
get_key_policy(struct admin_job *j)
{
    get_member(j, TG_SCOPE_KEY, "token_policy");
}

static void
set_key_policy(struct admin_job *j)
{
    set_member(j, TG_SCOPE_KEY, "token_policy");
}

static void
get_project_aliases(struct admin_job *j)
{
    get_member(j, TG_SCOPE_PROJECT, "aliases");
}

static void
set_project_aliases(struct admin_job *j)
{
    set_member(j, TG_SCOPE_PROJECT, "aliases");
}

const struct admin_route tg_admin_routes_policies[] = {
    {TG_HTTP_GET, "projects/{project_id}/token_policy", ADMIN_PROJECT,
     "Show a project's token policy (default and maximum max_tokens, n, stop, prompt size, "
     "forbidden and forced parameters)",
     get_project_policy},
    {TG_HTTP_POST, "projects/{project_id}/token_policy", ADMIN_OWNER,
     "Replace a project's token policy ({} removes it)", set_project_policy},
    {TG_HTTP_GET, "projects/{project_id}/api_keys/{key_id}/token_policy", ADMIN_PROJECT,
     "Show a project API key's token policy (it overrides the project's, member by member)",
     get_key_policy},
    {TG_HTTP_POST, "projects/{project_id}/api_keys/{key_id}/token_policy", ADMIN_OWNER,
     "Replace a project API key's token policy ({} removes it)", set_key_policy},
    {TG_HTTP_GET, "projects/{project_id}/aliases", ADMIN_PROJECT,
     "Show a project's model aliases (an alias names a model, or a tier resolved to its "
     "cheapest allowed model)",
     get_project_aliases},
    {TG_HTTP_POST, "projects/{project_id}/aliases", ADMIN_OWNER,
     "Replace a project's model aliases ({} removes them)", set_project_aliases},
    {0, NULL, 0, NULL, NULL},
};
