/*
 * cli.c: the command and option tables, the command-line parser, the help generated from the
 * tables, and tg_cli_main (see cli.h and cli_int.h).
 *
 * The tables are the only description of the command line: the parser checks argv against
 * them and `tollgate help`, `tollgate COMMAND --help` and `tollgate help --markdown` (the text
 * of docs/cli.md) print them, so help and behaviour cannot drift apart.
 */
#include "cli/cli.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli_int.h"
#include "core/err.h"
#include "core/mem.h"

const struct tg_cli_opt tg_cli_opts[TG_CLI_N_OPTS] = {
#define TG_CLI_OPT_ROW(id, name, letter, arg, is_global, help) {name, letter, arg, is_global, help},
    TG_CLI_OPTIONS(TG_CLI_OPT_ROW)
#undef TG_CLI_OPT_ROW
};

/* Help fits 100 columns: a longer "Usage: tollgate ..." line folds its options. */
#define TG_CLI_SYNOPSIS_MAX 84
/* The widest synopsis the command list keeps on one line with its summary (summaries are at
 * most 100 - 2 - 36 - 2 = 60 characters; a unit test checks the help's line lengths). */
#define TG_CLI_SYNOPSIS_COL 36

#define O(id) TG_CLI_O(id)
#define USAGE_OPTS                                                                                 \
    (O(START) | O(END) | O(BUCKET) | O(GROUP_BY) | O(PROJECT) | O(MODEL) | O(ENDPOINT))

/* cost estimate needs the three counts too; tg_cli_estimate_parse says so (the table marks only
 * --model required so the synopsis fits 100 columns). */
#define ESTIMATE_OPTS (O(MODEL) | O(REQUESTS_PER_DAY) | O(PROMPT_TOKENS) | O(COMPLETION_TOKENS))
#define BUDGET_OPTS                                                                                \
    (O(PROJECT) | O(API_KEY) | O(MONTHLY_USD) | O(THRESHOLDS) | O(AUTO_INCREASE) | O(ON_EXCEED) |  \
     O(NOTIFY_EMAILS) | O(WEBHOOK_URL) | O(WEBHOOK_SECRET))

#define AUDIT_OPTS (O(TYPE) | O(ACTOR) | O(PROJECT) | O(SINCE) | O(UNTIL) | O(LIMIT))
#define MAX_MODELS (TG_CLI_MAX_ARGS - 1)

_Static_assert(TG_CLI_N_OPTS <= 64, "option masks are 64 bits");

