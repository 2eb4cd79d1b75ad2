/*
 * cli_test.c: the command-line client.
 *
 * The pure parts (argument parsing against the tables, help, key and URL sources, dates,
 * usage queries, tables) are checked with literal inputs. The end-to-end tests run
 * tg_cli_main against a scripted HTTP server on a test thread (blocking sockets): it checks
 * each request line, the Authorization header and the body the CLI sent, answers with canned
 * JSON, and the test compares what the CLI printed (stdout and stderr captured with dup2).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_int.h"
#include "core/buf.h"
#include "core/err.h"
#include "policy/keys.h"

/* Placeholder keys: well-formed (prefix + 43 characters), obviously not real. */
#define ADMIN_KEY TG_KEY_PREFIX "PLACEHOLDERadminKEY000000000000000000000000"
#define NEW_KEY TG_KEY_PREFIX "PLACEHOLDERnewKEY00000000000000000000000000"
#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- argument parsing ---------------------------------------------------------------------- */

static void
args_options_before_and_after_the_command(void **state)
{
    char *argv[] = {"tollgate", "--url",     "http://gw:9", "keys",
                    "list",     "--project", "prod",        "--json"};
    struct tg_cli_args a;
    char err[200] = "";
    assert_int_equal(tg_cli_args_parse(ARGC(argv), argv, &a, err, sizeof(err)), 0);
    assert_non_null(a.cmd);
    assert_string_equal(a.cmd->name, "keys list");
    assert_ptr_equal(a.cmd->run, tg_cli_cmd_keys_list);
    assert_string_equal(a.opt[TG_CLI_OPT_URL], "http://gw:9");
    assert_string_equal(a.opt[TG_CLI_OPT_PROJECT], "prod");
    assert_string_equal(a.opt[TG_CLI_OPT_JSON], "");
    assert_null(a.opt[TG_CLI_OPT_KEY]);
    assert_int_equal(a.n_pos, 0);
}

static void
args_equals_form_short_help_and_double_dash(void **state)
{
    char *argv[] = {"tollgate", "keys", "revoke", "--project=staging", "--", "--odd-id"};
    struct tg_cli_args a;
    char err[200] = "";
    assert_int_equal(tg_cli_args_parse(ARGC(argv), argv, &a, err, sizeof(err)), 0);
    assert_string_equal(a.cmd->name, "keys revoke");
    assert_string_equal(a.opt[TG_CLI_OPT_PROJECT], "staging");
    assert_int_equal(a.n_pos, 1);
    assert_string_equal(a.pos[0], "--odd-id");

    /* --help skips the command's checks: the required --project is missing here. */
    char *help[] = {"tollgate", "keys", "create", "-h"};
    assert_int_equal(tg_cli_args_parse(ARGC(help), help, &a, err, sizeof(err)), 0);
    assert_string_equal(a.cmd->name, "keys create");
    assert_non_null(a.opt[TG_CLI_OPT_HELP]);

    /* A group without its command parses, with the group named. */
    char *group[] = {"tollgate", "keys"};
    assert_int_equal(tg_cli_args_parse(ARGC(group), group, &a, err, sizeof(err)), 0);
    assert_null(a.cmd);
    assert_string_equal(a.group, "keys");

    char *empty[] = {"tollgate"};
    assert_int_equal(tg_cli_args_parse(ARGC(empty), empty, &a, err, sizeof(err)), 0);
    assert_null(a.cmd);
    assert_null(a.group);
}

static void
args_errors_name_the_problem(void **state)
{
    static const struct {
        const char *argv[8];
        const char *want;
    } cases[] = {
        {{"tollgate", "projects", "list", "--bogus"}, "unknown option --bogus"},
        {{"tollgate", "projects", "list", "-x"}, "unknown option -x"},
        {{"tollgate", "keys", "list", "--project"}, "--project needs a value (NAME|ID)"},
        {{"tollgate", "keys", "list"}, "'keys list' needs --project NAME|ID"},
        {{"tollgate", "keys", "create", "--project", "p"}, "'keys create' needs --name NAME"},
        {{"tollgate", "projects", "list", "--name", "x"}, "'projects list' does not take --name"},
        {{"tollgate", "keys", "revoke", "--project", "p"}, "'keys revoke' needs KEY_ID"},
        {{"tollgate", "keys", "revoke", "--project", "p", "a", "b"},
         "'keys revoke' does not take the argument 'b'"},
        {{"tollgate", "projects", "list", "extra"},
         "'projects list' does not take the argument 'extra'"},
        {{"tollgate", "frobnicate"}, "unknown command 'frobnicate'"},
        {{"tollgate", "keys", "rotate"}, "unknown command 'keys rotate'"},
        {{"tollgate", "usage", "--json=yes"}, "--json takes no value"},
        {{"tollgate", "usage", "--model="}, "--model needs a value (MODEL)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[8];
        int argc = 0;
        while (argc < 8 && cases[i].argv[argc] != NULL) {
            argv[argc] = (char *)cases[i].argv[argc];
            argc++;
        }
        struct tg_cli_args a;
        char err[200] = "";
        assert_int_equal(tg_cli_args_parse(argc, argv, &a, err, sizeof(err)), TG_EINVAL);
        assert_string_equal(err, cases[i].want);
    }
}

static void
args_organization_commands(void **state)
{
    struct tg_cli_args a;
    char err[200] = "";
    char *models[] = {"tollgate",    "projects",   "set-models", "dev",
                      "gpt-4o-mini", "mock-small", "--json"};
    assert_int_equal(tg_cli_args_parse(ARGC(models), models, &a, err, sizeof(err)), 0);
    assert_ptr_equal(a.cmd->run, tg_cli_cmd_projects_set_models);
    assert_int_equal(a.n_pos, 3);
    assert_string_equal(a.pos[0], "dev");
    assert_string_equal(a.pos[2], "mock-small");

    char *audit[] = {"tollgate", "audit", "list",    "--type",    "project.updated",
                     "--limit",  "5",     "--since", "2026-01-01"};
    assert_int_equal(tg_cli_args_parse(ARGC(audit), audit, &a, err, sizeof(err)), 0);
    assert_ptr_equal(a.cmd->run, tg_cli_cmd_audit_list);
    assert_string_equal(a.opt[TG_CLI_OPT_TYPE], "project.updated");
    assert_string_equal(a.opt[TG_CLI_OPT_LIMIT], "5");
    assert_string_equal(a.opt[TG_CLI_OPT_SINCE], "2026-01-01");

    /* One-word commands take positional arguments after them. */
    char *diff[] = {"tollgate", "diff", "3", "7"};
    assert_int_equal(tg_cli_args_parse(ARGC(diff), diff, &a, err, sizeof(err)), 0);
    assert_ptr_equal(a.cmd->run, tg_cli_cmd_diff);
    assert_int_equal(a.n_pos, 2);

    char *role[] = {"tollgate",        "members", "set-role",
                    "ada@example.com", "owner",   "--project=prod"};
    assert_int_equal(tg_cli_args_parse(ARGC(role), role, &a, err, sizeof(err)), 0);
    assert_ptr_equal(a.cmd->run, tg_cli_cmd_members_set_role);
    assert_string_equal(a.pos[1], "owner");

    char *apply[] = {"tollgate", "apply", "--dry-run", "org.yaml"};
    assert_int_equal(tg_cli_args_parse(ARGC(apply), apply, &a, err, sizeof(err)), 0);
    assert_ptr_equal(a.cmd->run, tg_cli_cmd_apply);
    assert_non_null(a.opt[TG_CLI_OPT_DRY_RUN]);
    assert_string_equal(a.pos[0], "org.yaml");

    char *svc[] = {"tollgate", "service-accounts", "key-create", "svc_acct_1", "--project",
                   "p",        "--name",           "second"};
    assert_int_equal(tg_cli_args_parse(ARGC(svc), svc, &a, err, sizeof(err)), 0);
    assert_ptr_equal(a.cmd->run, tg_cli_cmd_svc_key_create);

    /* Every command of the table parses with its required options and minimum arguments. */
    for (size_t i = 0; i < tg_cli_n_cmds; i++) {
        const struct tg_cli_cmd *c = &tg_cli_cmds[i];
        char *argv[40];
        int argc = 0;
        char words[64];
        snprintf(words, sizeof(words), "%s", c->name);
        argv[argc++] = "tollgate";
        argv[argc++] = strtok(words, " ");
        char *second = strtok(NULL, " ");
        if (second != NULL) {
            argv[argc++] = second;
        }
        for (int o = 0; o < TG_CLI_N_OPTS; o++) {
            if (c->required & (UINT64_C(1) << o)) {
                static char opt[TG_CLI_N_OPTS][40];
                snprintf(opt[o], sizeof(opt[o]), "--%s=x", tg_cli_opts[o].name);
                argv[argc++] = opt[o];
            }
        }
        for (unsigned n = 0; n < c->min_args; n++) {
            argv[argc++] = "1";
        }
        if (tg_cli_args_parse(argc, argv, &a, err, sizeof(err)) != 0 || a.cmd != c) {
            fail_msg("'%s' does not parse: %s", c->name, err);
        }
    }
}

static void
args_organization_errors(void **state)
{
    static const struct {
        const char *argv[8];
        const char *want;
    } cases[] = {
        {{"tollgate", "invites", "create", "a@b.c"}, "'invites create' needs --role ROLE"},
        {{"tollgate", "invites", "accept"}, "'invites accept' needs TOKEN"},
        {{"tollgate", "diff", "1"}, "'diff' needs A B"},
        {{"tollgate", "rollback", "1", "2"}, "'rollback' does not take the argument '2'"},
        {{"tollgate", "history", "--name", "x"}, "'history' does not take --name"},
        {{"tollgate", "members", "list"}, "'members list' needs --project NAME|ID"},
        {{"tollgate", "apply", "f", "--dry-run=yes"}, "--dry-run takes no value"},
        {{"tollgate", "audit", "frob"}, "unknown command 'audit frob'"},
        {{"tollgate", "projects", "rename", "a"}, "'projects rename' needs PROJECT NEW_NAME"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[8];
        int argc = 0;
        while (argc < 8 && cases[i].argv[argc] != NULL) {
            argv[argc] = (char *)cases[i].argv[argc];
            argc++;
        }
        struct tg_cli_args a;
        char err[200] = "";
        assert_int_equal(tg_cli_args_parse(argc, argv, &a, err, sizeof(err)), TG_EINVAL);
        assert_string_equal(err, cases[i].want);
    }
}

/* ---- help ---------------------------------------------------------------------------------- */

static void
help_lists_every_command_and_option(void **state)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_cli_help_write(&b, NULL, NULL);
    assert_true(tg_cli_n_cmds >= 7);
    for (size_t i = 0; i < tg_cli_n_cmds; i++) {
        char line[200];
        snprintf(line, sizeof(line), "\n  %s", tg_cli_cmds[i].name);
        assert_non_null(strstr(b.data, line));
        assert_non_null(strstr(b.data, tg_cli_cmds[i].summary));
    }
    for (int i = 0; i < TG_CLI_N_OPTS; i++) {
        char opt[64];
        snprintf(opt, sizeof(opt), "--%s", tg_cli_opts[i].name);
        bool is_listed = strstr(b.data, opt) != NULL;
        /* The overview shows the global options; the others appear in their commands. */
        assert_true(is_listed || !tg_cli_opts[i].is_global);
        for (size_t c = 0; c < tg_cli_n_cmds; c++) {
            if (!(tg_cli_cmds[c].opts & (UINT64_C(1) << i))) {
                continue;
            }
            struct tg_buf cb;
            tg_buf_init(&cb, 0);
            tg_cli_help_write(&cb, &tg_cli_cmds[c], NULL);
            assert_non_null(strstr(cb.data, opt));
            assert_non_null(strstr(cb.data, tg_cli_opts[i].help));
            tg_buf_deinit(&cb);
        }
    }
    tg_buf_deinit(&b);

    tg_buf_init(&b, 0);
    tg_cli_help_write(&b, tg_cli_cmd_find("keys revoke"), NULL);
    assert_non_null(strstr(b.data, "Usage: tollgate keys revoke --project NAME|ID KEY_ID\n"));
    assert_non_null(strstr(b.data, "project, by name or id (required)"));
    assert_non_null(strstr(b.data, "--url URL"));
    tg_buf_deinit(&b);

    tg_buf_init(&b, 0);
    tg_cli_help_write(&b, NULL, "keys");
    assert_non_null(strstr(b.data, "keys create"));
    assert_non_null(strstr(b.data, "keys revoke"));
    assert_null(strstr(b.data, "projects list"));
    tg_buf_deinit(&b);
}

static void
assert_lines_fit(const char *text, size_t cols)
{
    const char *line = text;
    while (*line != '\0') {
        size_t len = strcspn(line, "\n");
        if (len > cols) {
            fail_msg("line longer than %zu columns: %.*s", cols, (int)len, line);
        }
        line += len + (line[len] == '\n');
    }
}

static void
help_lines_fit_100_columns(void **state)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_cli_help_write(&b, NULL, NULL);
    tg_cli_help_write(&b, NULL, "keys");
    for (size_t i = 0; i < tg_cli_n_cmds; i++) {
        tg_cli_help_write(&b, &tg_cli_cmds[i], NULL);
    }
    assert_lines_fit(b.data, 100);
    tg_buf_deinit(&b);
}

