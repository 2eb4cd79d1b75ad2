/*
 * cli_cache.c: `tollgate cache get` (a project's cache settings and the cache's counters) and
 * `tollgate cache invalidate` (remove cached answers by project, model, age, or all), one
 * admin API call each (admin_cache.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "core/err.h"
#include "core/json.h"

static int
cache_table(const json_t *v, struct tg_buf *out)
{
    const json_t *s = json_object_get(v, "settings");
    const json_t *st = json_object_get(v, "stats");
    if (!json_is_object(s) || !json_is_object(st)) {
        return TG_EPARSE;
    }
    const char *id = tg_json_str(v, "project_id");
    const char *backend = tg_json_str(s, "backend");
    return tg_buf_appendf(
        out,
        "project     %s\nenabled     %s\nbackend     %s\nttl         %lld s\n"
        "hits        %lld\nmisses      %lld\nstored      %lld\n"
        "evictions   %lld\nentries     %lld\nbytes       %lld of %lld\n",
        id != NULL ? id : "?", json_is_true(json_object_get(s, "enabled")) ? "yes" : "no",
        backend != NULL ? backend : "?", (long long)json_integer_value(json_object_get(s, "ttl_s")),
        (long long)json_integer_value(json_object_get(st, "hits")),
        (long long)json_integer_value(json_object_get(st, "misses")),
        (long long)json_integer_value(json_object_get(st, "puts")),
        (long long)json_integer_value(json_object_get(st, "evictions")),
        (long long)json_integer_value(json_object_get(st, "entries")),
        (long long)json_integer_value(json_object_get(st, "bytes")),
        (long long)json_integer_value(json_object_get(st, "max_bytes")));
}

static int
invalidation_table(const json_t *v, struct tg_buf *out)
{
    const json_t *n = json_object_get(v, "removed");
    if (!json_is_integer(n)) {
        return TG_EPARSE;
    }
    return tg_buf_appendf(out, "Removed %lld cached answer%s.\n", (long long)json_integer_value(n),
                          json_integer_value(n) == 1 ? "" : "s");
}

int
tg_cli_cmd_cache_get(struct tg_cli *cli)
{
    char *path = tg_cli_path("projects/%s/cache", cli->args->opt[TG_CLI_OPT_PROJECT]);
    int rc = tg_cli_send(cli, "GET", path, NULL, cache_table, NULL);
    free(path);
    return rc;
}

int
tg_cli_cmd_cache_invalidate(struct tg_cli *cli)
{
    const struct tg_cli_args *a = cli->args;
    json_t *body = json_object();
    if (a->opt[TG_CLI_OPT_PROJECT] != NULL) {
        json_object_set_new(body, "project_id", json_string(a->opt[TG_CLI_OPT_PROJECT]));
    }
    if (a->opt[TG_CLI_OPT_MODEL] != NULL) {
        json_object_set_new(body, "model", json_string(a->opt[TG_CLI_OPT_MODEL]));
    }
    if (a->opt[TG_CLI_OPT_OLDER_THAN] != NULL) {
        char *end = NULL;
        errno = 0;
        long long s = strtoll(a->opt[TG_CLI_OPT_OLDER_THAN], &end, 10);
        if (errno != 0 || end == a->opt[TG_CLI_OPT_OLDER_THAN] || *end != '\0' || s <= 0) {
            json_decref(body);
            tg_cli_fail(cli, "--older-than takes a positive number of seconds");
            return 2;
        }
        json_object_set_new(body, "older_than_s", json_integer(s));
    }
    if (a->opt[TG_CLI_OPT_ALL] != NULL) {
        json_object_set_new(body, "all", json_true());
    }
    if (json_object_size(body) == 0) {
        json_decref(body);
        tg_cli_fail(cli, "say what to remove: --project, --model, --older-than or --all");
        return 2;
    }
    return tg_cli_send(cli, "POST", "/v1/organization/cache/invalidate", body, invalidation_table,
                       NULL);
}