/* name, positional args, min, max, options, required options, summary, function */
const struct tg_cli_cmd tg_cli_cmds[] = {
    {"serve", "", 0, 0, O(CONFIG), 0, "Run the gateway (must be the first argument).", NULL},
    {"projects list", "", 0, 0, O(ARCHIVED), 0, "List the projects you can see.",
     tg_cli_cmd_projects_list},
    {"projects get", "PROJECT", 1, 1, 0, 0, "Show a project: environment, models, status.",
     tg_cli_cmd_projects_get},
    {"projects create", "NAME", 1, 1, O(ENVIRONMENT) | O(MODELS), 0,
     "Create a project (default environment: development).", tg_cli_cmd_projects_create},
    {"projects modify", "PROJECT", 1, 1, O(NAME) | O(ENVIRONMENT) | O(MODELS) | O(ALL_MODELS), 0,
     "Change a project's name, environment or models.", tg_cli_cmd_projects_modify},
    {"projects rename", "PROJECT NEW_NAME", 2, 2, O(ENVIRONMENT), 0, "Rename a project.",
     tg_cli_cmd_projects_rename},
    {"projects set-models", "PROJECT [MODEL...]", 1, 1 + MAX_MODELS, O(ALL_MODELS), 0,
     "Set the models a project may use (a new config version).", tg_cli_cmd_projects_set_models},
    {"projects archive", "PROJECT", 1, 1, 0, 0, "Archive a project; its keys stop working.",
     tg_cli_cmd_projects_archive},
    {"members list", "", 0, 0, O(PROJECT), O(PROJECT), "List a project's members.",
     tg_cli_cmd_members_list},
    {"members add", "USER", 1, 1, O(PROJECT) | O(ROLE), O(PROJECT),
     "Add a user (id or e-mail) to a project; default role member.", tg_cli_cmd_members_add},
    {"members set-role", "USER ROLE", 2, 2, O(PROJECT), O(PROJECT),
     "Make a project member an owner or a member.", tg_cli_cmd_members_set_role},
    {"members remove", "USER", 1, 1, O(PROJECT), O(PROJECT), "Remove a user from a project.",
     tg_cli_cmd_members_remove},
    {"users list", "", 0, 0, 0, 0, "List the organization's users.", tg_cli_cmd_users_list},
    {"users get", "USER", 1, 1, 0, 0, "Show a user (by id or e-mail).", tg_cli_cmd_users_get},
    {"users set-role", "USER ROLE", 2, 2, 0, 0, "Make a user an owner or a reader.",
     tg_cli_cmd_users_set_role},
    {"users delete", "USER", 1, 1, 0, 0, "Remove a user; their admin keys are revoked.",
     tg_cli_cmd_users_delete},
    {"invites create", "EMAIL", 1, 1, O(ROLE) | O(PROJECTS) | O(EXPIRES), O(ROLE),
     "Invite someone; prints the one-time token once.", tg_cli_cmd_invites_create},
    {"invites list", "", 0, 0, 0, 0, "List invites and their status.", tg_cli_cmd_invites_list},
    {"invites get", "INVITE_ID", 1, 1, 0, 0, "Show an invite.", tg_cli_cmd_invites_get},
    {"invites delete", "INVITE_ID", 1, 1, 0, 0, "Delete an invite; its token stops working.",
     tg_cli_cmd_invites_delete},
    {"invites accept", "TOKEN", 1, 1, O(NAME), 0,
     "Accept an invite (no admin key needed); prints a key once.", tg_cli_cmd_invites_accept},
    {"admin-keys create", "", 0, 0, O(NAME), O(NAME),
     "Create an admin key for yourself; prints it once.", tg_cli_cmd_admin_keys_create},
    {"admin-keys list", "", 0, 0, 0, 0, "List admin keys (readers: their own).",
     tg_cli_cmd_admin_keys_list},
    {"admin-keys get", "KEY_ID", 1, 1, 0, 0, "Show an admin key (redacted).",
     tg_cli_cmd_admin_keys_get},
    {"admin-keys revoke", "KEY_ID", 1, 1, 0, 0, "Revoke an admin key.",
     tg_cli_cmd_admin_keys_revoke},
    {"service-accounts list", "", 0, 0, O(PROJECT), O(PROJECT),
     "List a project's service accounts.", tg_cli_cmd_svc_list},
    {"service-accounts create", "NAME", 1, 1, O(PROJECT), O(PROJECT),
     "Create a service account; prints its first key once.", tg_cli_cmd_svc_create},
    {"service-accounts get", "ACCOUNT_ID", 1, 1, O(PROJECT), O(PROJECT), "Show a service account.",
     tg_cli_cmd_svc_get},
    {"service-accounts rename", "ACCOUNT_ID NEW_NAME", 2, 2, O(PROJECT), O(PROJECT),
     "Rename a service account.", tg_cli_cmd_svc_rename},
    {"service-accounts delete", "ACCOUNT_ID", 1, 1, O(PROJECT), O(PROJECT),
     "Delete a service account; its keys are revoked.", tg_cli_cmd_svc_delete},
    {"service-accounts key-create", "ACCOUNT_ID", 1, 1, O(PROJECT) | O(NAME), O(PROJECT),
     "Create another key for a service account; prints it once.", tg_cli_cmd_svc_key_create},
    {"rate-limits list", "", 0, 0, O(PROJECT) | O(API_KEY), 0,
     "Rate limits per model: the org's, a project's or a key's.", tg_cli_cmd_rate_limits_list},
    {"rate-limits set", "", 0, 0,
     O(PROJECT) | O(API_KEY) | O(MODEL) | O(RPM) | O(TPM) | O(RPD) | O(TPD), O(MODEL),
     "Change one model's rate limits (--model all: every model).", tg_cli_cmd_rate_limits_set},
    {"budgets get", "", 0, 0, O(PROJECT) | O(API_KEY), 0,
     "A monthly budget and its spend (default: the org's).", tg_cli_cmd_budgets_get},
    {"budgets set", "", 0, 0, BUDGET_OPTS, 0, "Change a monthly budget (owners; none removes).",
     tg_cli_cmd_budgets_set},
    {"policy get", "", 0, 0, O(PROJECT) | O(API_KEY), O(PROJECT),
     "A project's or a key's token policy.", tg_cli_cmd_policy_get},
    {"policy set", "JSON", 1, 1, O(PROJECT) | O(API_KEY), O(PROJECT),
     "Replace a token policy ('{}' removes it).", tg_cli_cmd_policy_set},
    {"aliases get", "", 0, 0, O(PROJECT), O(PROJECT), "A project's model aliases.",
     tg_cli_cmd_aliases_get},
    {"aliases set", "JSON", 1, 1, O(PROJECT), O(PROJECT),
     "Replace a project's model aliases ('{}' removes).", tg_cli_cmd_aliases_set},
    {"cache get", "", 0, 0, O(PROJECT), O(PROJECT), "A project's cache settings and counters.",
     tg_cli_cmd_cache_get},
    {"cache invalidate", "", 0, 0, O(PROJECT) | O(MODEL) | O(OLDER_THAN) | O(ALL), 0,
     "Remove cached answers by project, model, age, or all.", tg_cli_cmd_cache_invalidate},
    {"keys create", "", 0, 0, O(PROJECT) | O(NAME), O(PROJECT) | O(NAME),
     "Create a project key; prints it once, never again.", tg_cli_cmd_keys_create},
    {"keys list", "", 0, 0, O(PROJECT), O(PROJECT), "List a project's API keys (redacted).",
     tg_cli_cmd_keys_list},
    {"keys get", "KEY_ID", 1, 1, O(PROJECT), O(PROJECT), "Show a project key (redacted).",
     tg_cli_cmd_keys_get},
    {"keys revoke", "KEY_ID", 1, 1, O(PROJECT), O(PROJECT),
     "Revoke a project key; it fails with 401 at once.", tg_cli_cmd_keys_revoke},
    {"audit list", "", 0, 0, AUDIT_OPTS, 0, "Audit log entries, newest first.",
     tg_cli_cmd_audit_list},
    {"audit verify", "", 0, 0, 0, 0, "Check the audit log's hash chain; exit 1 when broken.",
     tg_cli_cmd_audit_verify},
    {"history", "", 0, 0, O(PROJECT) | O(LIMIT), 0, "Config versions, newest first.",
     tg_cli_cmd_history},
    {"diff", "A B", 2, 2, 0, 0, "Compare the settings of config versions A and B.",
     tg_cli_cmd_diff},
    {"rollback", "N", 1, 1, 0, 0, "Restore version N's settings as a new version (not keys).",
     tg_cli_cmd_rollback},
    {"export", "", 0, 0, 0, 0, "Print the organization as YAML (no key material).",
     tg_cli_cmd_export},
    {"apply", "FILE", 1, 1, O(DRY_RUN), 0, "Make the organization match a YAML file (-: stdin).",
     tg_cli_cmd_apply},
    {"usage", "", 0, 0, USAGE_OPTS | O(CSV), 0,
     "Requests, tokens and cost per time bucket, and a total.", tg_cli_cmd_usage},
    {"costs", "", 0, 0, O(START) | O(END) | O(GROUP_BY) | O(PROJECT) | O(CSV), 0,
     "Costs per day (by project, key, line item), and a total.", tg_cli_cmd_costs},
    {"forecast", "", 0, 0, O(PROJECT), 0, "This month's spend and its month-end forecast.",
     tg_cli_cmd_forecast},
    {"cost estimate", "", 0, 0, ESTIMATE_OPTS | O(CACHE_HIT_RATE), O(MODEL),
     "Daily and monthly cost of a workload, from the price table.", tg_cli_cmd_cost_estimate},
    {"help", "[COMMAND]", 0, 2, O(MARKDOWN), 0, "Show the commands, or one command's options.",
     tg_cli_cmd_help},
};
const size_t tg_cli_n_cmds = sizeof(tg_cli_cmds) / sizeof(tg_cli_cmds[0]);