static void
help_markdown_is_docs_cli_md(void **state)
{
    /* TG_TEST_DATA is SOURCE/tests/unit/data (under ctest), __FILE__ is
     * SOURCE/tests/unit/cli/cli_test.c: either way docs/cli.md is three levels up. */
    const char *data = getenv("TG_TEST_DATA");
    char root[4096];
    snprintf(root, sizeof(root), "%s", data ? data : __FILE__);
    if (data == NULL) {
        *strrchr(root, '/') = '\0';
    }
    for (int i = 0; i < 3; i++) {
        char *slash = strrchr(root, '/');
        assert_non_null(slash);
        *slash = '\0';
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s/docs/cli.md", root);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    struct tg_buf file, gen;
    tg_buf_init(&file, 0);
    tg_buf_init(&gen, 0);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        tg_buf_append(&file, chunk, n);
    }
    fclose(f);
    tg_cli_help_markdown(&gen);
    if (strcmp(file.data, gen.data) != 0) {
        fail_msg("docs/cli.md is stale: regenerate it with `tollgate help --markdown`");
    }
    for (size_t i = 0; i < tg_cli_n_cmds; i++) {
        char h[100];
        snprintf(h, sizeof(h), "### tollgate %s\n", tg_cli_cmds[i].name);
        assert_non_null(strstr(gen.data, h));
    }
    for (int i = 0; i < TG_CLI_N_OPTS; i++) {
        char opt[64];
        snprintf(opt, sizeof(opt), "`--%s", tg_cli_opts[i].name);
        bool found = strstr(gen.data, opt) != NULL;
        snprintf(opt, sizeof(opt), ", --%s", tg_cli_opts[i].name);
        assert_true(found || strstr(gen.data, opt) != NULL);
    }
    tg_buf_deinit(&file);
    tg_buf_deinit(&gen);
}

/* ---- key and URL sources -------------------------------------------------------------------- */

/* Makes a fresh directory under /tmp; with key != NULL, writes DIR/admin.key. */
static void
make_data_dir(char *dir, size_t cap, const char *key)
{
    snprintf(dir, cap, "/tmp/tg-cli-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    if (key != NULL) {
        char path[300];
        snprintf(path, sizeof(path), "%s/admin.key", dir);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(key, f);
        fclose(f);
    }
}

static void
remove_data_dir(const char *dir)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/admin.key", dir);
    unlink(path);
    rmdir(dir);
}

static void
key_sources_in_order(void **state)
{
    char dir_opt[64], dir_env[64];
    make_data_dir(dir_opt, sizeof(dir_opt), "  tg-fromOptDir\nsecond line\n");
    make_data_dir(dir_env, sizeof(dir_env), "tg-fromEnvDir\n");
    struct tg_buf err;
    tg_buf_init(&err, 0);
    char *key = NULL;

    struct tg_cli_key_sources all = {"tg-opt", "tg-env", dir_opt, dir_env};
    assert_int_equal(tg_cli_key_resolve(&all, &key, &err), 0);
    assert_string_equal(key, "tg-opt");
    free(key);

    struct tg_cli_key_sources no_opt = {"", "tg-env", dir_opt, dir_env};
    assert_int_equal(tg_cli_key_resolve(&no_opt, &key, &err), 0);
    assert_string_equal(key, "tg-env");
    free(key);

    struct tg_cli_key_sources files = {NULL, NULL, dir_opt, dir_env};
    assert_int_equal(tg_cli_key_resolve(&files, &key, &err), 0);
    assert_string_equal(key, "tg-fromOptDir"); /* first line, trimmed */
    free(key);

    struct tg_cli_key_sources env_dir = {NULL, "", NULL, dir_env};
    assert_int_equal(tg_cli_key_resolve(&env_dir, &key, &err), 0);
    assert_string_equal(key, "tg-fromEnvDir");
    free(key);
    assert_int_equal(err.len, 0);

    tg_buf_deinit(&err);
    remove_data_dir(dir_opt);
    remove_data_dir(dir_env);
}

static void
key_missing_names_every_source(void **state)
{
    char dir[64], empty_dir[64];
    make_data_dir(dir, sizeof(dir), NULL);
    make_data_dir(empty_dir, sizeof(empty_dir), "\n");
    struct tg_buf err;
    char *key = (char *)"untouched";
    char want[300];

    tg_buf_init(&err, 0);
    struct tg_cli_key_sources opt_dir = {NULL, NULL, dir, "/elsewhere"};
    assert_int_equal(tg_cli_key_resolve(&opt_dir, &key, &err), TG_ENOTFOUND);
    assert_null(key);
    assert_non_null(strstr(err.data, "--key (not given)"));
    assert_non_null(strstr(err.data, "$TOLLGATE_ADMIN_KEY (not set)"));
    snprintf(want, sizeof(want), "%s/admin.key (--data-dir: No such file or directory)", dir);
    assert_non_null(strstr(err.data, want));
    tg_buf_deinit(&err);

    tg_buf_init(&err, 0);
    struct tg_cli_key_sources env_dir = {NULL, NULL, NULL, empty_dir};
    assert_int_equal(tg_cli_key_resolve(&env_dir, &key, &err), TG_ENOTFOUND);
    snprintf(want, sizeof(want), "%s/admin.key ($TOLLGATE_DATA_DIR: the file is empty)", empty_dir);
    assert_non_null(strstr(err.data, want));
    tg_buf_deinit(&err);

    tg_buf_init(&err, 0);
    struct tg_cli_key_sources none = {NULL, NULL, NULL, NULL};
    if (access("./tollgate-data/admin.key", F_OK) != 0) {
        assert_int_equal(tg_cli_key_resolve(&none, &key, &err), TG_ENOTFOUND);
        assert_non_null(strstr(err.data, "./tollgate-data/admin.key (the default data dir"));
    }
    tg_buf_deinit(&err);
    remove_data_dir(dir);
    remove_data_dir(empty_dir);
}

