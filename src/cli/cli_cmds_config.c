/*
 * cli_cmds_config.c: the commands for the audit log (list, verify), config history (history,
 * diff, rollback) and the declarative organization file (export, apply): rows of the command
 * table in cli.c.
 *
 * `audit verify` exits 1 when the API reports a broken hash chain, so scripts and CI can
 * rely on its exit code. `export` writes the API's YAML to stdout byte for byte (it is not
 * JSON, so --json does not change it); `apply` sends the file as {"yaml": text} and prints
 * the changes the API reports, also for --dry-run, and exits 0 whether or not there were any.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"

#define TG_CLI_DEFAULT_LIMIT 20
#define TG_CLI_MAX_FILE_BYTES (16u << 20)

/* ---- audit log ------------------------------------------------------------------------------ */

/* Fetches at most limit items of path's list and prints them; a note on stderr when the API
 * had more. */
static int
show_recent(struct tg_cli *cli, const char *path, size_t limit, tg_cli_table_fn fn)
{
    json_t *list = NULL;
    if (tg_cli_list_fetch_max(cli, path, limit, &list) < 0) {
        return 1;
    }
    int rc = tg_cli_print(cli, list, fn);
    if (rc == 0 && !cli->is_json && json_is_true(json_object_get(list, "has_more"))) {
        fprintf(cli->err, "(the %zu newest shown; --limit N shows more, --limit 0 all)\n", limit);
    }
    json_decref(list);
    return rc;
}

int
tg_cli_cmd_audit_list(struct tg_cli *cli)
{
    struct tg_buf path;
    char err[300];
    size_t limit;
    int rc = 2;
    tg_buf_init(&path, 0);
    if (tg_cli_limit_parse(cli->args, TG_CLI_DEFAULT_LIMIT, &limit, err, sizeof(err)) < 0 ||
        tg_cli_audit_query_path(cli->args, &path, err, sizeof(err)) < 0) {
        tg_cli_fail(cli, "%s", err);
        goto out;
    }
    rc = show_recent(cli, path.data, limit, tg_cli_audit_table);
out:
    tg_buf_deinit(&path);
    return rc;
}

int
tg_cli_cmd_audit_verify(struct tg_cli *cli)
{
    json_t *ans = NULL;
    if (tg_cli_request(cli, "GET", "/v1/organization/audit_logs/verify", NULL, &ans) < 0) {
        return 1;
    }
    const json_t *valid = json_object_get(ans, "valid");
    int rc = 0;
    if (cli->is_json) {
        tg_cli_json_print(cli, ans);
    }
    if (!json_is_boolean(valid)) {
        tg_cli_fail(cli, "the API's answer does not say whether the chain is valid");
        rc = 1;
    } else if (!json_is_true(valid)) {
        tg_cli_fail(cli, "the audit log's hash chain is broken at entry %lld: %s",
                    (long long)tg_json_int(ans, "first_invalid_seq", 0),
                    tg_json_str(ans, "reason") ? tg_json_str(ans, "reason") : "no reason given");
        rc = 1;
    } else if (!cli->is_json && tg_json_int(ans, "entries", 0) == 0) {
        fprintf(cli->out, "The audit log is empty.\n");
    } else if (!cli->is_json) {
        const char *hash = tg_json_str(ans, "head_hash");
        fprintf(cli->out,
                "The audit log is intact: %lld entries, hash chain verified.\n"
                "Newest entry: %lld, hash %s (keep it elsewhere to detect the removal of the "
                "newest entries).\n",
                (long long)tg_json_int(ans, "entries", 0),
                (long long)tg_json_int(ans, "head_seq", 0), hash ? hash : "?");
    }
    json_decref(ans);
    return rc;
}

/* ---- config history ------------------------------------------------------------------------- */

/* True when s is a version number: digits, not starting with 0, at most 18 of them. */
static bool
is_version(const char *s)
{
    size_t n = strspn(s, "0123456789");
    return n > 0 && n <= 18 && s[n] == '\0' && s[0] != '0';
}

int
tg_cli_cmd_history(struct tg_cli *cli)
{
    const char *project = cli->args->opt[TG_CLI_OPT_PROJECT];
    char err[300];
    size_t limit;
    if (tg_cli_limit_parse(cli->args, TG_CLI_DEFAULT_LIMIT, &limit, err, sizeof(err)) < 0) {
        tg_cli_fail(cli, "%s", err);
        return 2;
    }
    /* The per-project list is open to the project's members, the org-wide one to owners. */
    char *path = project != NULL ? tg_cli_path("projects/%s/config_versions", project)
                                 : tg_cli_path("config_versions");
    int rc = show_recent(cli, path, limit, tg_cli_versions_table);
    free(path);
    return rc;
}