/* ---- lookups --------------------------------------------------------------------------- */

const struct tg_cli_cmd *
tg_cli_cmd_find(const char *name)
{
    for (size_t i = 0; i < tg_cli_n_cmds; i++) {
        if (strcmp(tg_cli_cmds[i].name, name) == 0) {
            return &tg_cli_cmds[i];
        }
    }
    return NULL;
}

/* True when some command's name is "<word> ...". */
static bool
is_group(const char *word)
{
    size_t len = strlen(word);
    for (size_t i = 0; i < tg_cli_n_cmds; i++) {
        if (strncmp(tg_cli_cmds[i].name, word, len) == 0 && tg_cli_cmds[i].name[len] == ' ') {
            return true;
        }
    }
    return false;
}

static int
opt_by_name(const char *name, size_t len)
{
    for (int i = 0; i < TG_CLI_N_OPTS; i++) {
        if (strlen(tg_cli_opts[i].name) == len && strncmp(tg_cli_opts[i].name, name, len) == 0) {
            return i;
        }
    }
    return -1;
}

static int
opt_by_letter(char letter)
{
    for (int i = 0; i < TG_CLI_N_OPTS; i++) {
        if (letter != 0 && tg_cli_opts[i].letter == letter) {
            return i;
        }
    }
    return -1;
}