static void
url_sources_and_normalization(void **state)
{
    static const struct {
        const char *opt, *env, *want;
    } cases[] = {
        {NULL, NULL, "http://127.0.0.1:8080"},
        {"", "", "http://127.0.0.1:8080"},
        {NULL, "http://env:1", "http://env:1"},
        {"http://opt:2/", "http://env:1", "http://opt:2"},
        {"https://gw.example/v1/", NULL, "https://gw.example"},
        {"https://gw.example/base/v1", NULL, "https://gw.example/base"},
        {"https://gw.example/v10", NULL, "https://gw.example/v10"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *u = tg_cli_url_resolve(cases[i].opt, cases[i].env);
        assert_string_equal(u, cases[i].want);
        free(u);
    }
}

/* ---- time --------------------------------------------------------------------------------------
 */

static void
time_parse_dates_and_unix_seconds(void **state)
{
    int64_t t = 0;
    assert_int_equal(tg_cli_time_parse("2026-11-01", false, &t), 0);
    assert_int_equal(t, 1793491200);
    assert_int_equal(tg_cli_time_parse("2026-11-01", true, &t), 0);
    assert_int_equal(t, 1793577600); /* a bare end date includes the day */
    assert_int_equal(tg_cli_time_parse("1970-01-01", false, &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(tg_cli_time_parse("2024-02-29T13:05:07", false, &t), 0);
    assert_int_equal(t, 1709211907);
    assert_int_equal(tg_cli_time_parse("2024-02-29 13:05", true, &t), 0);
    assert_int_equal(t, 1709211900); /* with a time, the end is exactly that */
    assert_int_equal(tg_cli_time_parse("2024-02-29T13:05:07Z", false, &t), 0);
    assert_int_equal(t, 1709211907);
    assert_int_equal(tg_cli_time_parse("1793491200", false, &t), 0);
    assert_int_equal(t, 1793491200);
}

static void
time_parse_rejects_bad_dates(void **state)
{
    static const char *bad[] = {"",
                                "yesterday",
                                "2026-11",
                                "2026-13-01",
                                "2026-00-10",
                                "2026-02-29",
                                "2100-02-29",
                                "2026-04-31",
                                "2026-11-01T24:00",
                                "1969-12-31",
                                "2026-11-01T12",
                                "2026-11-01T12:00:60",
                                "2026-1-01",
                                "2026-11-01 12:00x",
                                "-5",
                                "1234567890123"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t t = 42;
        if (tg_cli_time_parse(bad[i], false, &t) != TG_EINVAL) {
            fail_msg("accepted '%s'", bad[i]);
        }
    }
    int64_t t;
    assert_int_equal(tg_cli_time_parse("2000-02-29", false, &t), 0); /* 400-year leap day */
}

static void
time_format_agrees_with_gmtime(void **state)
{
    char out[32], want[32];
    tg_cli_time_format(1793538000, true, out);
    assert_string_equal(out, "2026-11-01 13:00");
    tg_cli_time_format(1793538000, false, out);
    assert_string_equal(out, "2026-11-01");
    /* Every 7 hours 13 minutes over about 100 years, against the C library. */
    for (int64_t s = 0; s < 3200000000LL; s += 7 * 3600 + 13 * 60) {
        time_t tt = (time_t)s;
        struct tm tm;
        gmtime_r(&tt, &tm);
        strftime(want, sizeof(want), "%Y-%m-%d %H:%M", &tm);
        tg_cli_time_format(s, true, out);
        if (strcmp(out, want) != 0) {
            fail_msg("%lld: %s, want %s", (long long)s, out, want);
        }
        int64_t back;
        char date[16];
        snprintf(date, sizeof(date), "%.10s", want);
        assert_int_equal(tg_cli_time_parse(date, false, &back), 0);
        assert_int_equal(back, s - s % 86400);
    }
}

static void
micros_format_is_exact(void **state)
{
    char out[32];
    tg_cli_micros_format(0, out);
    assert_string_equal(out, "0.000000");
    tg_cli_micros_format(450, out);
    assert_string_equal(out, "0.000450");
    tg_cli_micros_format(1234567, out);
    assert_string_equal(out, "1.234567");
    tg_cli_micros_format(-1, out);
    assert_string_equal(out, "-0.000001");
    tg_cli_micros_format(INT64_MAX, out);
    assert_string_equal(out, "9223372036854.775807");
    tg_cli_micros_format(INT64_MIN, out);
    assert_string_equal(out, "-9223372036854.775808");
}

/* ---- usage queries ------------------------------------------------------------------------------
 */

static int
parse_usage(char **argv, int argc, int64_t now, struct tg_cli_usage_query *q, char *err, size_t cap)
{
    struct tg_cli_args a;
    int rc = tg_cli_args_parse(argc, argv, &a, err, cap);
    assert_int_equal(rc, 0);
    assert_ptr_equal(a.cmd->run, tg_cli_cmd_usage);
    return tg_cli_usage_query_parse(&a, now, q, err, cap);
}

static void
usage_query_defaults(void **state)
{
    char *argv[] = {"tollgate", "usage"};
    struct tg_cli_usage_query q;
    char err[200];
    /* 2026-11-28 14:19:10 UTC: the default start is 2026-11-22 00:00 UTC. */
    assert_int_equal(parse_usage(argv, ARGC(argv), 1795875550, &q, err, sizeof(err)), 0);
    assert_int_equal(q.start_s, 1795305600);
    assert_int_equal(q.end_s, 0);
    assert_string_equal(q.bucket, "1d");
    assert_string_equal(q.endpoint, "completions");
    assert_false(q.by_project || q.by_key || q.by_model);
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_cli_usage_query_path(&q, NULL, false, &b);
    assert_string_equal(b.data,
                        "/v1/organization/usage/completions?start_time=1795305600&bucket_width=1d");
    tg_buf_deinit(&b);
}

static void
usage_query_options_make_the_path(void **state)
{
    char *argv[] = {"tollgate",   "usage",      "--start", "2026-11-01",  "--end",
                    "2026-11-02", "--bucket",   "1h",      "--group-by",  " model, key,project",
                    "--project",  "my project", "--model", "gpt 4o/mini", "--endpoint",
                    "embeddings"};
    struct tg_cli_usage_query q;
    char err[200];
    assert_int_equal(parse_usage(argv, ARGC(argv), 1795875550, &q, err, sizeof(err)), 0);
    assert_true(q.by_project && q.by_key && q.by_model);
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_cli_usage_query_path(&q, "page 2", false, &b);
    assert_string_equal(b.data, "/v1/organization/usage/embeddings?start_time=1793491200"
                                "&end_time=1793664000&bucket_width=1h&group_by=project_id"
                                "&group_by=api_key_id&group_by=model&project_ids=my%20project"
                                "&models=gpt%204o%2Fmini&page=page%202");
    tg_buf_deinit(&b);
}

static void
usage_query_errors(void **state)
{
    static const struct {
        const char *opt, *val, *want;
    } cases[] = {
        {"--bucket", "1w", "--bucket must be 1m, 1h or 1d"},
        {"--endpoint", "chat", "--endpoint must be completions, embeddings or moderations"},
        {"--group-by", "model,user", "--group-by takes project, key and model, not 'user'"},
        {"--start", "last week",
         "--start: 'last week' is not YYYY-MM-DD[THH:MM[:SS]] or Unix "
         "seconds"},
        {"--end", "1000", "--end must be later than --start"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[] = {"tollgate", "usage", (char *)cases[i].opt, (char *)cases[i].val};
        struct tg_cli_usage_query q;
        char err[200] = "";
        assert_int_equal(parse_usage(argv, ARGC(argv), 1795875550, &q, err, sizeof(err)),
                         TG_EINVAL);
        assert_string_equal(err, cases[i].want);
    }
}

/* ---- tables
 * -------------------------------------------------------------------------------------- */

static void
table_aligns_and_sanitizes(void **state)
{
    static const char *const titles[] = {"name", "n", "note"};
    struct tg_cli_table t;
    struct tg_buf b;
    tg_cli_table_init(&t, 3, titles, 1u << 1);
    tg_cli_table_add(&t, (const char *[]){"café", "7", "a\x1b[31mred"});
    tg_cli_table_add(&t, (const char *[]){"x", "1234", NULL});
    tg_cli_table_add(&t, (const char *[]){"y", "5", ""});
    tg_buf_init(&b, 0);
    tg_cli_table_render(&t, &b);
    assert_string_equal(b.data, "name     n  note\n"
                                "café     7  a?[31mred\n"
                                "x     1234  -\n"
                                "y        5\n");
    tg_buf_deinit(&b);
    tg_cli_table_deinit(&t);
}

static json_t *
load(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    if (v == NULL) {
        fail_msg("bad test JSON at %d: %s", e.position, e.text);
    }
    return v;
}

static const char usage_page_by_model[] =
    "{\"object\":\"page\",\"data\":["
    "{\"object\":\"bucket\",\"start_time\":1793491200,\"end_time\":1793577600,\"results\":["
    "{\"object\":\"organization.usage.completions.result\",\"model\":\"gpt-4o-mini\","
    "\"num_model_requests\":3,\"input_tokens\":1200,\"input_cached_tokens\":200,"
    "\"output_tokens\":300,\"cost_micros\":450,\"project_id\":null,\"api_key_id\":null},"
    "{\"model\":\"text-embedding-3-small\",\"num_model_requests\":10,\"input_tokens\":5000,"
    "\"input_cached_tokens\":0,\"output_tokens\":0,\"cost_micros\":100}]},"
    "{\"object\":\"bucket\",\"start_time\":1793577600,\"end_time\":1793664000,\"results\":["
    "{\"model\":\"gpt-4o-mini\",\"num_model_requests\":1,\"input_tokens\":10,"
    "\"input_cached_tokens\":0,\"output_tokens\":5,\"cost_micros\":1234567}]},"
    "{\"object\":\"bucket\",\"start_time\":1793664000,\"end_time\":1793750400,\"results\":[]}"
    "],\"has_more\":false,\"next_page\":null}";

static const char usage_table_by_model[] =
    "start (UTC)  model                   requests  input  cached  output  cost (USD)\n"
    "2026-11-01   gpt-4o-mini                    3   1200     200     300    0.000450\n"
    "2026-11-01   text-embedding-3-small        10   5000       0       0    0.000100\n"
    "2026-11-02   gpt-4o-mini                    1     10       0       5    1.234567\n"
    "total                                      14   6210     200     305    1.235117\n";

static void
usage_table_by_model_with_total(void **state)
{
    json_t *page = load(usage_page_by_model);
    struct tg_cli_usage_query q = {.bucket = "1d", .endpoint = "completions", .by_model = true};
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_cli_usage_table(page, &q, NULL, &b), 0);
    assert_string_equal(b.data, usage_table_by_model);
    tg_buf_deinit(&b);
    json_decref(page);

    json_t *bad = load("{\"object\":\"page\"}");
    tg_buf_init(&b, 0);
    assert_int_equal(tg_cli_usage_table(bad, &q, NULL, &b), TG_EPARSE);
    tg_buf_deinit(&b);
    json_decref(bad);
}

static const char projects_list[] =
    "{\"object\":\"list\",\"data\":["
    "{\"id\":\"proj_a\",\"object\":\"organization.project\",\"name\":\"development\","
    "\"environment\":\"development\",\"created_at\":0,\"archived_at\":null,\"status\":\"active\"},"
    "{\"id\":\"proj_p\",\"name\":\"production\",\"environment\":\"production\","
    "\"status\":\"active\"}],\"first_id\":\"proj_a\",\"last_id\":\"proj_p\",\"has_more\":false}";

static void
usage_table_names_projects_and_shows_hours(void **state)
{
    json_t *page = load("{\"object\":\"page\",\"data\":[{\"start_time\":1793538000,\"results\":["
                        "{\"project_id\":\"proj_p\",\"api_key_id\":\"key_1\",\"model\":\"m\","
                        "\"num_model_requests\":2,\"input_tokens\":20,\"input_cached_tokens\":0,"
                        "\"output_tokens\":4,\"cost_micros\":2},"
                        "{\"project_id\":\"proj_gone\",\"api_key_id\":null,"
                        "\"num_model_requests\":1,\"input_tokens\":5,\"input_cached_tokens\":5,"
                        "\"output_tokens\":1,\"cost_micros\":0}]}],\"has_more\":false}");
    json_t *projects = load(projects_list);
    struct tg_cli_usage_query q = {
        .bucket = "1h", .endpoint = "completions", .by_project = true, .by_key = true};
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_cli_usage_table(page, &q, projects, &b), 0);
    assert_string_equal(
        b.data,
        "start (UTC)       project     key    requests  input  cached  output  cost (USD)\n"
        "2026-11-01 13:00  production  key_1         2     20       0       4    0.000002\n"
        "2026-11-01 13:00  proj_gone   -             1      5       5       1    0.000000\n"
        "total                                       3     25       5       5    0.000002\n");
    tg_buf_deinit(&b);
    json_decref(page);
    json_decref(projects);
}

static const char keys_page_1[] =
    "{\"object\":\"list\",\"data\":[{\"object\":\"organization.project.api_key\",\"id\":\"key_a\","
    "\"name\":\"ci\",\"redacted_value\":\"tg-AbC****wXyZ\",\"created_at\":1793541900,"
    "\"last_used_at\":null,\"status\":\"active\",\"project_id\":\"proj_p\"}],"
    "\"first_id\":\"key_a\",\"last_id\":\"key_a\",\"has_more\":true}";
static const char keys_page_2[] =
    "{\"object\":\"list\",\"data\":[{\"object\":\"organization.project.api_key\",\"id\":\"key_b\","
    "\"name\":\"old\",\"redacted_value\":\"tg-xYz****1234\",\"created_at\":0,"
    "\"last_used_at\":null,\"status\":\"revoked\",\"project_id\":\"proj_p\"}],"
    "\"first_id\":\"key_b\",\"last_id\":\"key_b\",\"has_more\":false}";
static const char keys_table_text[] = "id     name  redacted        status   created (UTC)\n"
                                      "key_a  ci    tg-AbC****wXyZ  active   2026-11-01 14:05\n"
                                      "key_b  old   tg-xYz****1234  revoked  -\n";

static void
keys_and_projects_tables(void **state)
{
    json_t *list = load(keys_page_1);
    json_t *more = load(keys_page_2);
    json_array_extend(json_object_get(list, "data"), json_object_get(more, "data"));
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_cli_keys_table(list, &b), 0);
    assert_string_equal(b.data, keys_table_text);
    tg_buf_deinit(&b);
    json_decref(list);
    json_decref(more);

    json_t *projects = load("{\"object\":\"list\",\"data\":["
                            "{\"id\":\"proj_a\",\"name\":\"development\",\"environment\":"
                            "\"development\",\"status\":\"active\"},"
                            "{\"id\":\"proj_bb\",\"name\":\"prod\",\"environment\":"
                            "\"production\",\"status\":\"archived\"}]}");
    tg_buf_init(&b, 0);
    assert_int_equal(tg_cli_projects_table(projects, &b), 0);
    assert_string_equal(b.data, "id       name         environment  status\n"
                                "proj_a   development  development  active\n"
                                "proj_bb  prod         production   archived\n");
    tg_buf_deinit(&b);
    json_decref(projects);
}

static void
assert_table(json_t *v, tg_cli_table_fn fn, const char *want)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(fn(v, &b), 0);
    assert_string_equal(b.data, want);
    tg_buf_deinit(&b);
    json_decref(v);
}

