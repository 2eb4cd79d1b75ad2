/*
 * cli_cmds_org.c: the commands for the organization's projects, project members, users,
 * invites, admin keys, service accounts and rate limits (rows of the command table in cli.c).
 *
 * Each command is one admin API call (a user named by e-mail costs one more: the user list,
 * to find the id the API's paths take). Reads print a table; changes print one line saying
 * what changed, or the answer with --json. A secret the API shows once (an invite's token, a
 * new admin key, a service account's key) is printed alone on stdout, so scripts can capture
 * it, with the explanation on stderr.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli_int.h"
#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"

/* ---- helpers -------------------------------------------------------------------------------- */

/* Sends body (taken; NULL for none) as JSON. Returns 0 and *ans, or -1 (already reported). */
static int
call(struct tg_cli *cli, const char *method, const char *path, json_t *body, json_t **ans)
{
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    int rc = body != NULL && text == NULL ? TG_ENOMEM : 0;
    json_decref(body);
    *ans = NULL;
    if (rc == 0) {
        rc = tg_cli_request(cli, method, path, text, ans);
    }
    free(text);
    return rc < 0 ? -1 : 0;
}

/* Prints ans with --json, else the message; takes ans. Returns exit code 0. */
static int done(struct tg_cli *cli, json_t *ans, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
vdone(struct tg_cli *cli, json_t *ans, const char *fmt, va_list ap)
{
    if (cli->is_json) {
        tg_cli_json_print(cli, ans);
    } else {
        vfprintf(cli->out, fmt, ap);
        fputc('\n', cli->out);
    }
    json_decref(ans);
    return 0;
}

static int
done(struct tg_cli *cli, json_t *ans, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vdone(cli, ans, fmt, ap);
    va_end(ap);
    return 0;
}

/* DELETE path (freed here), then the confirmation (or the answer with --json). Returns the
 * command's exit status. */
static int
delete_and_say(struct tg_cli *cli, char *path, const char *fmt, ...)
{
    json_t *ans = NULL;
    int rc = call(cli, "DELETE", path, NULL, &ans);
    free(path);
    if (rc < 0) {
        return 1;
    }
    va_list ap;
    va_start(ap, fmt);
    vdone(cli, ans, fmt, ap);
    va_end(ap);
    return 0;
}

/* A string member of an answer, or "?" so that a message never prints "(null)". */
static const char *
str(const json_t *o, const char *key)
{
    const char *s = tg_json_str(o, key);
    return s != NULL ? s : "?";
}

/* A command-line mistake found after parsing: exit code 2. */
static int
usage_error(struct tg_cli *cli, const char *msg)
{
    tg_cli_fail(cli, "%s", msg);
    return 2;
}

/* The user id behind ref: ref itself, or, when it is an e-mail address, the id of the user
 * with that address (looked up in the user list). A heap string, or NULL (reported). */
static char *
user_id_of(struct tg_cli *cli, const char *ref)
{
    if (strchr(ref, '@') == NULL) {
        return tg_xstrdup(ref);
    }
    json_t *list = NULL;
    char *id = NULL;
    if (tg_cli_list_fetch(cli, "/v1/organization/users", &list) < 0) {
        return NULL;
    }
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(list, "data"), i, u)
    {
        const char *email = tg_json_str(u, "email");
        if (email != NULL && strcasecmp(email, ref) == 0 && tg_json_str(u, "id") != NULL) {
            id = tg_xstrdup(tg_json_str(u, "id"));
            break;
        }
    }
    json_decref(list);
    if (id == NULL) {
        tg_cli_fail(cli, "no user in the organization has the e-mail address %s", ref);
    }
    return id;
}

/* GET path, shown as one object's fields. */
static int
show_one(struct tg_cli *cli, char *path)
{
    int rc = tg_cli_send(cli, "GET", path, NULL, tg_cli_object_table, NULL);
    free(path);
    return rc;
}

static const char *
project_opt(struct tg_cli *cli)
{
    return cli->args->opt[TG_CLI_OPT_PROJECT];
}

/* ---- projects ------------------------------------------------------------------------------ */