/* ---- parsing ----------------------------------------------------------------------------- */

/* Reads the option at argv[*i] into out; advances *i past a separate value. */
static int
parse_option(int argc, char **argv, int *i, struct tg_cli_args *out, char *err, size_t err_cap)
{
    const char *a = argv[*i];
    const char *eq = NULL;
    int id;
    if (a[1] == '-') {
        eq = strchr(a + 2, '=');
        id = opt_by_name(a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2));
    } else {
        id = a[2] == '\0' ? opt_by_letter(a[1]) : -1;
    }
    if (id < 0) {
        snprintf(err, err_cap, "unknown option %s", a);
        return TG_EINVAL;
    }
    const struct tg_cli_opt *o = &tg_cli_opts[id];
    if (o->arg == NULL) {
        if (eq != NULL) {
            snprintf(err, err_cap, "--%s takes no value", o->name);
            return TG_EINVAL;
        }
        out->opt[id] = "";
        return 0;
    }
    if (eq != NULL) {
        out->opt[id] = eq + 1;
    } else if (*i + 1 < argc) {
        out->opt[id] = argv[++*i];
    } else {
        snprintf(err, err_cap, "--%s needs a value (%s)", o->name, o->arg);
        return TG_EINVAL;
    }
    return 0;
}

/* Matches the leading words against the command names, two words before one. */
static int
find_command(const char **words, size_t n_words, struct tg_cli_args *out, char *err, size_t err_cap)
{
    size_t used = 0;
    if (n_words >= 2) {
        char two[128];
        snprintf(two, sizeof(two), "%s %s", words[0], words[1]);
        out->cmd = tg_cli_cmd_find(two);
        used = out->cmd ? 2 : 0;
    }
    if (out->cmd == NULL && n_words >= 1) {
        out->cmd = tg_cli_cmd_find(words[0]);
        used = out->cmd ? 1 : 0;
    }
    if (out->cmd == NULL && n_words >= 1) {
        if (!is_group(words[0])) {
            snprintf(err, err_cap, "unknown command '%s'", words[0]);
            return TG_EINVAL;
        }
        if (n_words > 1) {
            snprintf(err, err_cap, "unknown command '%s %s'", words[0], words[1]);
            return TG_EINVAL;
        }
        out->group = words[0];
        return 0;
    }
    if (n_words - used > TG_CLI_MAX_ARGS) {
        snprintf(err, err_cap, "too many arguments");
        return TG_EINVAL;
    }
    for (size_t i = used; i < n_words; i++) {
        out->pos[out->n_pos++] = words[i];
    }
    return 0;
}