static void
org_tables(void **state)
{
    assert_table(load("{\"object\":\"list\",\"data\":[{\"object\":\"organization.user\","
                      "\"id\":\"user-1\",\"name\":\"Ada\",\"email\":\"ada@example.com\","
                      "\"role\":\"owner\",\"added_at\":1793541900},{\"id\":\"user-22\","
                      "\"name\":\"B\",\"email\":\"b@example.com\",\"role\":\"reader\","
                      "\"added_at\":null}]}"),
                 tg_cli_users_table,
                 "id       name  email            role    added (UTC)\n"
                 "user-1   Ada   ada@example.com  owner   2026-11-01 14:05\n"
                 "user-22  B     b@example.com    reader  -\n");
    assert_table(load("{\"data\":[{\"id\":\"invite-1\",\"email\":\"x@y.z\",\"role\":\"reader\","
                      "\"status\":\"pending\",\"expires_at\":1793541900,\"projects\":[]}]}"),
                 tg_cli_invites_table,
                 "id        email  role    status   expires (UTC)\n"
                 "invite-1  x@y.z  reader  pending  2026-11-01 14:05\n");
    assert_table(load("{\"data\":[{\"id\":\"key_1\",\"name\":\"laptop\",\"redacted_value\":"
                      "\"tg-Ab****yZ\",\"created_at\":1793541900,\"status\":\"active\","
                      "\"owner\":{\"type\":\"user\",\"id\":\"user-1\",\"role\":\"owner\"}}]}"),
                 tg_cli_admin_keys_table,
                 "id     name    redacted     owner   role   status  created (UTC)\n"
                 "key_1  laptop  tg-Ab****yZ  user-1  owner  active  2026-11-01 14:05\n");
    assert_table(load("{\"data\":[{\"id\":\"svc_acct_1\",\"name\":\"billing\",\"role\":"
                      "\"member\",\"created_at\":0}]}"),
                 tg_cli_service_accounts_table,
                 "id          name     role    created (UTC)\n"
                 "svc_acct_1  billing  member  1970-01-01 00:00\n");

    struct tg_buf b;
    tg_buf_init(&b, 0);
    json_t *bad = load("{\"object\":\"list\"}");
    assert_int_equal(tg_cli_users_table(bad, &b), TG_EPARSE);
    assert_int_equal(tg_cli_audit_table(bad, &b), TG_EPARSE);
    assert_int_equal(tg_cli_diff_table(bad, &b), TG_EPARSE);
    assert_int_equal(tg_cli_apply_table(bad, &b), TG_EPARSE);
    assert_int_equal(tg_cli_object_table(json_object_get(bad, "object"), &b), TG_EPARSE);
    assert_int_equal(b.len, 0);
    json_decref(bad);
    tg_buf_deinit(&b);
}

static const char audit_page[] =
    "{\"object\":\"list\",\"data\":["
    "{\"id\":\"audit_log-2\",\"object\":\"organization.audit_log\",\"type\":\"project.updated\","
    "\"effective_at\":1793541900,\"project\":{\"id\":\"proj_p\",\"name\":\"prod\"},"
    "\"actor\":{\"type\":\"api_key\",\"api_key\":{\"id\":\"key_o\",\"type\":\"user\","
    "\"user\":{\"id\":\"user-1\",\"email\":\"ada@example.com\"}}},"
    "\"project.updated\":{\"id\":\"proj_p\",\"changes_requested\":{\"name\":\"prod\"}},"
    "\"seq\":2},"
    "{\"id\":\"audit_log-1\",\"type\":\"invite.accepted\",\"effective_at\":1793538000,"
    "\"actor\":{\"type\":\"api_key\",\"api_key\":{\"id\":\"key_x\",\"user\":null}},"
    "\"invite.accepted\":{\"id\":\"invite-9\"},\"seq\":1}],"
    "\"first_id\":\"audit_log-2\",\"last_id\":\"audit_log-1\",\"has_more\":false}";

static const char audit_table_text[] =
    "time (UTC)        type             actor            project  target\n"
    "2026-11-01 14:05  project.updated  ada@example.com  prod     proj_p\n"
    "2026-11-01 13:00  invite.accepted  key_x            -        invite-9\n";

static void
audit_history_and_diff_tables(void **state)
{
    assert_table(load(audit_page), tg_cli_audit_table, audit_table_text);
    assert_table(load("{\"data\":[{\"object\":\"organization.config_version\",\"number\":7,"
                      "\"project_id\":\"proj_p\",\"project_name\":\"prod\",\"created_at\":"
                      "1793541900,\"actor_id\":\"key_o\",\"reason\":\"project.updated\","
                      "\"settings\":{\"models\":[\"a\",\"b\"]}},{\"number\":12,\"project_id\":"
                      "\"proj_gone\",\"project_name\":null,\"created_at\":1793541900,"
                      "\"actor_id\":null,\"reason\":\"rollback to 7\",\"settings\":{}}]}"),
                 tg_cli_versions_table,
                 "version  project    created (UTC)     actor  reason           settings\n"
                 "7        prod       2026-11-01 14:05  key_o  project.updated  "
                 "{\"models\":[\"a\",\"b\"]}\n"
                 "12       proj_gone  2026-11-01 14:05  -      rollback to 7    {}\n");
    assert_table(load("{\"object\":\"organization.config_version.diff\",\"from\":1,\"to\":2,"
                      "\"changes\":[{\"path\":\"limits.rpm\",\"change\":\"added\",\"old\":null,"
                      "\"new\":60},{\"path\":\"models\",\"change\":\"changed\",\"old\":[\"a\"],"
                      "\"new\":[\"a\",\"b\"]},{\"path\":\"tier\",\"change\":\"removed\","
                      "\"old\":\"gold\",\"new\":null}]}"),
                 tg_cli_diff_table,
                 "path        change   old    new\n"
                 "limits.rpm  added    -      60\n"
                 "models      changed  [\"a\"]  [\"a\",\"b\"]\n"
                 "tier        removed  gold   -\n");
    assert_table(load("{\"changes\":[]}"), tg_cli_diff_table, "No differences.\n");
}

static void
apply_and_object_tables(void **state)
{
    assert_table(
        load("{\"object\":\"organization.apply\",\"dry_run\":true,\"changes\":["
             "{\"action\":\"update\",\"kind\":\"project\",\"name\":\"prod\","
             "\"before\":{\"name\":\"prod\",\"environment\":\"staging\",\"archived\":false},"
             "\"after\":{\"name\":\"prod\",\"environment\":\"production\",\"archived\":false}},"
             "{\"action\":\"create\",\"kind\":\"user\",\"name\":\"a@b.c\",\"before\":null,"
             "\"after\":{\"email\":\"a@b.c\",\"role\":\"reader\"}},"
             "{\"action\":\"archive\",\"kind\":\"project\",\"name\":\"old\","
             "\"before\":{\"name\":\"old\"},\"after\":{\"name\":\"old\"}},"
             "{\"action\":\"delete\",\"kind\":\"member\",\"name\":\"prod/a@b.c\","
             "\"before\":{\"role\":\"member\"},\"after\":null}]}"),
        tg_cli_apply_table,
        "action   kind     name        changes\n"
        "update   project  prod        environment: staging -> production\n"
        "create   user     a@b.c       email: a@b.c, role: reader\n"
        "archive  project  old         -\n"
        "delete   member   prod/a@b.c  -\n");
    assert_table(load("{\"changes\":[]}"), tg_cli_apply_table, "No changes.\n");

    /* Long values are cut on a character boundary (byte 57 is inside an "ö" here); times
     * become dates; null is "-". */
    char long_models[400];
    int n =
        snprintf(long_models, sizeof(long_models), "{\"id\":\"proj_p\",\"models\":[\"abcdef\",");
    for (int i = 0; i < 12; i++) {
        n += snprintf(long_models + n, sizeof(long_models) - (size_t)n, "%s\"mödel-%d\"",
                      i ? "," : "", i);
    }
    snprintf(long_models + n, sizeof(long_models) - (size_t)n,
             "],\"created_at\":1793541900,\"archived_at\":null,\"n\":3}");
    json_t *obj = load(long_models);
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_cli_object_table(obj, &b), 0);
    assert_string_equal(b.data, "field        value\n"
                                "id           proj_p\n"
                                "models       [\"abcdef\",\"mödel-0\",\"mödel-1\",\"mödel-2\","
                                "\"mödel-3\",\"m...\n"
                                "created_at   2026-11-01 14:05\n"
                                "archived_at  -\n"
                                "n            3\n");
    tg_buf_deinit(&b);
    json_decref(obj);
}