int
tg_cli_cmd_diff(struct tg_cli *cli)
{
    const char *from = cli->args->pos[0];
    const char *to = cli->args->pos[1];
    if (!is_version(from) || !is_version(to)) {
        tg_cli_fail(cli, "versions are numbers (see `tollgate history`), not '%s'",
                    is_version(from) ? to : from);
        return 2;
    }
    char *path = tg_cli_path("config_versions/diff?from=%s&to=%s", from, to);
    int rc = tg_cli_send(cli, "GET", path, NULL, tg_cli_diff_table, NULL);
    free(path);
    return rc;
}

int
tg_cli_cmd_rollback(struct tg_cli *cli)
{
    const char *n = cli->args->pos[0];
    json_t *ans = NULL;
    if (!is_version(n)) {
        tg_cli_fail(cli, "versions are numbers (see `tollgate history`), not '%s'", n);
        return 2;
    }
    char *path = tg_cli_path("config_versions/%s/rollback", n);
    int rc = tg_cli_request(cli, "POST", path, "{}", &ans);
    free(path);
    if (rc < 0) {
        return 1;
    }
    if (cli->is_json) {
        tg_cli_json_print(cli, ans);
    } else {
        const char *name = tg_json_str(ans, "project_name");
        fprintf(cli->out,
                "Restored the settings of version %s onto project %s: now version %lld.\n", n,
                name                             ? name
                : tg_json_str(ans, "project_id") ? tg_json_str(ans, "project_id")
                                                 : "?",
                (long long)tg_json_int(ans, "number", 0));
    }
    json_decref(ans);
    return 0;
}

/* ---- export and apply ----------------------------------------------------------------------- */

int
tg_cli_cmd_export(struct tg_cli *cli)
{
    struct tg_buf yaml;
    tg_buf_init(&yaml, 0);
    int rc = tg_cli_request_text(cli, "GET", "/v1/organization/export", NULL, &yaml);
    if (rc == 0) {
        fwrite(yaml.data ? yaml.data : "", 1, yaml.len, cli->out);
    }
    tg_buf_deinit(&yaml);
    return rc < 0 ? 1 : 0;
}

/* Reads the file named name ("-": standard input) into out, capped. 0 or -1 (reported). */
static int
read_file(struct tg_cli *cli, const char *name, struct tg_buf *out)
{
    bool is_stdin = strcmp(name, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(name, "rb");
    char chunk[8192];
    size_t n;
    int rc = 0;
    if (f == NULL) {
        tg_cli_fail(cli, "cannot read %s: %s", name, strerror(errno));
        return -1;
    }
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (tg_buf_append(out, chunk, n) < 0) {
            tg_cli_fail(cli, "%s is larger than %u MiB", name, TG_CLI_MAX_FILE_BYTES >> 20);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        tg_cli_fail(cli, "cannot read %s: %s", name, strerror(errno));
        rc = -1;
    }
    if (!is_stdin) {
        fclose(f);
    }
    return rc;
}

int
tg_cli_cmd_apply(struct tg_cli *cli)
{
    const char *name = cli->args->pos[0];
    bool is_dry = cli->args->opt[TG_CLI_OPT_DRY_RUN] != NULL;
    struct tg_buf file;
    json_t *ans = NULL;
    char *body = NULL;
    int rc = 1;
    tg_buf_init(&file, TG_CLI_MAX_FILE_BYTES);
    if (read_file(cli, name, &file) < 0) {
        goto out;
    }
    json_t *text = json_stringn(file.data ? file.data : "", file.len);
    if (text == NULL) {
        tg_cli_fail(cli, "%s is not UTF-8 text", name);
        goto out;
    }
    json_t *req = json_pack("{s:o}", "yaml", text);
    body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (body == NULL || tg_cli_request(cli, "POST",
                                       is_dry ? "/v1/organization/apply?dry_run=true"
                                              : "/v1/organization/apply?dry_run=false",
                                       body, &ans) < 0) {
        goto out;
    }
    const json_t *changes = json_object_get(ans, "changes");
    size_t n = json_array_size(changes);
    if (!cli->is_json && !json_is_array(changes)) {
        tg_cli_fail(cli, "the API's answer does not list the changes");
        goto out;
    }
    if (!cli->is_json && n == 0) {
        fprintf(cli->out, "No changes: the organization already matches %s.\n", name);
    } else if (!cli->is_json) {
        fprintf(cli->out,
                is_dry ? "Dry run, nothing was changed. Applying %s would make %zu change%s:\n"
                       : "Applied %s: %zu change%s.\n",
                name, n, n == 1 ? "" : "s");
    }
    rc = !cli->is_json && n == 0 ? 0 : tg_cli_print(cli, ans, tg_cli_apply_table);
out:
    free(body);
    json_decref(ans);
    tg_buf_deinit(&file);
    return rc;
}