/* Checks the options and positional count against the command's row. */
static int
check_command(const struct tg_cli_args *a, char *err, size_t err_cap)
{
    const struct tg_cli_cmd *c = a->cmd;
    for (int i = 0; i < TG_CLI_N_OPTS; i++) {
        const struct tg_cli_opt *o = &tg_cli_opts[i];
        if (a->opt[i] != NULL && !o->is_global && !(c->opts & (UINT64_C(1) << i))) {
            snprintf(err, err_cap, "'%s' does not take --%s", c->name, o->name);
            return TG_EINVAL;
        }
        if (a->opt[i] == NULL && (c->required & (UINT64_C(1) << i))) {
            snprintf(err, err_cap, "'%s' needs --%s %s", c->name, o->name, o->arg);
            return TG_EINVAL;
        }
        if (a->opt[i] != NULL && o->arg != NULL && a->opt[i][0] == '\0') {
            snprintf(err, err_cap, "--%s needs a value (%s)", o->name, o->arg);
            return TG_EINVAL;
        }
    }
    if (a->n_pos < c->min_args) {
        snprintf(err, err_cap, "'%s' needs %s", c->name, c->args);
        return TG_EINVAL;
    }
    if (a->n_pos > c->max_args) {
        snprintf(err, err_cap, "'%s' does not take the argument '%s'", c->name,
                 a->pos[c->max_args]);
        return TG_EINVAL;
    }
    return 0;
}

int
tg_cli_args_parse(int argc, char **argv, struct tg_cli_args *out, char *err, size_t err_cap)
{
    const char *words[TG_CLI_MAX_ARGS + 2];
    size_t n_words = 0;
    bool is_opts_done = false;
    memset(out, 0, sizeof(*out));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!is_opts_done && strcmp(a, "--") == 0) {
            is_opts_done = true;
        } else if (!is_opts_done && a[0] == '-' && a[1] != '\0') {
            int rc = parse_option(argc, argv, &i, out, err, err_cap);
            if (rc < 0) {
                return rc;
            }
        } else if (n_words == sizeof(words) / sizeof(words[0])) {
            snprintf(err, err_cap, "too many arguments");
            return TG_EINVAL;
        } else {
            words[n_words++] = a;
        }
    }
    int rc = find_command(words, n_words, out, err, err_cap);
    if (rc < 0 || out->cmd == NULL || out->opt[TG_CLI_OPT_HELP] != NULL) {
        return rc;
    }
    return check_command(out, err, err_cap);
}

/* ---- help -------------------------------------------------------------------------------- */

static void
append_opt_usage(struct tg_buf *out, const struct tg_cli_opt *o)
{
    tg_buf_appendf(out, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
}

/* "keys create --project NAME|ID --name NAME [OPTIONS] ARGS"; every option spelled out when
 * is_full, else the optional ones folded into [OPTIONS]. */
static void
append_synopsis(struct tg_buf *out, const struct tg_cli_cmd *c, bool is_full)
{
    bool has_optional = false;
    tg_buf_append_str(out, c->name);
    for (int i = 0; i < TG_CLI_N_OPTS; i++) {
        if (!(c->opts & (UINT64_C(1) << i))) {
            continue;
        }
        bool is_required = (c->required & (UINT64_C(1) << i)) != 0;
        if (is_required || is_full) {
            tg_buf_append_str(out, is_required ? " " : " [");
            append_opt_usage(out, &tg_cli_opts[i]);
            tg_buf_append_str(out, is_required ? "" : "]");
        } else {
            has_optional = true;
        }
    }
    tg_buf_append_str(out, has_optional ? " [OPTIONS]" : "");
    tg_buf_appendf(out, "%s%s", c->args[0] ? " " : "", c->args);
}

/* Aligned "  --name ARG  help" lines for the options whose bit is set in mask. */
static void
append_opt_lines(struct tg_buf *out, uint64_t mask, uint64_t required)
{
    struct tg_buf left;
    size_t width = 0;
    tg_buf_init(&left, 0);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < TG_CLI_N_OPTS; i++) {
            const struct tg_cli_opt *o = &tg_cli_opts[i];
            if (!(mask & (UINT64_C(1) << i))) {
                continue;
            }
            tg_buf_reset(&left);
            if (o->letter != 0) {
                tg_buf_appendf(&left, "-%c, ", o->letter);
            }
            append_opt_usage(&left, o);
            if (pass == 0) {
                width = left.len > width ? left.len : width;
                continue;
            }
            tg_buf_appendf(out, "  %-*s  %s%s\n", (int)width, left.data, o->help,
                           (required & (UINT64_C(1) << i)) ? " (required)" : "");
        }
    }
    tg_buf_deinit(&left);
}