static void
request_builders(void **state)
{
    char err[200] = "";
    json_t *v = NULL;
    assert_int_equal(tg_cli_list_split(" a , b,c ", "--models", &v, err, sizeof(err)), 0);
    char *text = json_dumps(v, JSON_COMPACT);
    assert_string_equal(text, "[\"a\",\"b\",\"c\"]");
    free(text);
    json_decref(v);
    assert_int_equal(tg_cli_list_split("a,,b", "--models", &v, err, sizeof(err)), TG_EINVAL);
    assert_null(v);
    assert_string_equal(err, "--models has an empty item in 'a,,b'");
    assert_int_equal(tg_cli_list_split("", "--models", &v, err, sizeof(err)), TG_EINVAL);

    assert_int_equal(tg_cli_invite_projects("prod, dev:owner,proj_x:member", &v, err, sizeof(err)),
                     0);
    text = json_dumps(v, JSON_COMPACT);
    assert_string_equal(text, "[{\"id\":\"prod\",\"role\":\"member\"},{\"id\":\"dev\",\"role\":"
                              "\"owner\"},{\"id\":\"proj_x\",\"role\":\"member\"}]");
    free(text);
    json_decref(v);
    assert_int_equal(tg_cli_invite_projects("prod:admin", &v, err, sizeof(err)), TG_EINVAL);
    assert_string_equal(err, "--projects: the role in 'prod:admin' must be owner or member");
    assert_int_equal(tg_cli_invite_projects(":owner", &v, err, sizeof(err)), TG_EINVAL);
    assert_string_equal(err, "--projects: ':owner' names no project");

    struct tg_cli_args a;
    struct tg_buf b;
    char *all[] = {"tollgate",   "audit",   "list",      "--type",  "project.updated",
                   "--actor",    "key_1",   "--project", "my proj", "--since",
                   "2026-11-01", "--until", "2026-11-01"};
    assert_int_equal(tg_cli_args_parse(ARGC(all), all, &a, err, sizeof(err)), 0);
    tg_buf_init(&b, 0);
    assert_int_equal(tg_cli_audit_query_path(&a, &b, err, sizeof(err)), 0);
    assert_string_equal(b.data, "/v1/organization/audit_logs?event_types%5B%5D=project.updated"
                                "&actor_ids%5B%5D=key_1&project_ids%5B%5D=my%20proj"
                                "&effective_at%5Bgte%5D=1793491200"
                                "&effective_at%5Blt%5D=1793577600");
    tg_buf_deinit(&b);

    char *none[] = {"tollgate", "audit", "list"};
    assert_int_equal(tg_cli_args_parse(ARGC(none), none, &a, err, sizeof(err)), 0);
    tg_buf_init(&b, 0);
    assert_int_equal(tg_cli_audit_query_path(&a, &b, err, sizeof(err)), 0);
    assert_string_equal(b.data, "/v1/organization/audit_logs");
    size_t limit = 0;
    assert_int_equal(tg_cli_limit_parse(&a, 20, &limit, err, sizeof(err)), 0);
    assert_int_equal(limit, 20);
    tg_buf_deinit(&b);

    char *backwards[] = {"tollgate",         "audit",   "list", "--since", "2026-11-02", "--until",
                         "2026-11-01T12:00", "--limit", "0"};
    assert_int_equal(tg_cli_args_parse(ARGC(backwards), backwards, &a, err, sizeof(err)), 0);
    tg_buf_init(&b, 0);
    assert_int_equal(tg_cli_audit_query_path(&a, &b, err, sizeof(err)), TG_EINVAL);
    assert_string_equal(err, "--until must be later than --since");
    assert_int_equal(tg_cli_limit_parse(&a, 20, &limit, err, sizeof(err)), 0);
    assert_int_equal(limit, 0);
    tg_buf_deinit(&b);

    char *bad[] = {"tollgate", "audit", "list", "--since", "soon", "--limit", "-1"};
    assert_int_equal(tg_cli_args_parse(ARGC(bad), bad, &a, err, sizeof(err)), 0);
    tg_buf_init(&b, 0);
    assert_int_equal(tg_cli_audit_query_path(&a, &b, err, sizeof(err)), TG_EINVAL);
    assert_string_equal(err, "--since: 'soon' is not YYYY-MM-DD[THH:MM[:SS]] or Unix seconds");
    assert_int_equal(tg_cli_limit_parse(&a, 20, &limit, err, sizeof(err)), TG_EINVAL);
    assert_string_equal(err, "--limit takes a number from 0 to 100000000, not '-1'");
    tg_buf_deinit(&b);

    char *path = tg_cli_path("projects/%s/users/%s", "my proj", "a/b");
    assert_string_equal(path, "/v1/organization/projects/my%20proj/users/a%2Fb");
    free(path);
}

/* ---- the scripted HTTP server -------------------------------------------------------------------
 */

struct exchange {
    const char
        *request_line; /* expected, e.g. "GET /v1/organization/projects?limit=100 HTTP/1.1" */
    const char *body;  /* expected request body; NULL: none */
    int status;
    const char *response; /* JSON sent back */
};

struct server {
    int fd;
    int port;
    pthread_t thread;
    const char *auth; /* expected Authorization value */
    const struct exchange *ex;
    size_t n_ex;
    size_t n_seen; /* requests received */
    char failure[2048];
};

static void
server_fail(struct server *s, const char *what, const char *got, const char *want)
{
    if (s->failure[0] == '\0') {
        snprintf(s->failure, sizeof(s->failure), "request %zu: %s: got '%s', want '%s'",
                 s->n_seen + 1, what, got ? got : "(none)", want ? want : "(none)");
    }
}

/* Reads one request: head (request line and headers) and body. Returns 0 or -1. */
static int
read_request(int fd, struct tg_buf *head, struct tg_buf *body)
{
    char chunk[4096];
    char *end = NULL;
    while ((end = head->data ? strstr(head->data, "\r\n\r\n") : NULL) == NULL) {
        ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
        if (n <= 0 || tg_buf_append(head, chunk, (size_t)n) < 0) {
            return -1;
        }
    }
    size_t head_len = (size_t)(end - head->data) + 4;
    tg_buf_append(body, head->data + head_len, head->len - head_len);
    head->data[head_len] = '\0';
    head->len = head_len;
    const char *cl = strcasestr(head->data, "\r\ncontent-length:");
    size_t want = cl ? strtoul(cl + 17, NULL, 10) : 0;
    while (body->len < want) {
        ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
        if (n <= 0) {
            return -1;
        }
        tg_buf_append(body, chunk, (size_t)n);
    }
    return 0;
}

/* Copies the value of header name (with the colon, lower case) out of head. */
static void
header_value(const char *head, const char *name, char *out, size_t cap)
{
    const char *h = strcasestr(head, name);
    out[0] = '\0';
    if (h != NULL) {
        h += strlen(name);
        h += strspn(h, " ");
        snprintf(out, cap, "%.*s", (int)strcspn(h, "\r"), h);
    }
}

static void
serve_one(struct server *s, int cfd)
{
    struct tg_buf head, body;
    tg_buf_init(&head, 1 << 16);
    tg_buf_init(&body, 1 << 20);
    const struct exchange *ex = s->n_seen < s->n_ex ? &s->ex[s->n_seen] : NULL;
    int status = 500;
    const char *resp = "{\"error\":{\"message\":\"unexpected request\"}}";
    if (read_request(cfd, &head, &body) == 0) {
        char line[1024], auth[256];
        snprintf(line, sizeof(line), "%.*s", (int)strcspn(head.data, "\r"), head.data);
        header_value(head.data, "\r\nauthorization:", auth, sizeof(auth));
        if (ex == NULL) {
            server_fail(s, "unexpected request", line, NULL);
        } else {
            if (strcmp(line, ex->request_line) != 0) {
                server_fail(s, "request line", line, ex->request_line);
            }
            if (strcmp(auth, s->auth) != 0) {
                server_fail(s, "authorization", auth, s->auth);
            }
            if (strcmp(body.data ? body.data : "", ex->body ? ex->body : "") != 0) {
                server_fail(s, "body", body.data, ex->body);
            }
            status = ex->status;
            resp = ex->response;
        }
    } else {
        server_fail(s, "reading the request", NULL, NULL);
    }
    char hdr[256];
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, strlen(resp));
    send(cfd, hdr, (size_t)n, MSG_NOSIGNAL);
    send(cfd, resp, strlen(resp), MSG_NOSIGNAL);
    s->n_seen++;
    tg_buf_deinit(&head);
    tg_buf_deinit(&body);
}

static void *
server_main(void *arg)
{
    struct server *s = arg;
    for (;;) {
        int cfd = accept(s->fd, NULL, NULL);
        if (cfd < 0) {
            break; /* server_stop shut the socket down */
        }
        /* A safety net against a hung client, not a timing assertion. */
        struct timeval tv = {.tv_sec = 30};
        setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        serve_one(s, cfd);
        close(cfd);
    }
    return NULL;
}

static void
server_start(struct server *s, const struct exchange *ex, size_t n_ex, const char *key)
{
    static char auth[256];
    memset(s, 0, sizeof(*s));
    /* key NULL: the request must carry no Authorization header at all. */
    snprintf(auth, sizeof(auth), "%s%s", key ? "Bearer " : "", key ? key : "");
    s->auth = auth;
    s->ex = ex;
    s->n_ex = n_ex;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(s->fd, 16), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sa, &len), 0);
    s->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

/* Stops the server and checks that exactly the scripted requests arrived, as scripted. */
static void
server_stop(struct server *s)
{
    shutdown(s->fd, SHUT_RDWR); /* wakes the accept() */
    pthread_join(s->thread, NULL);
    close(s->fd);
    if (s->failure[0] != '\0') {
        fail_msg("%s", s->failure);
    }
    assert_int_equal(s->n_seen, s->n_ex);
}

/* ---- running tg_cli_main with stdout and stderr captured --------------------------------------
 */

static char *
slurp(FILE *f)
{
    struct tg_buf b;
    char chunk[4096];
    size_t n;
    tg_buf_init(&b, 0);
    rewind(f);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        tg_buf_append(&b, chunk, n);
    }
    tg_buf_append_str(&b, "");
    fclose(f);
    return tg_buf_steal(&b, NULL);
}

struct run {
    int rc;
    char *out;
    char *err;
};