/* "models: a, b" or "models: every routed model" for a project answer. */
static void
models_text(const json_t *project, struct tg_buf *out)
{
    const json_t *models = json_object_get(project, "models");
    if (!json_is_array(models) || json_array_size(models) == 0) {
        tg_buf_append_str(out, "every routed model");
        return;
    }
    size_t i;
    json_t *m;
    json_array_foreach(models, i, m)
    {
        tg_buf_appendf(out, "%s%s", i > 0 ? ", " : "",
                       json_is_string(m) ? json_string_value(m) : "?");
    }
}

/* Prints the one-line summary of a project answer after a change. */
static int
project_done(struct tg_cli *cli, json_t *ans, const char *verb)
{
    struct tg_buf models;
    tg_buf_init(&models, 0);
    models_text(ans, &models);
    int rc = done(cli, ans, "%s project %s (%s): environment %s, models: %s.", verb,
                  str(ans, "name"), str(ans, "id"), str(ans, "environment"), models.data);
    tg_buf_deinit(&models);
    return rc;
}

int
tg_cli_cmd_projects_get(struct tg_cli *cli)
{
    return show_one(cli, tg_cli_path("projects/%s", cli->args->pos[0]));
}

/* Adds "models" from --models / --all-models to body. Returns 0, or 2 after a usage error. */
static int
models_from_opts(struct tg_cli *cli, json_t *body)
{
    const char *list = cli->args->opt[TG_CLI_OPT_MODELS];
    bool is_all = cli->args->opt[TG_CLI_OPT_ALL_MODELS] != NULL;
    char err[300];
    json_t *models = NULL;
    if (list != NULL && is_all) {
        return usage_error(cli, "give --models or --all-models, not both");
    }
    if (is_all) {
        json_object_set_new(body, "models", json_null());
    } else if (list != NULL) {
        if (tg_cli_list_split(list, "--models", &models, err, sizeof(err)) < 0) {
            return usage_error(cli, err);
        }
        json_object_set_new(body, "models", models);
    }
    return 0;
}

int
tg_cli_cmd_projects_create(struct tg_cli *cli)
{
    const struct tg_cli_args *a = cli->args;
    json_t *body = json_pack("{s:s}", "name", a->pos[0]);
    json_t *ans = NULL;
    if (a->opt[TG_CLI_OPT_ENVIRONMENT] != NULL) {
        json_object_set_new(body, "environment", json_string(a->opt[TG_CLI_OPT_ENVIRONMENT]));
    }
    int rc = models_from_opts(cli, body);
    if (rc != 0) {
        json_decref(body);
        return rc;
    }
    if (call(cli, "POST", "/v1/organization/projects", body, &ans) < 0) {
        return 1;
    }
    return project_done(cli, ans, "Created");
}

/* POSTs body (taken) to the project's URL and reports the result. */
static int
modify_project(struct tg_cli *cli, const char *project, json_t *body)
{
    json_t *ans = NULL;
    char *path = tg_cli_path("projects/%s", project);
    int rc = call(cli, "POST", path, body, &ans);
    free(path);
    return rc < 0 ? 1 : project_done(cli, ans, "Updated");
}

int
tg_cli_cmd_projects_modify(struct tg_cli *cli)
{
    const struct tg_cli_args *a = cli->args;
    json_t *body = json_object();
    if (a->opt[TG_CLI_OPT_NAME] != NULL) {
        json_object_set_new(body, "name", json_string(a->opt[TG_CLI_OPT_NAME]));
    }
    if (a->opt[TG_CLI_OPT_ENVIRONMENT] != NULL) {
        json_object_set_new(body, "environment", json_string(a->opt[TG_CLI_OPT_ENVIRONMENT]));
    }
    int rc = models_from_opts(cli, body);
    if (rc == 0 && json_object_size(body) == 0) {
        rc = usage_error(cli, "'projects modify' needs --name, --environment, --models or "
                              "--all-models");
    }
    if (rc != 0) {
        json_decref(body);
        return rc;
    }
    return modify_project(cli, a->pos[0], body);
}