static uint64_t
global_mask(void)
{
    uint64_t mask = 0;
    for (int i = 0; i < TG_CLI_N_OPTS; i++) {
        mask |= tg_cli_opts[i].is_global ? UINT64_C(1) << i : 0;
    }
    return mask;
}

/* The command list, or only the commands of group; aligned. A synopsis wider than
 * TG_CLI_SYNOPSIS_COL has its summary on the next line, so every line fits 100 columns. */
static void
append_cmd_lines(struct tg_buf *out, const char *group)
{
    struct tg_buf syn;
    size_t width = 0;
    size_t glen = group ? strlen(group) : 0;
    tg_buf_init(&syn, 0);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < tg_cli_n_cmds; i++) {
            const struct tg_cli_cmd *c = &tg_cli_cmds[i];
            if (group != NULL && (strncmp(c->name, group, glen) != 0 || c->name[glen] != ' ')) {
                continue;
            }
            tg_buf_reset(&syn);
            append_synopsis(&syn, c, false);
            if (pass == 0) {
                width = syn.len > width ? syn.len : width;
                width = width > TG_CLI_SYNOPSIS_COL ? TG_CLI_SYNOPSIS_COL : width;
            } else if (syn.len > width) {
                tg_buf_appendf(out, "  %s\n  %-*s  %s\n", syn.data, (int)width, "", c->summary);
            } else {
                tg_buf_appendf(out, "  %-*s  %s\n", (int)width, syn.data, c->summary);
            }
        }
    }
    tg_buf_deinit(&syn);
}

void
tg_cli_help_write(struct tg_buf *out, const struct tg_cli_cmd *cmd, const char *group)
{
    if (cmd != NULL) {
        struct tg_buf syn;
        tg_buf_init(&syn, 0);
        append_synopsis(&syn, cmd, true);
        if (syn.len > TG_CLI_SYNOPSIS_MAX) {
            tg_buf_reset(&syn); /* the option list below spells them out anyway */
            append_synopsis(&syn, cmd, false);
        }
        tg_buf_appendf(out, "Usage: tollgate %s\n\n%s\n", syn.data, cmd->summary);
        tg_buf_deinit(&syn);
        if (cmd->opts != 0) {
            tg_buf_append_str(out, "\nOptions:\n");
            append_opt_lines(out, cmd->opts, cmd->required);
        }
        tg_buf_append_str(out, "\nGlobal options:\n");
        append_opt_lines(out, global_mask(), 0);
        return;
    }
    if (group != NULL) {
        tg_buf_appendf(out, "Usage: tollgate %s COMMAND [OPTIONS]\n\nCommands:\n", group);
        append_cmd_lines(out, group);
        tg_buf_appendf(out, "\n`tollgate %s COMMAND --help` shows a command's options.\n", group);
        return;
    }
    tg_buf_append_str(out, "tollgate: an OpenAI-compatible LLM API gateway and the client of "
                           "its admin API.\n\nUsage: tollgate COMMAND [OPTIONS]\n\nCommands:\n");
    append_cmd_lines(out, NULL);
    tg_buf_append_str(out, "\nGlobal options (before or after the command):\n");
    append_opt_lines(out, global_mask(), 0);
    tg_buf_append_str(out, "\n`tollgate COMMAND --help` shows a command's options.\n"
                           "Exit codes: 0 ok, 1 API error, 2 bad command line.\n");
}

/* ---- Markdown (docs/cli.md) ------------------------------------------------------------ */