static struct run
run_cli(int argc, char **argv)
{
    struct run r;
    FILE *fo = tmpfile(), *fe = tmpfile();
    assert_non_null(fo);
    assert_non_null(fe);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    dup2(fileno(fo), 1);
    dup2(fileno(fe), 2);
    r.rc = tg_cli_main(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    r.out = slurp(fo);
    r.err = slurp(fe);
    return r;
}

static void
run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

static int
e2e_setup(void **state)
{
    setenv("TOLLGATE_ADMIN_KEY", ADMIN_KEY, 1);
    unsetenv("TOLLGATE_URL");
    unsetenv("TOLLGATE_DATA_DIR");
    return 0;
}

static char *
url_of(const struct server *s, char *buf, size_t cap)
{
    snprintf(buf, cap, "http://127.0.0.1:%d", s->port);
    return buf;
}

/* ---- end to end
 * ------------------------------------------------------------------------------------ */

static const char created_key[] =
    "{\"object\":\"organization.project.api_key\",\"id\":\"key_new\",\"name\":\"ci\","
    "\"redacted_value\":\"" TG_KEY_PREFIX "PLAC...0000\",\"value\":\"" NEW_KEY
    "\",\"created_at\":1793541900,\"last_used_at\":null,\"project_id\":\"proj_p\"}";

static void
e2e_keys_create_prints_the_key_once(void **state)
{
    static const struct exchange ex[] = {
        {"POST /v1/organization/projects/production/api_keys HTTP/1.1", "{\"name\":\"ci\"}", 200,
         created_key},
    };
    struct server s;
    char url[64];
    server_start(&s, ex, 1, ADMIN_KEY);
    char *argv[] = {"tollgate",  "keys",       "create",
                    "--project", "production", "--name",
                    "ci",        "--url",      url_of(&s, url, sizeof(url))};
    struct run r = run_cli(ARGC(argv), argv);
    server_stop(&s);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, NEW_KEY "\n");
    assert_non_null(strstr(r.err, "Created key key_new (\"ci\") in project production"));
    assert_non_null(strstr(r.err, "not shown again"));
    assert_null(strstr(r.err, ADMIN_KEY));
    run_free(&r);
}

static void
e2e_keys_list_follows_the_cursor(void **state)
{
    static const struct exchange ex[] = {
        {"GET /v1/organization/projects/my%20proj/api_keys?limit=100 HTTP/1.1", NULL, 200,
         keys_page_1},
        {"GET /v1/organization/projects/my%20proj/api_keys?limit=100&after=key_a HTTP/1.1", NULL,
         200, keys_page_2},
    };
    struct server s;
    char url[64], url_v1[80];
    server_start(&s, ex, 2, ADMIN_KEY);
    /* An SDK-style base URL (".../v1/") and options before the command. */
    snprintf(url_v1, sizeof(url_v1), "%s/v1/", url_of(&s, url, sizeof(url)));
    char *argv[] = {"tollgate", "--url", url_v1, "keys", "list", "--project", "my proj"};
    struct run r = run_cli(ARGC(argv), argv);
    server_stop(&s);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, keys_table_text);
    assert_string_equal(r.err, "");
    run_free(&r);
}

static void
e2e_keys_revoke_and_json_output(void **state)
{
    static const char deleted[] =
        "{\"object\":\"organization.project.api_key.deleted\",\"id\":\"key_a\",\"deleted\":true}";
    static const struct exchange ex[] = {
        {"DELETE /v1/organization/projects/staging/api_keys/key_a HTTP/1.1", NULL, 200, deleted},
        {"DELETE /v1/organization/projects/staging/api_keys/key_a HTTP/1.1", NULL, 200, deleted},
    };
    struct server s;
    char url[64];
    server_start(&s, ex, 2, ADMIN_KEY);
    url_of(&s, url, sizeof(url));
    char *argv[] = {"tollgate", "keys", "revoke", "key_a", "--project", "staging", "--url", url};
    struct run r = run_cli(ARGC(argv), argv);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "Revoked key key_a in project staging.\n");
    run_free(&r);

    char *argv_json[] = {"tollgate", "--json", "keys",  "revoke", "--project",
                         "staging",  "key_a",  "--url", url};
    r = run_cli(ARGC(argv_json), argv_json);
    server_stop(&s);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "{\n"
                               "  \"object\": \"organization.project.api_key.deleted\",\n"
                               "  \"id\": \"key_a\",\n"
                               "  \"deleted\": true\n"
                               "}\n");
    run_free(&r);
}

static void
e2e_usage_follows_pages_and_prints_the_table(void **state)
{
    /* The same buckets as usage_page_by_model, split over two pages. */
    json_t *all = load(usage_page_by_model);
    json_t *data = json_object_get(all, "data");
    json_t *p1 = json_pack("{s:s,s:[O],s:b,s:s}", "object", "page", "data", json_array_get(data, 0),
                           "has_more", 1, "next_page", "pg2");
    json_t *p2 =
        json_pack("{s:s,s:[O,O],s:b,s:n}", "object", "page", "data", json_array_get(data, 1),
                  json_array_get(data, 2), "has_more", 0, "next_page");
    char *t1 = json_dumps(p1, 0), *t2 = json_dumps(p2, 0);
    const struct exchange ex[] = {
        {"GET /v1/organization/usage/completions?start_time=1793491200&end_time=1793664000"
         "&bucket_width=1d&group_by=model HTTP/1.1",
         NULL, 200, t1},
        {"GET /v1/organization/usage/completions?start_time=1793491200&end_time=1793664000"
         "&bucket_width=1d&group_by=model&page=pg2 HTTP/1.1",
         NULL, 200, t2},
    };
    struct server s;
    char url[64];
    server_start(&s, ex, 2, ADMIN_KEY);
    char *argv[] = {"tollgate",   "usage",      "--start", "2026-11-01",
                    "--end",      "2026-11-02", "--url",   url_of(&s, url, sizeof(url)),
                    "--group-by", "model"};
    struct run r = run_cli(ARGC(argv), argv);
    server_stop(&s);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, usage_table_by_model);
    run_free(&r);
    free(t1);
    free(t2);
    json_decref(p1);
    json_decref(p2);
    json_decref(all);
}

static void
e2e_usage_by_project_shows_names(void **state)
{
    static const struct exchange ex[] = {
        {"GET /v1/organization/usage/embeddings?start_time=1793491200&bucket_width=1d"
         "&group_by=project_id&project_ids=production HTTP/1.1",
         NULL, 200,
         "{\"object\":\"page\",\"data\":[{\"start_time\":1793491200,\"results\":["
         "{\"project_id\":\"proj_p\",\"num_model_requests\":4,\"input_tokens\":40,"
         "\"cost_micros\":8}]}],\"has_more\":false,\"next_page\":null}"},
        {"GET /v1/organization/projects?limit=100 HTTP/1.1", NULL, 200, projects_list},
    };
    struct server s;
    char url[64];
    server_start(&s, ex, 2, ADMIN_KEY);
    char *argv[] = {"tollgate",   "usage",      "--endpoint", "embeddings",
                    "--start",    "1793491200", "--project",  "production",
                    "--group-by", "project",    "--url",      url_of(&s, url, sizeof(url))};
    struct run r = run_cli(ARGC(argv), argv);
    server_stop(&s);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out,
                        "start (UTC)  project     requests  input  cached  output  cost (USD)\n"
                        "2026-11-01   production         4     40       0       0    0.000008\n"
                        "total                           4     40       0       0    0.000008\n");
    run_free(&r);
}

static void
e2e_api_error_goes_to_stderr(void **state)
{
    static const struct exchange ex[] = {
        {"GET /v1/organization/projects?limit=100 HTTP/1.1", NULL, 401,
         "{\"error\":{\"message\":\"Incorrect API key provided: tg-****rstu. Ask your tollgate "
         "administrator for a key.\",\"type\":\"invalid_request_error\",\"param\":null,"
         "\"code\":\"invalid_api_key\"}}"},
        {"GET /v1/organization/projects/nope/api_keys?limit=100 HTTP/1.1", NULL, 502,
         "<html>bad gateway</html>"},
        {"GET /v1/organization/projects?limit=100 HTTP/1.1", NULL, 404,
         "{\"error\":{\"message\":\"key " ADMIN_KEY " echoed\"}}"},
    };
    struct server s;
    char url[64];
    server_start(&s, ex, 3, ADMIN_KEY);
    url_of(&s, url, sizeof(url));
    char *argv[] = {"tollgate", "projects", "list", "--url", url};
    struct run r = run_cli(ARGC(argv), argv);
    assert_int_equal(r.rc, 1);
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, "tollgate: 401 Incorrect API key provided: tg-****rstu. Ask your "
                               "tollgate administrator for a key.\n");
    run_free(&r);

    char *argv2[] = {"tollgate", "keys", "list", "--project", "nope", "--url", url};
    r = run_cli(ARGC(argv2), argv2);
    assert_int_equal(r.rc, 1);
    assert_string_equal(r.err, "tollgate: 502 from GET /v1/organization/projects/nope/api_keys"
                               "?limit=100: <html>bad gateway</html>\n");
    run_free(&r);

    /* Should an answer ever echo the admin key, the CLI still does not print it. */
    r = run_cli(ARGC(argv), argv);
    server_stop(&s);
    assert_int_equal(r.rc, 1);
    assert_string_equal(r.err, "tollgate: 404 key [admin key] echoed\n");
    run_free(&r);
}

static void
e2e_unreachable_gateway(void **state)
{
    /* A port that was just free: bind, read the number, close. */
    struct server s;
    char url[64];
    server_start(&s, NULL, 0, ADMIN_KEY);
    url_of(&s, url, sizeof(url));
    server_stop(&s);
    char *argv[] = {"tollgate", "projects", "list", "--url", url};
    struct run r = run_cli(ARGC(argv), argv);
    assert_int_equal(r.rc, 1);
    char want[128];
    snprintf(want, sizeof(want), "tollgate: cannot reach %s: ", url);
    assert_memory_equal(r.err, want, strlen(want));
    assert_non_null(strstr(r.err, "is `tollgate serve` running there?"));
    run_free(&r);
}

static void
e2e_key_from_the_data_dir(void **state)
{
    char dir[64];
    make_data_dir(dir, sizeof(dir), "tg-FileKey\n");
    unsetenv("TOLLGATE_ADMIN_KEY");
    setenv("TOLLGATE_DATA_DIR", dir, 1);
    static const struct exchange ex[] = {
        {"GET /v1/organization/projects?limit=100 HTTP/1.1", NULL, 200, projects_list},
    };
    struct server s;
    char url[64];
    server_start(&s, ex, 1, "tg-FileKey");
    setenv("TOLLGATE_URL", url_of(&s, url, sizeof(url)), 1);
    char *argv[] = {"tollgate", "projects", "list"};
    struct run r = run_cli(ARGC(argv), argv);
    server_stop(&s);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "id      name         environment  status\n"
                               "proj_a  development  development  active\n"
                               "proj_p  production   production   active\n");
    run_free(&r);

    /* No key anywhere: exit 1 and the sources tried, before any request. */
    remove_data_dir(dir);
    r = run_cli(ARGC(argv), argv);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "tollgate: no admin key found; tried --key (not given), "
                                  "$TOLLGATE_ADMIN_KEY (not set) and "));
    assert_non_null(strstr(r.err, "($TOLLGATE_DATA_DIR: No such file or directory)"));
    run_free(&r);
    e2e_setup(state);
}