int
tg_cli_cmd_projects_rename(struct tg_cli *cli)
{
    const struct tg_cli_args *a = cli->args;
    json_t *body = json_pack("{s:s}", "name", a->pos[1]);
    if (a->opt[TG_CLI_OPT_ENVIRONMENT] != NULL) {
        json_object_set_new(body, "environment", json_string(a->opt[TG_CLI_OPT_ENVIRONMENT]));
    }
    return modify_project(cli, a->pos[0], body);
}

int
tg_cli_cmd_projects_set_models(struct tg_cli *cli)
{
    const struct tg_cli_args *a = cli->args;
    bool is_all = a->opt[TG_CLI_OPT_ALL_MODELS] != NULL;
    if (is_all == (a->n_pos > 1)) {
        /* An empty list would open the project to every model: make that explicit. */
        return usage_error(cli, is_all ? "give models or --all-models, not both"
                                       : "'projects set-models' needs MODEL... or --all-models");
    }
    json_t *models = is_all ? json_null() : json_array();
    for (size_t i = 1; i < a->n_pos; i++) {
        json_array_append_new(models, json_string(a->pos[i]));
    }
    return modify_project(cli, a->pos[0], json_pack("{s:o}", "models", models));
}

int
tg_cli_cmd_projects_archive(struct tg_cli *cli)
{
    json_t *ans = NULL;
    char *path = tg_cli_path("projects/%s/archive", cli->args->pos[0]);
    int rc = call(cli, "POST", path, json_object(), &ans);
    free(path);
    if (rc < 0) {
        return 1;
    }
    return done(cli, ans, "Archived project %s (%s): its keys no longer work.", str(ans, "name"),
                str(ans, "id"));
}

/* ---- members --------------------------------------------------------------------------------- */

int
tg_cli_cmd_members_list(struct tg_cli *cli)
{
    char *path = tg_cli_path("projects/%s/users", project_opt(cli));
    int rc = tg_cli_show_list(cli, path, tg_cli_members_table);
    free(path);
    return rc;
}

int
tg_cli_cmd_members_add(struct tg_cli *cli)
{
    const char *user = cli->args->pos[0];
    const char *role = cli->args->opt[TG_CLI_OPT_ROLE] ? cli->args->opt[TG_CLI_OPT_ROLE] : "member";
    json_t *ans = NULL;
    char *path = tg_cli_path("projects/%s/users", project_opt(cli));
    json_t *body =
        json_pack("{s:s,s:s}", strchr(user, '@') ? "email" : "user_id", user, "role", role);
    int rc = call(cli, "POST", path, body, &ans);
    free(path);
    if (rc < 0) {
        return 1;
    }
    return done(cli, ans, "Added %s (%s) to project %s as %s.", str(ans, "email"), str(ans, "id"),
                project_opt(cli), str(ans, "role"));
}

int
tg_cli_cmd_members_set_role(struct tg_cli *cli)
{
    json_t *ans = NULL;
    char *id = user_id_of(cli, cli->args->pos[0]);
    if (id == NULL) {
        return 1;
    }
    char *path = tg_cli_path("projects/%s/users/%s", project_opt(cli), id);
    int rc = call(cli, "POST", path, json_pack("{s:s}", "role", cli->args->pos[1]), &ans);
    free(path);
    free(id);
    if (rc < 0) {
        return 1;
    }
    return done(cli, ans, "%s (%s) is now %s of project %s.", str(ans, "email"), str(ans, "id"),
                str(ans, "role"), project_opt(cli));
}

int
tg_cli_cmd_members_remove(struct tg_cli *cli)
{
    char *id = user_id_of(cli, cli->args->pos[0]);
    if (id == NULL) {
        return 1;
    }
    int rc = delete_and_say(cli, tg_cli_path("projects/%s/users/%s", project_opt(cli), id),
                            "Removed %s from project %s.", cli->args->pos[0], project_opt(cli));
    free(id);
    return rc;
}

/* ---- users ----------------------------------------------------------------------------------- */