static const char md_intro[] =
    "# The tollgate command line\n"
    "\n"
    "<!-- Generated by `tollgate help --markdown` from the tables in src/cli/cli.c; a unit test\n"
    "     checks that this file matches. Edit the tables, then regenerate. -->\n"
    "\n"
    "`tollgate serve` runs the gateway. Every other command is a client of the gateway's admin\n"
    "API (`/v1/organization/...`): it never opens the database, so every change passes the\n"
    "same checks as an API call.\n"
    "\n"
    "- **Where**: `--url`, else `$TOLLGATE_URL`, else `http://127.0.0.1:8080` (an SDK-style\n"
    "  base URL ending in `/v1` works too).\n"
    "- **Admin key**: `--key`, else `$TOLLGATE_ADMIN_KEY`, else the first line of\n"
    "  `DATA_DIR/admin.key`, where `DATA_DIR` is `--data-dir`, else `$TOLLGATE_DATA_DIR`, else\n"
    "  `./tollgate-data` (where `tollgate serve` writes the key it generates on first start).\n"
    "  When no key is found the error names every source tried. The key is never printed.\n"
    "- **Output**: aligned tables on stdout, and one line saying what changed after a change;\n"
    "  `--json` prints the API's JSON instead (pretty-printed; the pages of a list are merged\n"
    "  into one). A command that creates a secret (`keys create`, `admin-keys create`,\n"
    "  `service-accounts create` and `key-create`, `invites create`'s token, `invites\n"
    "  accept`'s admin key) prints it alone on stdout (so `KEY=$(tollgate keys create ...)`\n"
    "  works) and the details and the warning that it is not shown again on stderr.\n"
    "- **Names**: a `PROJECT` is a project's name or id; a `USER` is a user id or e-mail\n"
    "  address. `invites accept` needs no admin key: the invite's token is the credential.\n"
    "- **Errors** go to stderr as `tollgate: <message>`, with the API's status and message\n"
    "  when there is one, e.g. `tollgate: 401 Incorrect API key provided: ...`.\n"
    "- **Exit codes**: 0 ok; 1 API error, unreachable gateway or no admin key (and a broken\n"
    "  hash chain for `audit verify`); 2 bad command line. `apply` exits 0 whether or not it\n"
    "  changed anything.\n"
    "\n";

/* A Markdown table cell: '|' escaped. */
static void
append_md_cell(struct tg_buf *out, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '|') {
            tg_buf_append_str(out, "\\");
        }
        tg_buf_append(out, s, 1);
    }
}

static void
append_md_opts(struct tg_buf *out, uint64_t mask, uint64_t required)
{
    struct tg_buf u;
    tg_buf_init(&u, 0);
    tg_buf_append_str(out, "| option | meaning |\n| --- | --- |\n");
    for (int i = 0; i < TG_CLI_N_OPTS; i++) {
        if (!(mask & (UINT64_C(1) << i))) {
            continue;
        }
        tg_buf_reset(&u);
        if (tg_cli_opts[i].letter != 0) {
            tg_buf_appendf(&u, "-%c, ", tg_cli_opts[i].letter);
        }
        append_opt_usage(&u, &tg_cli_opts[i]);
        tg_buf_append_str(out, "| `");
        append_md_cell(out, u.data);
        tg_buf_append_str(out, "` | ");
        append_md_cell(out, tg_cli_opts[i].help);
        tg_buf_append_str(out, (required & (UINT64_C(1) << i)) ? " (required) |\n" : " |\n");
    }
    tg_buf_deinit(&u);
}

void
tg_cli_help_markdown(struct tg_buf *out)
{
    struct tg_buf syn;
    tg_buf_init(&syn, 0);
    tg_buf_append_str(out, md_intro);
    tg_buf_append_str(out, "## Global options\n\nThey go before or after the command.\n\n");
    append_md_opts(out, global_mask(), 0);
    tg_buf_append_str(out, "\n## Commands\n");
    for (size_t i = 0; i < tg_cli_n_cmds; i++) {
        const struct tg_cli_cmd *c = &tg_cli_cmds[i];
        tg_buf_reset(&syn);
        append_synopsis(&syn, c, true);
        tg_buf_appendf(out, "\n### tollgate %s\n\n```\ntollgate %s\n```\n\n%s\n", c->name, syn.data,
                       c->summary);
        if (c->opts != 0) {
            tg_buf_append_str(out, "\n");
            append_md_opts(out, c->opts, c->required);
        }
    }
    tg_buf_deinit(&syn);
}

/* ---- running ------------------------------------------------------------------------------ */

