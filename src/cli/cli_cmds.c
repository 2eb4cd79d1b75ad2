/*
 * cli_cmds.c: the admin API commands (one function per row of the command table in cli.c).
 *
 * Each command builds its request from the parsed options, sends it with tg_cli_request (or
 * tg_cli_list_fetch for cursor lists), and prints either the JSON (--json) or a table made by
 * the pure functions of cli_fmt.c. Errors are printed where they are found; the function
 * returns the exit code. This file also holds the helpers the other command files share
 * (tg_cli_print, tg_cli_send, tg_cli_show_list, tg_cli_print_secret): cli_cmds_org.c has the
 * organization's people, projects and service accounts, cli_cmds_config.c the audit log,
 * config history, export and apply.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"

int
tg_cli_print(struct tg_cli *cli, const json_t *v, tg_cli_table_fn fn)
{
    if (cli->is_json) {
        tg_cli_json_print(cli, v);
        return 0;
    }
    struct tg_buf b;
    tg_buf_init(&b, 0);
    int rc = fn(v, &b);
    if (rc < 0) {
        tg_cli_fail(cli, "the API's answer does not have the expected shape");
    } else {
        fputs(b.data ? b.data : "", cli->out);
    }
    tg_buf_deinit(&b);
    return rc < 0 ? 1 : 0;
}

int
tg_cli_send(struct tg_cli *cli, const char *method, const char *path, json_t *body,
            tg_cli_table_fn fn, const char *done)
{
    json_t *ans = NULL;
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    int rc = 1;
    json_decref(body);
    if ((body != NULL && text == NULL) || tg_cli_request(cli, method, path, text, &ans) < 0) {
        goto out;
    }
    if (fn != NULL) {
        rc = tg_cli_print(cli, ans, fn);
    } else if (cli->is_json) {
        tg_cli_json_print(cli, ans);
        rc = 0;
    } else {
        fprintf(cli->out, "%s\n", done);
        rc = 0;
    }
out:
    free(text);
    json_decref(ans);
    return rc;
}

int
tg_cli_show_list(struct tg_cli *cli, const char *path, tg_cli_table_fn fn)
{
    json_t *list = NULL;
    if (tg_cli_list_fetch(cli, path, &list) < 0) {
        return 1;
    }
    int rc = tg_cli_print(cli, list, fn);
    json_decref(list);
    return rc;
}

void
tg_cli_print_secret(struct tg_cli *cli, const json_t *ans, const char *secret, const char *what)
{
    if (cli->is_json) {
        tg_cli_json_print(cli, ans);
    } else {
        fprintf(cli->out, "%s\n", secret);
    }
    fflush(cli->out);
    fprintf(cli->err, "%s\nStore it now: it is not shown again.\n", what);
}

/* "/v1/organization/projects/{project}/api_keys[/{key_id}]" */
static void
keys_path(struct tg_cli *cli, const char *key_id, struct tg_buf *out)
{
    tg_buf_append_str(out, "/v1/organization/projects/");
    tg_cli_url_escape(out, cli->args->opt[TG_CLI_OPT_PROJECT]);
    tg_buf_append_str(out, "/api_keys");
    if (key_id != NULL) {
        tg_buf_append_str(out, "/");
        tg_cli_url_escape(out, key_id);
    }
}

int
tg_cli_cmd_projects_list(struct tg_cli *cli)
{
    bool is_all = cli->args->opt[TG_CLI_OPT_ARCHIVED] != NULL;
    return tg_cli_show_list(cli,
                            is_all ? "/v1/organization/projects?include_archived=true"
                                   : "/v1/organization/projects",
                            tg_cli_projects_table);
}

int
tg_cli_cmd_keys_create(struct tg_cli *cli)
{
    struct tg_buf path;
    json_t *key = NULL;
    json_t *req = json_pack("{s:s}", "name", cli->args->opt[TG_CLI_OPT_NAME]);
    char *body = json_dumps(req, JSON_COMPACT);
    int rc = 1;
    tg_buf_init(&path, 0);
    keys_path(cli, NULL, &path);
    if (body == NULL || tg_cli_request(cli, "POST", path.data, body, &key) < 0) {
        goto out;
    }
    const char *value = tg_json_str(key, "value");
    if (value == NULL) {
        tg_cli_fail(cli, "the API's answer has no key value");
        goto out;
    }
    if (cli->is_json) {
        tg_cli_json_print(cli, key);
    } else {
        fprintf(cli->err, "Created key %s (\"%s\") in project %s:\n", tg_json_str(key, "id"),
                cli->args->opt[TG_CLI_OPT_NAME], cli->args->opt[TG_CLI_OPT_PROJECT]);
        fprintf(cli->out, "%s\n", value);
        fflush(cli->out);
    }
    fprintf(cli->err, "Store this key now: it is not shown again.\n");
    rc = 0;
out:
    tg_buf_deinit(&path);
    free(body);
    json_decref(req);
    json_decref(key);
    return rc;
}

int
tg_cli_cmd_keys_list(struct tg_cli *cli)
{
    struct tg_buf path;
    json_t *list = NULL;
    int rc = 1;
    tg_buf_init(&path, 0);
    keys_path(cli, NULL, &path);
    if (tg_cli_list_fetch(cli, path.data, &list) == 0) {
        rc = tg_cli_print(cli, list, tg_cli_keys_table);
    }
    json_decref(list);
    tg_buf_deinit(&path);
    return rc;
}

int
tg_cli_cmd_keys_get(struct tg_cli *cli)
{
    struct tg_buf path;
    tg_buf_init(&path, 0);
    keys_path(cli, cli->args->pos[0], &path);
    int rc = tg_cli_send(cli, "GET", path.data, NULL, tg_cli_object_table, NULL);
    tg_buf_deinit(&path);
    return rc;
}

int
tg_cli_cmd_keys_revoke(struct tg_cli *cli)
{
    struct tg_buf path;
    json_t *ans = NULL;
    const char *key_id = cli->args->pos[0];
    int rc = 1;
    tg_buf_init(&path, 0);
    keys_path(cli, key_id, &path);
    if (tg_cli_request(cli, "DELETE", path.data, NULL, &ans) < 0) {
        goto out;
    }
    if (cli->is_json) {
        tg_cli_json_print(cli, ans);
    } else if (!tg_json_bool(ans, "deleted", false)) {
        tg_cli_fail(cli, "the API did not confirm that key %s was revoked", key_id);
        goto out;
    } else {
        fprintf(cli->out, "Revoked key %s in project %s.\n", key_id,
                cli->args->opt[TG_CLI_OPT_PROJECT]);
    }
    rc = 0;
out:
    json_decref(ans);
    tg_buf_deinit(&path);
    return rc;
}

static void
usage_path(const void *q, const char *page, bool is_csv, struct tg_buf *out)
{
    tg_cli_usage_query_path(q, page, is_csv, out);
}

static int
usage_table(const json_t *page, const void *q, const json_t *projects, struct tg_buf *out)
{
    return tg_cli_usage_table(page, q, projects, out);
}

int
tg_cli_cmd_usage(struct tg_cli *cli)
{
    struct tg_cli_usage_query q;
    char err[200];
    if (tg_cli_usage_query_parse(cli->args, cli->now_s, &q, err, sizeof(err)) < 0) {
        tg_cli_fail(cli, "%s", err);
        return 2;
    }
    struct tg_cli_report r = {.what = "usage",
                              .q = &q,
                              .by_project = q.by_project,
                              .path = usage_path,
                              .table = usage_table};
    return tg_cli_report_run(cli, &r);
}