int
tg_cli_cmd_users_list(struct tg_cli *cli)
{
    return tg_cli_show_list(cli, "/v1/organization/users", tg_cli_users_table);
}

int
tg_cli_cmd_users_get(struct tg_cli *cli)
{
    char *id = user_id_of(cli, cli->args->pos[0]);
    if (id == NULL) {
        return 1;
    }
    char *path = tg_cli_path("users/%s", id);
    free(id);
    return show_one(cli, path);
}

int
tg_cli_cmd_users_set_role(struct tg_cli *cli)
{
    json_t *ans = NULL;
    char *id = user_id_of(cli, cli->args->pos[0]);
    if (id == NULL) {
        return 1;
    }
    char *path = tg_cli_path("users/%s", id);
    int rc = call(cli, "POST", path, json_pack("{s:s}", "role", cli->args->pos[1]), &ans);
    free(path);
    free(id);
    if (rc < 0) {
        return 1;
    }
    return done(cli, ans, "%s (%s) is now %s of the organization.", str(ans, "email"),
                str(ans, "id"), str(ans, "role"));
}

int
tg_cli_cmd_users_delete(struct tg_cli *cli)
{
    char *id = user_id_of(cli, cli->args->pos[0]);
    if (id == NULL) {
        return 1;
    }
    int rc = delete_and_say(cli, tg_cli_path("users/%s", id),
                            "Removed user %s; their admin keys are revoked.", cli->args->pos[0]);
    free(id);
    return rc;
}

/* ---- invites --------------------------------------------------------------------------------- */

int
tg_cli_cmd_invites_create(struct tg_cli *cli)
{
    const struct tg_cli_args *a = cli->args;
    const char *days = a->opt[TG_CLI_OPT_EXPIRES];
    char err[300];
    json_t *ans = NULL;
    json_t *body = json_pack("{s:s,s:s}", "email", a->pos[0], "role", a->opt[TG_CLI_OPT_ROLE]);
    if (a->opt[TG_CLI_OPT_PROJECTS] != NULL) {
        json_t *projects = NULL;
        if (tg_cli_invite_projects(a->opt[TG_CLI_OPT_PROJECTS], &projects, err, sizeof(err)) < 0) {
            json_decref(body);
            return usage_error(cli, err);
        }
        json_object_set_new(body, "projects", projects);
    }
    if (days != NULL) {
        char *end = NULL;
        long n = strtol(days, &end, 10);
        if (end == days || *end != '\0' || n < 1 || n > 1000) {
            json_decref(body);
            return usage_error(cli, "--expires-in-days takes a number of days");
        }
        json_object_set_new(body, "expires_in_days", json_integer(n));
    }
    if (call(cli, "POST", "/v1/organization/invites", body, &ans) < 0) {
        return 1;
    }
    const char *token = tg_json_str(ans, "token");
    if (token == NULL) {
        tg_cli_fail(cli, "the API's answer has no invite token");
        json_decref(ans);
        return 1;
    }
    char expires[32];
    tg_cli_time_format(tg_json_int(ans, "expires_at", 0), true, expires);
    char *what = tg_xasprintf("Invited %s as %s (%s); the invite expires %s UTC.\n"
                              "Give them this one-time token: they run "
                              "`tollgate invites accept TOKEN` (no admin key needed).",
                              str(ans, "email"), str(ans, "role"), str(ans, "id"), expires);
    tg_cli_print_secret(cli, ans, token, what);
    free(what);
    json_decref(ans);
    return 0;
}

int
tg_cli_cmd_invites_list(struct tg_cli *cli)
{
    return tg_cli_show_list(cli, "/v1/organization/invites", tg_cli_invites_table);
}

int
tg_cli_cmd_invites_get(struct tg_cli *cli)
{
    return show_one(cli, tg_cli_path("invites/%s", cli->args->pos[0]));
}

int
tg_cli_cmd_invites_delete(struct tg_cli *cli)
{
    return delete_and_say(cli, tg_cli_path("invites/%s", cli->args->pos[0]),
                          "Deleted invite %s; its token no longer works.", cli->args->pos[0]);
}