int
tg_cli_cmd_help(struct tg_cli *cli)
{
    const struct tg_cli_args *a = cli->args;
    struct tg_buf b;
    char name[128];
    int rc = 0;
    tg_buf_init(&b, 0);
    snprintf(name, sizeof(name), "%s%s%s", a->n_pos > 0 ? a->pos[0] : "", a->n_pos > 1 ? " " : "",
             a->n_pos > 1 ? a->pos[1] : "");
    const struct tg_cli_cmd *c = a->n_pos > 0 ? tg_cli_cmd_find(name) : NULL;
    if (a->opt[TG_CLI_OPT_MARKDOWN] != NULL) {
        tg_cli_help_markdown(&b);
    } else if (a->n_pos == 0 || c != NULL) {
        tg_cli_help_write(&b, c, NULL);
    } else if (a->n_pos == 1 && is_group(name)) {
        tg_cli_help_write(&b, NULL, name);
    } else {
        tg_cli_fail(cli, "no command '%s' (run 'tollgate help' for the list)", name);
        rc = 2;
    }
    fputs(b.data ? b.data : "", cli->out);
    tg_buf_deinit(&b);
    return rc;
}

static int
print_help(FILE *f, const struct tg_cli_cmd *cmd, const char *group)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_cli_help_write(&b, cmd, group);
    fputs(b.data, f);
    tg_buf_deinit(&b);
    return 0;
}

/* Resolves the URL and the admin key into cli. Returns 0 or 1 (the exit code). */
static int
connect_setup(struct tg_cli *cli, tg_cli_getenv_fn env)
{
    const struct tg_cli_args *a = cli->args;
    struct tg_cli_key_sources src = {
        .opt_key = a->opt[TG_CLI_OPT_KEY],
        .env_key = env("TOLLGATE_ADMIN_KEY"),
        .opt_data_dir = a->opt[TG_CLI_OPT_DATA_DIR],
        .env_data_dir = env("TOLLGATE_DATA_DIR"),
    };
    struct tg_buf why;
    tg_buf_init(&why, 0);
    cli->url = tg_cli_url_resolve(a->opt[TG_CLI_OPT_URL], env("TOLLGATE_URL"));
    int rc = tg_cli_key_resolve(&src, &cli->key, &why);
    if (rc < 0) {
        tg_cli_fail(cli, "%s", why.data);
    }
    tg_buf_deinit(&why);
    return rc < 0 ? 1 : 0;
}

int
tg_cli_run(const struct tg_cli_args *args, FILE *out, FILE *err, tg_cli_getenv_fn env)
{
    struct tg_cli cli = {
        .args = args,
        .out = out,
        .err = err,
        .is_json = args->opt[TG_CLI_OPT_JSON] != NULL,
        .now_s = (int64_t)time(NULL),
    };
    const struct tg_cli_cmd *c = args->cmd;
    bool is_help = args->opt[TG_CLI_OPT_HELP] != NULL;
    int rc = 0;
    if (c == NULL || is_help) {
        /* A bare `tollgate` or `tollgate keys` is a usage mistake: the help goes to stderr. */
        if (c == NULL && !is_help) {
            if (args->group != NULL) {
                fprintf(err, "tollgate: '%s' needs a command\n", args->group);
            }
            print_help(err, NULL, args->group);
            return 2;
        }
        print_help(out, c, args->group);
        goto out;
    }
    if (c->run == NULL) {
        fprintf(err, "tollgate: '%s' must be the first argument: tollgate %s ...\n", c->name,
                c->name);
        return 2;
    }
    if (c->run == tg_cli_cmd_invites_accept) {
        /* The invite's token is the credential: no admin key is looked for or sent. */
        cli.url = tg_cli_url_resolve(args->opt[TG_CLI_OPT_URL], env("TOLLGATE_URL"));
    } else if (c->run != tg_cli_cmd_help && connect_setup(&cli, env) != 0) {
        rc = 1;
        goto out;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = c->run(&cli);
    curl_global_cleanup();
out:
    fflush(out);
    if (cli.key != NULL) {
        explicit_bzero(cli.key, strlen(cli.key));
    }
    free(cli.key);
    free(cli.url);
    return rc;
}

static const char *
process_env(const char *name)
{
    return getenv(name);
}

int
tg_cli_main(int argc, char **argv)
{
    struct tg_cli_args args;
    char err[300];
    if (tg_cli_args_parse(argc, argv, &args, err, sizeof(err)) < 0) {
        fprintf(stderr, "tollgate: %s\nRun 'tollgate help' for the commands.\n", err);
        return 2;
    }
    return tg_cli_run(&args, stdout, stderr, process_env);
}