static void
e2e_command_line_errors_and_help(void **state)
{
    char *bad[] = {"tollgate", "keys", "create", "--project", "p"};
    struct run r = run_cli(ARGC(bad), bad);
    assert_int_equal(r.rc, 2);
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, "tollgate: 'keys create' needs --name NAME\n"
                               "Run 'tollgate help' for the commands.\n");
    run_free(&r);

    char *bucket[] = {"tollgate", "usage", "--bucket", "5m", "--url", "http://127.0.0.1:1"};
    r = run_cli(ARGC(bucket), bucket);
    assert_int_equal(r.rc, 2);
    assert_string_equal(r.err, "tollgate: --bucket must be 1m, 1h or 1d\n");
    run_free(&r);

    struct tg_buf want;
    tg_buf_init(&want, 0);
    tg_cli_help_write(&want, NULL, NULL);
    char *help[] = {"tollgate", "--help"};
    r = run_cli(ARGC(help), help);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, want.data);
    run_free(&r);

    char *help_cmd[] = {"tollgate", "help"};
    r = run_cli(ARGC(help_cmd), help_cmd);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, want.data);
    run_free(&r);

    char *bare[] = {"tollgate"};
    r = run_cli(ARGC(bare), bare);
    assert_int_equal(r.rc, 2);
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, want.data);
    run_free(&r);

    tg_buf_reset(&want);
    tg_cli_help_write(&want, tg_cli_cmd_find("usage"), NULL);
    char *help_usage[] = {"tollgate", "help", "usage"};
    r = run_cli(ARGC(help_usage), help_usage);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, want.data);
    run_free(&r);
    char *usage_help[] = {"tollgate", "usage", "-h"};
    r = run_cli(ARGC(usage_help), usage_help);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, want.data);
    run_free(&r);

    char *help_nope[] = {"tollgate", "help", "nope"};
    r = run_cli(ARGC(help_nope), help_nope);
    assert_int_equal(r.rc, 2);
    assert_string_equal(r.err, "tollgate: no command 'nope' (run 'tollgate help' for the list)\n");
    run_free(&r);
    tg_buf_deinit(&want);
}

static void
e2e_invite_accept_sends_no_admin_key(void **state)
{
    static const struct exchange ex[] = {
        {"POST /v1/organization/invites/accept HTTP/1.1",
         "{\"token\":\"tginv-abc\",\"name\":\"Ada L\"}", 200,
         "{\"object\":\"organization.user\",\"id\":\"user-9\",\"name\":\"Ada L\",\"email\":"
         "\"ada@example.com\",\"role\":\"reader\",\"admin_api_key\":{\"object\":"
         "\"organization.admin_api_key\",\"id\":\"key_9\",\"value\":\"tg-NewAdminKey\"}}"},
    };
    struct server s;
    char url[64];
    /* No key in the environment either: accept must not need one. */
    unsetenv("TOLLGATE_ADMIN_KEY");
    setenv("TOLLGATE_DATA_DIR", "/nonexistent", 1);
    server_start(&s, ex, 1, NULL);
    char *argv[] = {"tollgate", "invites", "accept", "tginv-abc",
                    "--name",   "Ada L",   "--url",  url_of(&s, url, sizeof(url))};
    struct run r = run_cli(ARGC(argv), argv);
    server_stop(&s);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "tg-NewAdminKey\n");
    assert_non_null(strstr(r.err, "Welcome, Ada L <ada@example.com>: you are user user-9, reader"));
    assert_non_null(strstr(r.err, "admin key key_9"));
    assert_non_null(strstr(r.err, "not shown again"));
    run_free(&r);
    e2e_setup(state);
}

static void
e2e_member_role_by_email_and_project_changes(void **state)
{
    static const struct exchange ex[] = {
        {"GET /v1/organization/users?limit=100 HTTP/1.1", NULL, 200,
         "{\"object\":\"list\",\"data\":[{\"id\":\"user-1\",\"email\":\"boss@example.com\"},"
         "{\"id\":\"user-2\",\"email\":\"ada@example.com\"}],\"has_more\":false}"},
        {"POST /v1/organization/projects/prod/users/user-2 HTTP/1.1", "{\"role\":\"owner\"}", 200,
         "{\"object\":\"organization.project.user\",\"id\":\"user-2\",\"name\":\"Ada\","
         "\"email\":\"ada@example.com\",\"role\":\"owner\",\"added_at\":1}"},
        {"POST /v1/organization/projects HTTP/1.1",
         "{\"name\":\"qa\",\"environment\":\"staging\",\"models\":[\"a\",\"b c\"]}", 200,
         "{\"id\":\"proj_q\",\"object\":\"organization.project\",\"name\":\"qa\","
         "\"environment\":\"staging\",\"models\":[\"a\",\"b c\"],\"status\":\"active\"}"},
        {"POST /v1/organization/projects/qa HTTP/1.1", "{\"models\":null}", 200,
         "{\"id\":\"proj_q\",\"name\":\"qa\",\"environment\":\"staging\",\"models\":null}"},
        {"GET /v1/organization/users?limit=100 HTTP/1.1", NULL, 200,
         "{\"object\":\"list\",\"data\":[],\"has_more\":false}"},
    };
    struct server s;
    char url[64];
    server_start(&s, ex, 5, ADMIN_KEY);
    url_of(&s, url, sizeof(url));
    char *role[] = {"tollgate", "members", "set-role", "ADA@example.com", "owner", "--project",
                    "prod",     "--url",   url};
    struct run r = run_cli(ARGC(role), role);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "ada@example.com (user-2) is now owner of project prod.\n");
    run_free(&r);

    char *create[] = {"tollgate", "projects", "create", "qa",    "--environment",
                      "staging",  "--models", "a, b c", "--url", url};
    r = run_cli(ARGC(create), create);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out,
                        "Created project qa (proj_q): environment staging, models: a, b c.\n");
    run_free(&r);

    char *all[] = {"tollgate", "projects", "set-models", "qa", "--all-models", "--url", url};
    r = run_cli(ARGC(all), all);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out,
                        "Updated project qa (proj_q): environment staging, models: every routed "
                        "model.\n");
    run_free(&r);

    /* An e-mail nobody has: exit 1 after the lookup, no change requested. */
    char *nobody[] = {"tollgate", "users", "delete", "nobody@example.com", "--url", url};
    r = run_cli(ARGC(nobody), nobody);
    server_stop(&s);
    assert_int_equal(r.rc, 1);
    assert_string_equal(r.err, "tollgate: no user in the organization has the e-mail address "
                               "nobody@example.com\n");
    run_free(&r);

    /* Mistakes found before any request: exit 2. */
    char *both[] = {"tollgate", "projects",     "modify", "qa", "--models",
                    "a",        "--all-models", "--url",  url};
    r = run_cli(ARGC(both), both);
    assert_int_equal(r.rc, 2);
    assert_string_equal(r.err, "tollgate: give --models or --all-models, not both\n");
    run_free(&r);
    char *nothing[] = {"tollgate", "projects", "modify", "qa", "--url", url};
    r = run_cli(ARGC(nothing), nothing);
    assert_int_equal(r.rc, 2);
    run_free(&r);
}

static void
e2e_audit_list_limit_pages_and_verify(void **state)
{
    json_t *all = load(audit_page);
    json_t *data = json_object_get(all, "data");
    json_t *p1 =
        json_pack("{s:s,s:[O],s:s,s:s,s:b}", "object", "list", "data", json_array_get(data, 0),
                  "first_id", "audit_log-2", "last_id", "audit_log-2", "has_more", 1);
    json_t *p2 =
        json_pack("{s:s,s:[O],s:s,s:s,s:b}", "object", "list", "data", json_array_get(data, 1),
                  "first_id", "audit_log-1", "last_id", "audit_log-1", "has_more", 1);
    char *t1 = json_dumps(p1, 0), *t2 = json_dumps(p2, 0);
    const struct exchange ex[] = {
        {"GET /v1/organization/audit_logs?project_ids%5B%5D=prod&limit=2 HTTP/1.1", NULL, 200, t1},
        {"GET /v1/organization/audit_logs?project_ids%5B%5D=prod&limit=1&after=audit_log-2 "
         "HTTP/1.1",
         NULL, 200, t2},
        {"GET /v1/organization/audit_logs/verify HTTP/1.1", NULL, 200,
         "{\"object\":\"organization.audit_log.verification\",\"valid\":true,\"entries\":12,"
         "\"first_invalid_seq\":null,\"reason\":null,\"head_seq\":12,\"head_hash\":\"ab12\"}"},
        {"GET /v1/organization/audit_logs/verify HTTP/1.1", NULL, 200,
         "{\"object\":\"organization.audit_log.verification\",\"valid\":false,\"entries\":4,"
         "\"first_invalid_seq\":5,\"reason\":\"entry 5 is missing (the chain jumps from 4 to "
         "6)\",\"head_seq\":null,\"head_hash\":null}"},
    };
    struct server s;
    char url[64];
    server_start(&s, ex, 4, ADMIN_KEY);
    url_of(&s, url, sizeof(url));
    char *list[] = {"tollgate", "audit", "list", "--project", "prod", "--limit", "2", "--url", url};
    struct run r = run_cli(ARGC(list), list);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, audit_table_text);
    assert_string_equal(r.err, "(the 2 newest shown; --limit N shows more, --limit 0 all)\n");
    run_free(&r);

    char *verify[] = {"tollgate", "audit", "verify", "--url", url};
    r = run_cli(ARGC(verify), verify);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "The audit log is intact: 12 entries, hash chain verified.\n"
                               "Newest entry: 12, hash ab12 (keep it elsewhere to detect the "
                               "removal of the newest entries).\n");
    run_free(&r);

    r = run_cli(ARGC(verify), verify);
    server_stop(&s);
    assert_int_equal(r.rc, 1);
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, "tollgate: the audit log's hash chain is broken at entry 5: entry "
                               "5 is missing (the chain jumps from 4 to 6)\n");
    run_free(&r);
    free(t1);
    free(t2);
    json_decref(p1);
    json_decref(p2);
    json_decref(all);
}