int
tg_cli_cmd_invites_accept(struct tg_cli *cli)
{
    const struct tg_cli_args *a = cli->args;
    json_t *ans = NULL;
    json_t *body = json_pack("{s:s}", "token", a->pos[0]);
    if (a->opt[TG_CLI_OPT_NAME] != NULL) {
        json_object_set_new(body, "name", json_string(a->opt[TG_CLI_OPT_NAME]));
    }
    if (call(cli, "POST", "/v1/organization/invites/accept", body, &ans) < 0) {
        return 1;
    }
    const json_t *key = json_object_get(ans, "admin_api_key");
    const char *value = tg_json_str(key, "value");
    if (value == NULL) {
        tg_cli_fail(cli, "the API's answer has no admin key");
        json_decref(ans);
        return 1;
    }
    char *what = tg_xasprintf("Welcome, %s <%s>: you are user %s, %s of the organization.\n"
                              "That is your admin key %s: use it with --key or "
                              "TOLLGATE_ADMIN_KEY.",
                              str(ans, "name"), str(ans, "email"), str(ans, "id"), str(ans, "role"),
                              str(key, "id"));
    tg_cli_print_secret(cli, ans, value, what);
    free(what);
    json_decref(ans);
    return 0;
}

/* ---- admin keys ------------------------------------------------------------------------------ */

int
tg_cli_cmd_admin_keys_create(struct tg_cli *cli)
{
    json_t *ans = NULL;
    json_t *body = json_pack("{s:s}", "name", cli->args->opt[TG_CLI_OPT_NAME]);
    if (call(cli, "POST", "/v1/organization/admin_api_keys", body, &ans) < 0) {
        return 1;
    }
    const char *value = tg_json_str(ans, "value");
    if (value == NULL) {
        tg_cli_fail(cli, "the API's answer has no key value");
        json_decref(ans);
        return 1;
    }
    char *what = tg_xasprintf("Created admin key %s (\"%s\", role %s).", str(ans, "id"),
                              str(ans, "name"), str(json_object_get(ans, "owner"), "role"));
    tg_cli_print_secret(cli, ans, value, what);
    free(what);
    json_decref(ans);
    return 0;
}

int
tg_cli_cmd_admin_keys_list(struct tg_cli *cli)
{
    return tg_cli_show_list(cli, "/v1/organization/admin_api_keys", tg_cli_admin_keys_table);
}

int
tg_cli_cmd_admin_keys_get(struct tg_cli *cli)
{
    return show_one(cli, tg_cli_path("admin_api_keys/%s", cli->args->pos[0]));
}

int
tg_cli_cmd_admin_keys_revoke(struct tg_cli *cli)
{
    return delete_and_say(cli, tg_cli_path("admin_api_keys/%s", cli->args->pos[0]),
                          "Revoked admin key %s.", cli->args->pos[0]);
}

/* ---- service accounts ------------------------------------------------------------------------ */

int
tg_cli_cmd_svc_list(struct tg_cli *cli)
{
    char *path = tg_cli_path("projects/%s/service_accounts", project_opt(cli));
    int rc = tg_cli_show_list(cli, path, tg_cli_service_accounts_table);
    free(path);
    return rc;
}

int
tg_cli_cmd_svc_create(struct tg_cli *cli)
{
    json_t *ans = NULL;
    char *path = tg_cli_path("projects/%s/service_accounts", project_opt(cli));
    int rc = call(cli, "POST", path, json_pack("{s:s}", "name", cli->args->pos[0]), &ans);
    free(path);
    if (rc < 0) {
        return 1;
    }
    const json_t *key = json_object_get(ans, "api_key");
    const char *value = tg_json_str(key, "value");
    if (value == NULL) {
        tg_cli_fail(cli, "the API's answer has no key for the service account");
        json_decref(ans);
        return 1;
    }
    char *what = tg_xasprintf("Created service account %s (%s) in project %s, with key %s.",
                              str(ans, "name"), str(ans, "id"), project_opt(cli), str(key, "id"));
    tg_cli_print_secret(cli, ans, value, what);
    free(what);
    json_decref(ans);
    return 0;
}

