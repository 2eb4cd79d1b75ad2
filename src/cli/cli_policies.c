/*
 * cli_policies.c: `tollgate policy get|set` (a project's or a project key's token policy) and
 * `tollgate aliases get|set` (a project's model aliases), one admin API call each.
 *
 * set takes the whole new object as one JSON argument (it replaces the stored one; '{}'
 * removes it), as the admin route does: the server checks it and names a bad member.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "core/err.h"
#include "core/json.h"

/* The member of the answer, indented, or "none" when empty. */
static int
member_table(const json_t *v, const char *member, struct tg_buf *out)
{
    const json_t *m = json_object_get(v, member);
    if (!json_is_object(m)) {
        return TG_EPARSE;
    }
    if (json_object_size(m) == 0) {
        return tg_buf_append_str(out, "none\n");
    }
    char *text = json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS);
    int rc = text != NULL ? tg_buf_append_str(out, text) : TG_ENOMEM;
    free(text);
    return rc < 0 ? rc : tg_buf_append_str(out, "\n");
}

static int
policy_table(const json_t *v, struct tg_buf *out)
{
    return member_table(v, "token_policy", out);
}

static int
aliases_table(const json_t *v, struct tg_buf *out)
{
    return member_table(v, "aliases", out);
}

static int
run(struct tg_cli *cli, const char *what, bool is_set, tg_cli_table_fn fn)
{
    char err[160];
    json_t *body = NULL;
    if (is_set) {
        json_error_t jerr;
        body = json_loads(cli->args->pos[0], 0, &jerr);
        if (!json_is_object(body)) {
            json_decref(body);
            tg_cli_fail(cli,
                        "expected a JSON object, e.g. '{\"max_tokens\": 1000}' ('{}' removes)");
            return 2;
        }
    }
    char *path = tg_cli_level_path(cli->args, what, NULL, err, sizeof(err));
    if (path == NULL) {
        json_decref(body);
        tg_cli_fail(cli, "%s", err);
        return 2;
    }
    int rc = tg_cli_send(cli, is_set ? "POST" : "GET", path, body, fn, NULL);
    free(path);
    return rc;
}

int
tg_cli_cmd_policy_get(struct tg_cli *cli)
{
    return run(cli, "token_policy", false, policy_table);
}

int
tg_cli_cmd_policy_set(struct tg_cli *cli)
{
    return run(cli, "token_policy", true, policy_table);
}

int
tg_cli_cmd_aliases_get(struct tg_cli *cli)
{
    return run(cli, "aliases", false, aliases_table);
}

int
tg_cli_cmd_aliases_set(struct tg_cli *cli)
{
    return run(cli, "aliases", true, aliases_table);
}