static void
e2e_export_apply_history_rollback(void **state)
{
    static const char yaml[] = "version: 1\nusers:\n- email: ada@example.com\n  name: \"Ada\"\n";
    static const struct exchange ex[] = {
        {"GET /v1/organization/export HTTP/1.1", NULL, 200, yaml},
        {"POST /v1/organization/apply?dry_run=true HTTP/1.1",
         "{\"yaml\":\"version: 1\\nusers:\\n- email: ada@example.com\\n  name: \\\"Ada\\\"\\n\"}",
         200,
         "{\"object\":\"organization.apply\",\"dry_run\":true,\"changes\":[{\"action\":"
         "\"update\",\"kind\":\"user\",\"name\":\"ada@example.com\",\"before\":{\"name\":"
         "\"Ada L\"},\"after\":{\"name\":\"Ada\"}}]}"},
        {"POST /v1/organization/apply?dry_run=false HTTP/1.1",
         "{\"yaml\":\"version: 1\\nusers:\\n- email: ada@example.com\\n  name: \\\"Ada\\\"\\n\"}",
         200, "{\"object\":\"organization.apply\",\"dry_run\":false,\"changes\":[]}"},
        {"POST /v1/organization/apply?dry_run=false HTTP/1.1",
         "{\"yaml\":\"version: 1\\nusers:\\n- email: ada@example.com\\n  name: \\\"Ada\\\"\\n\"}",
         400,
         "{\"error\":{\"message\":\"The organization file is not valid: line 3: bad.\","
         "\"type\":\"invalid_request_error\",\"param\":\"file\",\"code\":\"invalid_org_file\"}}"},
        {"GET /v1/organization/projects/prod/config_versions?limit=20 HTTP/1.1", NULL, 200,
         "{\"object\":\"list\",\"data\":[{\"number\":3,\"project_id\":\"proj_p\",\"project_name\":"
         "\"prod\",\"created_at\":0,\"actor_id\":\"key_o\",\"reason\":\"apply\",\"settings\":{}}],"
         "\"first_id\":\"3\",\"last_id\":\"3\",\"has_more\":false}"},
        {"GET /v1/organization/config_versions/diff?from=1&to=3 HTTP/1.1", NULL, 200,
         "{\"changes\":[]}"},
        {"POST /v1/organization/config_versions/2/rollback HTTP/1.1", "{}", 200,
         "{\"object\":\"organization.config_version\",\"number\":4,\"project_id\":\"proj_p\","
         "\"project_name\":\"prod\",\"reason\":\"rollback to 2\"}"},
    };
    struct server s;
    char url[64];
    server_start(&s, ex, 7, ADMIN_KEY);
    url_of(&s, url, sizeof(url));

    char *exp[] = {"tollgate", "export", "--url", url};
    struct run r = run_cli(ARGC(exp), exp);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, yaml);
    run_free(&r);

    char file[] = "/tmp/tg-cli-apply-XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    char *dry[] = {"tollgate", "apply", file, "--dry-run", "--url", url};
    r = run_cli(ARGC(dry), dry);
    assert_int_equal(r.rc, 0);
    char want[512];
    snprintf(want, sizeof(want),
             "Dry run, nothing was changed. Applying %s would make 1 change:\n"
             "action  kind  name             changes\n"
             "update  user  ada@example.com  name: Ada L -> Ada\n",
             file);
    assert_string_equal(r.out, want);
    run_free(&r);

    char *real[] = {"tollgate", "apply", file, "--url", url};
    r = run_cli(ARGC(real), real);
    assert_int_equal(r.rc, 0);
    snprintf(want, sizeof(want), "No changes: the organization already matches %s.\n", file);
    assert_string_equal(r.out, want);
    run_free(&r);

    r = run_cli(ARGC(real), real);
    assert_int_equal(r.rc, 1);
    assert_string_equal(r.err, "tollgate: 400 The organization file is not valid: line 3: bad.\n");
    run_free(&r);
    unlink(file);

    char *hist[] = {"tollgate", "history", "--project", "prod", "--url", url};
    r = run_cli(ARGC(hist), hist);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "version  project  created (UTC)     actor  reason  settings\n"
                               "3        prod     1970-01-01 00:00  key_o  apply   {}\n");
    run_free(&r);

    char *diff[] = {"tollgate", "diff", "1", "3", "--url", url};
    r = run_cli(ARGC(diff), diff);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "No differences.\n");
    run_free(&r);

    char *back[] = {"tollgate", "rollback", "2", "--url", url};
    r = run_cli(ARGC(back), back);
    server_stop(&s);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "Restored the settings of version 2 onto project prod: now "
                               "version 4.\n");
    run_free(&r);

    /* Not numbers, or a file that is not there: exit before any request. */
    char *bad_diff[] = {"tollgate", "diff", "1", "HEAD", "--url", "http://127.0.0.1:1"};
    r = run_cli(ARGC(bad_diff), bad_diff);
    assert_int_equal(r.rc, 2);
    assert_string_equal(r.err, "tollgate: versions are numbers (see `tollgate history`), not "
                               "'HEAD'\n");
    run_free(&r);
    char *no_file[] = {"tollgate", "apply", "/nonexistent/org.yaml", "--url", "http://127.0.0.1:1"};
    r = run_cli(ARGC(no_file), no_file);
    assert_int_equal(r.rc, 1);
    assert_string_equal(r.err,
                        "tollgate: cannot read /nonexistent/org.yaml: No such file or directory\n");
    run_free(&r);
}

static void
e2e_secrets_go_alone_to_stdout(void **state)
{
    static const struct exchange ex[] = {
        {"POST /v1/organization/invites HTTP/1.1",
         "{\"email\":\"new@example.com\",\"role\":\"reader\",\"projects\":[{\"id\":\"prod\","
         "\"role\":\"owner\"}],\"expires_in_days\":3}",
         200,
         "{\"object\":\"organization.invite\",\"id\":\"invite-1\",\"email\":\"new@example.com\","
         "\"role\":\"reader\",\"status\":\"pending\",\"created_at\":1793541900,\"expires_at\":"
         "1793801100,\"projects\":[],\"token\":\"tginv-Secret\"}"},
        {"POST /v1/organization/projects/prod/service_accounts HTTP/1.1", "{\"name\":\"job\"}", 200,
         "{\"object\":\"organization.project.service_account\",\"id\":\"svc_acct_1\",\"name\":"
         "\"job\",\"role\":\"member\",\"created_at\":1,\"api_key\":{\"id\":\"key_s\",\"value\":"
         "\"tg-SvcKey\"}}"},
        {"POST /v1/organization/admin_api_keys HTTP/1.1", "{\"name\":\"ci\"}", 403,
         "{\"error\":{\"message\":\"nope\",\"type\":\"invalid_request_error\"}}"},
    };
    struct server s;
    char url[64];
    server_start(&s, ex, 3, ADMIN_KEY);
    url_of(&s, url, sizeof(url));
    char *inv[] = {"tollgate", "invites",    "create",     "new@example.com",   "--role",
                   "reader",   "--projects", "prod:owner", "--expires-in-days", "3",
                   "--url",    url};
    struct run r = run_cli(ARGC(inv), inv);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "tginv-Secret\n");
    assert_non_null(strstr(r.err, "Invited new@example.com as reader (invite-1); the invite "
                                  "expires 2026-11-04 14:05 UTC."));
    run_free(&r);

    char *svc[] = {"tollgate", "service-accounts", "create", "job", "--project", "prod", "--url",
                   url};
    r = run_cli(ARGC(svc), svc);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, "tg-SvcKey\n");
    assert_non_null(
        strstr(r.err, "Created service account job (svc_acct_1) in project prod, with key key_s."));
    run_free(&r);

    char *key[] = {"tollgate", "admin-keys", "create", "--name", "ci", "--url", url};
    r = run_cli(ARGC(key), key);
    server_stop(&s);
    assert_int_equal(r.rc, 1);
    assert_string_equal(r.out, "");
    assert_string_equal(r.err, "tollgate: 403 nope\n");
    run_free(&r);

    char *bad[] = {"tollgate", "invites",    "create",    "x@y.z", "--role",
                   "reader",   "--projects", "prod:boss", "--url", url};
    r = run_cli(ARGC(bad), bad);
    assert_int_equal(r.rc, 2);
    assert_string_equal(r.err,
                        "tollgate: --projects: the role in 'prod:boss' must be owner or member\n");
    run_free(&r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(args_options_before_and_after_the_command),
        cmocka_unit_test(args_equals_form_short_help_and_double_dash),
        cmocka_unit_test(args_errors_name_the_problem),
        cmocka_unit_test(args_organization_commands),
        cmocka_unit_test(args_organization_errors),
        cmocka_unit_test(help_lists_every_command_and_option),
        cmocka_unit_test(help_lines_fit_100_columns),
        cmocka_unit_test(help_markdown_is_docs_cli_md),
        cmocka_unit_test(key_sources_in_order),
        cmocka_unit_test(key_missing_names_every_source),
        cmocka_unit_test(url_sources_and_normalization),
        cmocka_unit_test(time_parse_dates_and_unix_seconds),
        cmocka_unit_test(time_parse_rejects_bad_dates),
        cmocka_unit_test(time_format_agrees_with_gmtime),
        cmocka_unit_test(micros_format_is_exact),
        cmocka_unit_test(usage_query_defaults),
        cmocka_unit_test(usage_query_options_make_the_path),
        cmocka_unit_test(usage_query_errors),
        cmocka_unit_test(table_aligns_and_sanitizes),
        cmocka_unit_test(usage_table_by_model_with_total),
        cmocka_unit_test(usage_table_names_projects_and_shows_hours),
        cmocka_unit_test(keys_and_projects_tables),
        cmocka_unit_test(org_tables),
        cmocka_unit_test(audit_history_and_diff_tables),
        cmocka_unit_test(apply_and_object_tables),
        cmocka_unit_test(request_builders),
        cmocka_unit_test_setup(e2e_keys_create_prints_the_key_once, e2e_setup),
        cmocka_unit_test_setup(e2e_keys_list_follows_the_cursor, e2e_setup),
        cmocka_unit_test_setup(e2e_keys_revoke_and_json_output, e2e_setup),
        cmocka_unit_test_setup(e2e_usage_follows_pages_and_prints_the_table, e2e_setup),
        cmocka_unit_test_setup(e2e_usage_by_project_shows_names, e2e_setup),
        cmocka_unit_test_setup(e2e_api_error_goes_to_stderr, e2e_setup),
        cmocka_unit_test_setup(e2e_unreachable_gateway, e2e_setup),
        cmocka_unit_test_setup(e2e_key_from_the_data_dir, e2e_setup),
        cmocka_unit_test_setup(e2e_command_line_errors_and_help, e2e_setup),
        cmocka_unit_test_setup(e2e_invite_accept_sends_no_admin_key, e2e_setup),
        cmocka_unit_test_setup(e2e_member_role_by_email_and_project_changes, e2e_setup),
        cmocka_unit_test_setup(e2e_audit_list_limit_pages_and_verify, e2e_setup),
        cmocka_unit_test_setup(e2e_export_apply_history_rollback, e2e_setup),
        cmocka_unit_test_setup(e2e_secrets_go_alone_to_stdout, e2e_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