int
tg_cli_cmd_svc_get(struct tg_cli *cli)
{
    return show_one(
        cli, tg_cli_path("projects/%s/service_accounts/%s", project_opt(cli), cli->args->pos[0]));
}

int
tg_cli_cmd_svc_rename(struct tg_cli *cli)
{
    json_t *ans = NULL;
    char *path =
        tg_cli_path("projects/%s/service_accounts/%s", project_opt(cli), cli->args->pos[0]);
    int rc = call(cli, "POST", path, json_pack("{s:s}", "name", cli->args->pos[1]), &ans);
    free(path);
    if (rc < 0) {
        return 1;
    }
    return done(cli, ans, "Renamed service account %s to %s.", str(ans, "id"), str(ans, "name"));
}

int
tg_cli_cmd_svc_delete(struct tg_cli *cli)
{
    return delete_and_say(
        cli, tg_cli_path("projects/%s/service_accounts/%s", project_opt(cli), cli->args->pos[0]),
        "Deleted service account %s; its keys are revoked.", cli->args->pos[0]);
}

int
tg_cli_cmd_svc_key_create(struct tg_cli *cli)
{
    json_t *ans = NULL;
    json_t *body = json_object();
    if (cli->args->opt[TG_CLI_OPT_NAME] != NULL) {
        json_object_set_new(body, "name", json_string(cli->args->opt[TG_CLI_OPT_NAME]));
    }
    char *path = tg_cli_path("projects/%s/service_accounts/%s/api_keys", project_opt(cli),
                             cli->args->pos[0]);
    int rc = call(cli, "POST", path, body, &ans);
    free(path);
    if (rc < 0) {
        return 1;
    }
    const char *value = tg_json_str(ans, "value");
    if (value == NULL) {
        tg_cli_fail(cli, "the API's answer has no key value");
        json_decref(ans);
        return 1;
    }
    char *what = tg_xasprintf("Created key %s (\"%s\") for service account %s.", str(ans, "id"),
                              str(ans, "name"), cli->args->pos[0]);
    tg_cli_print_secret(cli, ans, value, what);
    free(what);
    json_decref(ans);
    return 0;
}

/* ---- rate limits ---------------------------------------------------------------------------- */

int
tg_cli_cmd_rate_limits_list(struct tg_cli *cli)
{
    char err[160];
    char *path = tg_cli_level_path(cli->args, "rate_limits", NULL, err, sizeof(err));
    if (path == NULL) {
        return usage_error(cli, err);
    }
    int rc = tg_cli_show_list(cli, path, tg_cli_rate_limits_table);
    free(path);
    return rc;
}

int
tg_cli_cmd_rate_limits_set(struct tg_cli *cli)
{
    char err[160];
    json_t *body = NULL;
    json_t *ans = NULL;
    if (tg_cli_rate_limits_body(cli->args, &body, err, sizeof(err)) < 0) {
        return usage_error(cli, err);
    }
    /* The API names a level's limit for a model "rl-<model>" (OpenAI's id form), and the limit
     * on every request of the level "rl-all-models". */
    const char *model = cli->args->opt[TG_CLI_OPT_MODEL];
    bool is_all = strcmp(model, "all") == 0 || strcmp(model, "*") == 0;
    char *id = is_all ? tg_xstrdup("rl-all-models") : tg_xasprintf("rl-%s", model);
    char *path = tg_cli_level_path(cli->args, "rate_limits", id, err, sizeof(err));
    free(id);
    if (path == NULL) {
        json_decref(body);
        return usage_error(cli, err);
    }
    int rc = call(cli, "POST", path, body, &ans);
    free(path);
    if (rc < 0) {
        return 1;
    }
    if (cli->is_json) {
        tg_cli_json_print(cli, ans);
        json_decref(ans);
        return 0;
    }
    /* The changed limit as the one row of the list's table. */
    json_t *list = json_pack("{s:[o]}", "data", ans);
    rc = tg_cli_print(cli, list, tg_cli_rate_limits_table);
    json_decref(list);
    return rc;
}
