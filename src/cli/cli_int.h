/*
 * cli_int.h: the CLI's private contract, shared by the src/cli files and its unit tests.
 *
 * The CLI is split so that everything but the HTTP exchange is a pure function of its inputs:
 * the command line is parsed into a struct tg_cli_args against the option and command tables;
 * the key and URL sources are resolved from explicit inputs (the caller passes getenv's
 * answers); API answers (jansson values) are turned into table text in a struct tg_buf. Only
 * cli_http.c talks to the network and only cli.c reads the process environment.
 *
 * Adding a command: one row in tg_cli_cmds (cli.c) and one function in cli_cmds.c. Adding an
 * option: one X() line in TG_CLI_OPTIONS below; the row of each command that takes it lists it.
 */
#ifndef TG_CLI_CLI_INT_H
#define TG_CLI_CLI_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/buf.h"

/* ---- the option table ---------------------------------------------------------------- */

/* X(ID, long name, short letter or 0, value placeholder or NULL for a flag, is_global, help) */
#define TG_CLI_OPTIONS(X)                                                                          \
    X(URL, "url", 0, "URL", true,                                                                  \
      "gateway URL (default: $TOLLGATE_URL, else http://127.0.0.1:8080)")                          \
    X(KEY, "key", 0, "KEY", true,                                                                  \
      "admin key (default: $TOLLGATE_ADMIN_KEY, else the file DATA_DIR/admin.key)")                \
    X(DATA_DIR, "data-dir", 0, "DIR", true,                                                        \
      "where admin.key is (default: $TOLLGATE_DATA_DIR, else ./tollgate-data)")                    \
    X(JSON, "json", 0, NULL, true, "print the API's JSON, pretty-printed, instead of a table")     \
    X(HELP, "help", 'h', NULL, true, "show help for tollgate or for one command")                  \
    X(PROJECT, "project", 0, "NAME|ID", false, "project, by name or id")                           \
    X(NAME, "name", 0, "NAME", false, "name of what the command creates, or the new name")         \
    X(START, "start", 0, "WHEN", false,                                                            \
      "YYYY-MM-DD[THH:MM[:SS]] UTC or Unix seconds (default: 6 days ago, 00:00)")                  \
    X(END, "end", 0, "WHEN", false,                                                                \
      "end, exclusive; a bare date includes that whole day (default: now)")                        \
    X(BUCKET, "bucket", 0, "WIDTH", false, "bucket width: 1m, 1h or 1d (default: 1d)")             \
    X(GROUP_BY, "group-by", 0, "LIST", false,                                                      \
      "comma-separated columns to group by: project, key, model (costs: line_item)")               \
    X(MODEL, "model", 0, "MODEL", false, "a model (usage: show only this one)")                    \
    X(ENDPOINT, "endpoint", 0, "KIND", false,                                                      \
      "completions (the default; chat and responses too), embeddings or moderations")              \
    X(CONFIG, "config", 0, "FILE", false, "gateway config file (YAML)")                            \
    X(MARKDOWN, "markdown", 0, NULL, false, "print the whole help as Markdown (docs/cli.md)")      \
    X(ENVIRONMENT, "environment", 0, "ENV", false,                                                 \
      "environment label: development, staging, production or your own")                           \
    X(MODELS, "models", 0, "LIST", false, "comma-separated models the project may use")            \
    X(ALL_MODELS, "all-models", 0, NULL, false,                                                    \
      "clear the model list: the project may use every routed model")                              \
    X(ARCHIVED, "archived", 0, NULL, false, "list archived projects too")                          \
    X(ROLE, "role", 0, "ROLE", false, "owner or reader (organization); owner or member (project)") \
    X(PROJECTS, "projects", 0, "LIST", false,                                                      \
      "projects to join: NAME[:owner|member],... (default role: member)")                          \
    X(EXPIRES, "expires-in-days", 0, "DAYS", false,                                                \
      "days until the invite expires, 1 to 30 (default: 7)")                                       \
    X(TYPE, "type", 0, "TYPE", false, "only entries of this event type, e.g. project.updated")     \
    X(ACTOR, "actor", 0, "KEY_ID", false, "only entries made with this admin key")                 \
    X(SINCE, "since", 0, "WHEN", false,                                                            \
      "from this time: YYYY-MM-DD[THH:MM[:SS]] UTC or Unix seconds")                               \
    X(UNTIL, "until", 0, "WHEN", false, "before this time; a bare date includes that whole day")   \
    X(LIMIT, "limit", 0, "N", false, "at most N entries, newest first (default: 20; 0: all)")      \
    X(DRY_RUN, "dry-run", 0, NULL, false, "print the changes without making them")                 \
    X(API_KEY, "api-key", 0, "KEY_ID", false,                                                      \
      "a project API key, by id (with --project): the key's own limits")                           \
    X(MONTHLY_USD, "monthly-usd", 0, "USD|none", false,                                            \
      "monthly hard limit in USD, such as 100 or 12.50 (none: no hard limit)")                     \
    X(THRESHOLDS, "thresholds", 0, "PCT,..|none", false,                                           \
      "notify at these shares of the limit, such as 50,80,100 (none: never)")                      \
    X(AUTO_INCREASE, "auto-increase", 0, "AT:BY:MAX", false,                                       \
      "at AT% of the limit raise it by BY USD, up to MAX USD (none: never)")                       \
    X(ON_EXCEED, "on-exceed", 0, "ACTION", false,                                                  \
      "refuse, or lower_max_tokens to what the budget still allows")                               \
    X(NOTIFY_EMAILS, "notify-emails", 0, "LIST|none", false,                                       \
      "comma-separated addresses notified besides the owners")                                     \
    X(WEBHOOK_URL, "webhook-url", 0, "URL|none", false,                                            \
      "where the budget's notifications are posted")                                               \
    X(WEBHOOK_SECRET, "webhook-secret", 0, "REF|none", false,                                      \
      "webhook signing secret as env:NAME or file:PATH, never the value")                          \
    X(RPM, "rpm", 0, "N|none", false, "requests per minute (none: no limit)")                      \
    X(TPM, "tpm", 0, "N|none", false, "tokens per minute (none: no limit)")                        \
    X(RPD, "rpd", 0, "N|none", false, "requests per day (none: no limit)")                         \
    X(TPD, "tpd", 0, "N|none", false, "tokens per day (none: no limit)")                           \
    X(CSV, "csv", 0, NULL, false,                                                                  \
      "print the API's CSV (a header row, one row per bucket and group)")                          \
    X(REQUESTS_PER_DAY, "requests-per-day", 0, "N", false, "requests a day (required)")            \
    X(PROMPT_TOKENS, "prompt-tokens", 0, "N", false,                                               \
      "prompt (input) tokens per request (required)")                                              \
    X(COMPLETION_TOKENS, "completion-tokens", 0, "N", false,                                       \
      "completion (output) tokens per request (required)")                                         \
    X(CACHE_HIT_RATE, "cache-hit-rate", 0, "RATE", false,                                          \
      "share of prompt tokens cached: 0 to 1, or a percentage (default: 0)")                       \
    X(OLDER_THAN, "older-than", 0, "SECONDS", false, "only cached answers older than this")        \
    X(ALL, "all", 0, NULL, false, "every cached answer of every project (owners)")

enum tg_cli_opt_id {
#define TG_CLI_OPT_ENUM(id, name, letter, arg, is_global, help) TG_CLI_OPT_##id,
    TG_CLI_OPTIONS(TG_CLI_OPT_ENUM)
#undef TG_CLI_OPT_ENUM
        TG_CLI_N_OPTS
};

/* Bit of an option in a command's opts / required masks. */
#define TG_CLI_O(id) (UINT64_C(1) << TG_CLI_OPT_##id)

struct tg_cli_opt {
    const char *name; /* long name without the dashes */
    char letter;      /* short form ("-h"), or 0 */
    const char *arg;  /* value placeholder for help; NULL for a flag */
    bool is_global;   /* accepted by every command */
    const char *help;
};

extern const struct tg_cli_opt tg_cli_opts[TG_CLI_N_OPTS];

/* ---- the command table ---------------------------------------------------------------- */

struct tg_cli;
typedef int (*tg_cli_run_fn)(struct tg_cli *cli);

struct tg_cli_cmd {
    const char *name;  /* one or two words: "projects list", "usage" */
    const char *args;  /* positional arguments for help, e.g. "KEY_ID", or "" */
    unsigned min_args; /* positional arguments after the command words */
    unsigned max_args;
    uint64_t opts;       /* TG_CLI_O() bits of the command's own options */
    uint64_t required;   /* the subset of opts that must be given */
    const char *summary; /* one line, for the command list and the command's help */
    tg_cli_run_fn run;   /* NULL for `serve`, which main.c runs before the CLI */
};

extern const struct tg_cli_cmd tg_cli_cmds[];
extern const size_t tg_cli_n_cmds;

/* ---- the command line ----------------------------------------------------------------- */

#define TG_CLI_MAX_ARGS 64

struct tg_cli_args {
    const struct tg_cli_cmd *cmd;   /* NULL when argv names no command */
    const char *group;              /* first word when it names only a group ("keys"), else NULL */
    const char *opt[TG_CLI_N_OPTS]; /* values, borrowed from argv; "" for a flag; NULL if absent */
    const char *pos[TG_CLI_MAX_ARGS]; /* positional arguments after the command words */
    size_t n_pos;
};

/* Parses argv (argv[0] is the program) against the tables. Options may come before or after
 * the command, as "--name value", "--name=value" or "-h"; "--" ends the options. Finds the
 * command (two words before one) and checks its options, required options and positional
 * count, unless --help was given. Returns 0, or TG_EINVAL with a one-line reason in err (a
 * bad command line: exit code 2). An empty command line (no command, no --help) is not an
 * error here: cmd and group stay NULL. */
int tg_cli_args_parse(int argc, char **argv, struct tg_cli_args *out, char *err, size_t err_cap);

/* Looks a command up by its full name ("keys list"); NULL if there is none. */
const struct tg_cli_cmd *tg_cli_cmd_find(const char *name);

/* Help text from the tables: the overview (cmd and group NULL), the commands of one group
 * ("keys"), or one command's usage, summary and options. Appended to out. */
void tg_cli_help_write(struct tg_buf *out, const struct tg_cli_cmd *cmd, const char *group);

/* The whole help as Markdown: the text of docs/cli.md (a unit test keeps them equal). */
void tg_cli_help_markdown(struct tg_buf *out);

/* ---- key and URL sources ---------------------------------------------------------------- */

/* The places an admin key may come from, in order. NULL or "" means "not given / not set". */
struct tg_cli_key_sources {
    const char *opt_key;      /* --key */
    const char *env_key;      /* $TOLLGATE_ADMIN_KEY */
    const char *opt_data_dir; /* --data-dir */
    const char *env_data_dir; /* $TOLLGATE_DATA_DIR */
};

/* Finds the admin key: --key, else $TOLLGATE_ADMIN_KEY, else the first line of
 * DATA_DIR/admin.key (DATA_DIR: --data-dir, else $TOLLGATE_DATA_DIR, else ./tollgate-data),
 * surrounding white space trimmed. Returns 0 and a heap copy in *key_out (the caller frees),
 * or TG_ENOTFOUND with a message in err naming every source tried (never a key's value). */
int tg_cli_key_resolve(const struct tg_cli_key_sources *src, char **key_out, struct tg_buf *err);

/* The API base URL: opt_url, else env_url, else http://127.0.0.1:8080; a trailing "/" or
 * "/v1" (an SDK-style base URL) is dropped. Returns a heap string the caller frees. */
char *tg_cli_url_resolve(const char *opt_url, const char *env_url);

/* ---- time ------------------------------------------------------------------------------- */

/* Parses "YYYY-MM-DD", "YYYY-MM-DDTHH:MM[:SS]" (also with a space for the T; UTC) or Unix
 * seconds (digits only). When is_end and s is a bare date, the result is the next midnight,
 * so the date is included. Returns 0 and *out, or TG_EINVAL. */
int tg_cli_time_parse(const char *s, bool is_end, int64_t *out);

/* Formats Unix seconds as "YYYY-MM-DD" or, with_time, "YYYY-MM-DD HH:MM" (UTC). */
void tg_cli_time_format(int64_t unix_s, bool with_time, char out[32]);

/* ---- usage queries ------------------------------------------------------------------------ */

struct tg_cli_usage_query {
    int64_t start_s;      /* Unix seconds */
    int64_t end_s;        /* Unix seconds, exclusive; 0: up to now */
    const char *bucket;   /* "1m", "1h" or "1d" */
    const char *endpoint; /* "completions", "embeddings" or "moderations" */
    bool by_project, by_key, by_model;
    const char *project; /* filter, or NULL */
    const char *model;   /* filter, or NULL */
};

/* Fills q from the usage command's options; now_s is the current Unix time (the default
 * start is 00:00 UTC six days before now_s's day). Returns 0, or TG_EINVAL with a reason. */
int tg_cli_usage_query_parse(const struct tg_cli_args *a, int64_t now_s,
                             struct tg_cli_usage_query *q, char *err, size_t err_cap);

/* Appends the request path and query for q ("/v1/organization/usage/completions?..."), with
 * page=... when page is not NULL and format=csv when is_csv. */
void tg_cli_usage_query_path(const struct tg_cli_usage_query *q, const char *page, bool is_csv,
                             struct tg_buf *out);

/* The time window of a report command: --start (default 00:00 UTC six days before now_s's
 * day, OpenAI's default page of daily buckets) and --end (0 when not given: up to now).
 * Returns 0, or TG_EINVAL with a reason. */
int tg_cli_window_parse(const struct tg_cli_args *a, int64_t now_s, int64_t *start_s,
                        int64_t *end_s, char *err, size_t err_cap);

/* Appends "?name=value", or "&name=value" when out already has a query (value
 * percent-encoded). */
void tg_cli_url_param(struct tg_buf *out, const char *name, const char *value);

/* A report of bucketed pages (usage, costs): its query, how to write its request path (page:
 * the next_page cursor, or NULL; is_csv: the whole window as CSV) and how to draw its table
 * (projects: the project list, when q groups by project, to show names). */
struct tg_cli_report {
    const char *what; /* "usage", "costs": named in errors */
    const void *q;
    bool by_project;
    void (*path)(const void *q, const char *page, bool is_csv, struct tg_buf *out);
    int (*table)(const json_t *page, const void *q, const json_t *projects, struct tg_buf *out);
};

/* Runs r: with --csv the server's CSV as it comes, with --json every page merged into one,
 * else the table. Returns the command's exit code. */
int tg_cli_report_run(struct tg_cli *cli, const struct tg_cli_report *r);

/* ---- tables ------------------------------------------------------------------------------ */

/* Percent-encodes s for a URL path segment or query value, appending to out. */
void tg_cli_url_escape(struct tg_buf *out, const char *s);

/* Aligned text columns. Cells are copied, with control characters replaced by '?' so an API
 * answer cannot drive the terminal. Right-aligned columns are marked in right_mask (bit i for
 * column i). */
struct tg_cli_table {
    size_t n_cols;
    const char *const *titles; /* borrowed; n_cols entries */
    uint32_t right_mask;
    char **cells; /* n_rows * n_cols, row-major */
    size_t n_rows;
    size_t rows_cap;
};

void tg_cli_table_init(struct tg_cli_table *t, size_t n_cols, const char *const *titles,
                       uint32_t right_mask);
void tg_cli_table_deinit(struct tg_cli_table *t);

/* Adds a row of n_cols cells (a NULL cell prints as "-"). */
void tg_cli_table_add(struct tg_cli_table *t, const char *const *row);

/* Appends the header and rows, columns two spaces apart, widths in UTF-8 characters, no
 * trailing spaces. */
void tg_cli_table_render(const struct tg_cli_table *t, struct tg_buf *out);

/* Formats micro-dollars as dollars with 6 decimals ("1.234567", "-0.000001"). */
void tg_cli_micros_format(int64_t micros, char out[32]);

/* Table of a usage page ({"object":"page","data":[buckets]}): bucket start (UTC), the group
 * columns of q, requests, input, cached, output tokens, cost (USD), then a total line. When
 * projects (a project list object) is given, project ids show as names. Returns 0 or
 * TG_EPARSE when page has no "data" array. */
int tg_cli_usage_table(const json_t *page, const struct tg_cli_usage_query *q,
                       const json_t *projects, struct tg_buf *out);

/* Table of a key list: id, name, redacted, status, created (UTC). 0 or TG_EPARSE. */
int tg_cli_keys_table(const json_t *list, struct tg_buf *out);

/* Table of a project list: id, name, environment, status. 0 or TG_EPARSE. */
int tg_cli_projects_table(const json_t *list, struct tg_buf *out);

/* Tables of the organization's lists (each an API list object, {"data": [...]}). Each
 * returns 0, or TG_EPARSE when there is no "data" array. Times are UTC.
 *   users:            id, name, email, role, added
 *   invites:          id, email, role, status, expires
 *   admin keys:       id, name, redacted, owner (user id), role, status, created
 *   members:          id, name, email, role, added
 *   service accounts: id, name, role, created
 *   audit:            time, type, actor (the key's user's e-mail, else the key id), project
 *                     (name, else id), target (the id the entry's "<type>" member names)
 *   versions:         version, project (name, else id), created, actor, reason, settings
 *                     (compact JSON) */
int tg_cli_users_table(const json_t *list, struct tg_buf *out);
int tg_cli_invites_table(const json_t *list, struct tg_buf *out);
int tg_cli_admin_keys_table(const json_t *list, struct tg_buf *out);
int tg_cli_members_table(const json_t *list, struct tg_buf *out);
int tg_cli_service_accounts_table(const json_t *list, struct tg_buf *out);
int tg_cli_audit_table(const json_t *list, struct tg_buf *out);
int tg_cli_versions_table(const json_t *list, struct tg_buf *out);

/* Table of a project's rate limits (a list of project.rate_limit): model, then requests per
 * minute, tokens per minute, requests per day, tokens per day ("-": no limit). 0 or
 * TG_EPARSE. */
int tg_cli_rate_limits_table(const json_t *list, struct tg_buf *out);

/* The body of `rate-limits set` from --rpm, --tpm, --rpd, --tpd: each a non-negative integer
 * or "none" (JSON null: no limit). Returns 0 and *out (the caller decrefs), or TG_EINVAL with
 * a reason naming the option (a bad number, or none of the four given). */
int tg_cli_rate_limits_body(const struct tg_cli_args *a, json_t **out, char *err, size_t err_cap);

/* ---- budgets and the level of limits (cli_budgets.c) --------------------------------------- */

/* The admin path of what ("budget", "rate_limits"; then "/" and leaf, escaped, unless leaf is
 * NULL) at the level the options name: no option, the organization
 * ("/v1/organization/<what>"); --project P, ".../projects/P/<what>"; --project P --api-key K,
 * ".../projects/P/api_keys/K/<what>". A heap string, or NULL with a reason (--api-key without
 * --project). */
char *tg_cli_level_path(const struct tg_cli_args *a, const char *what, const char *leaf, char *err,
                        size_t err_cap);

/* USD ("100", "12.50"; at most six decimals and 1000000) as micro-dollars. 0 or TG_EINVAL. */
int tg_cli_usd_parse(const char *s, int64_t *out);

/* The body of `budgets set` from --monthly-usd (monthly_limit_micros), --thresholds,
 * --auto-increase AT:BY:MAX, --on-exceed, --notify-emails, --webhook-url, --webhook-secret
 * (a reference only); "none" gives null (the member removed), except --thresholds none, an
 * empty list. 0 and *out (the caller decrefs), or TG_EINVAL with a reason naming the option
 * (also when none is given). */
int tg_cli_budget_body(const struct tg_cli_args *a, json_t **out, char *err, size_t err_cap);

/* Lines of an organization.budget object: level, monthly limit, spend this month, thresholds,
 * automatic increase, on exceed, caps, e-mails, webhook (its secret's reference only). 0 or
 * TG_EPARSE. */
int tg_cli_budget_table(const json_t *b, struct tg_buf *out);

int tg_cli_cmd_budgets_get(struct tg_cli *cli);
int tg_cli_cmd_budgets_set(struct tg_cli *cli);

/* ---- token policies and aliases (cli_policies.c) ------------------------------------------- */

/* policy get|set: --project P [--api-key K]; set takes the whole policy as one JSON object.
 * aliases get|set: --project P; set takes the whole aliases object. */
int tg_cli_cmd_policy_get(struct tg_cli *cli);
int tg_cli_cmd_policy_set(struct tg_cli *cli);
int tg_cli_cmd_aliases_get(struct tg_cli *cli);
int tg_cli_cmd_aliases_set(struct tg_cli *cli);

/* ---- the response cache (cli_cache.c) ------------------------------------------------------ */

/* cache get: --project P. cache invalidate: any of --project, --model, --older-than SECONDS,
 * --all (at least one). */
int tg_cli_cmd_cache_get(struct tg_cli *cli);
int tg_cli_cmd_cache_invalidate(struct tg_cli *cli);

/* Table of a config version diff ({"changes": [{path, change, old, new}]}): path, change,
 * old, new (values as compact JSON), or "No differences.\n". 0 or TG_EPARSE. */
int tg_cli_diff_table(const json_t *diff, struct tg_buf *out);

/* Table of an apply answer ({"changes": [{action, kind, name, before, after}]}): action,
 * kind, name, and what changes (for an update the members that differ, "k: old -> new"; for
 * a create the new object's members), or "No changes.\n". 0 or TG_EPARSE. */
int tg_cli_apply_table(const json_t *ans, struct tg_buf *out);

/* One object as "field  value" rows in the API's order; objects and lists as compact JSON,
 * null as "-". 0 or TG_EPARSE when obj is not an object. */
int tg_cli_object_table(const json_t *obj, struct tg_buf *out);

/* ---- request building ---------------------------------------------------------------------- */

/* Splits a comma-separated list into a JSON array of its trimmed items. Returns 0, or
 * TG_EINVAL with a reason naming option (e.g. "--models") when an item is empty. */
int tg_cli_list_split(const char *list, const char *option, json_t **out, char *err,
                      size_t err_cap);

/* The "projects" member of an invite from --projects "NAME[:ROLE],...": a JSON array of
 * {"id": NAME, "role": ROLE} (role "member" when not given). 0 or TG_EINVAL with a reason. */
int tg_cli_invite_projects(const char *list, json_t **out, char *err, size_t err_cap);

/* The audit list request from the `audit list` options (--type, --actor, --project, --since,
 * --until), without limit and after: "/v1/organization/audit_logs?..." appended to out.
 * Returns 0, or TG_EINVAL with a reason (a bad time, --until not after --since). */
int tg_cli_audit_query_path(const struct tg_cli_args *a, struct tg_buf *out, char *err,
                            size_t err_cap);

/* The --limit option: *out is the number (0: all) or def when absent. 0 or TG_EINVAL. */
int tg_cli_limit_parse(const struct tg_cli_args *a, size_t def, size_t *out, char *err,
                       size_t err_cap);

/* ---- running a command --------------------------------------------------------------------- */

struct tg_cli {
    const struct tg_cli_args *args;
    FILE *out;    /* tables, JSON, the new key */
    FILE *err;    /* "tollgate: ..." messages and notes */
    char *url;    /* base URL, no trailing slash */
    char *key;    /* admin key: sent in Authorization only, never printed */
    bool is_json; /* --json */
    int64_t now_s;
};

/* Sends one request to the admin API (path includes the query; body is JSON text or NULL)
 * and parses the answer. On a 2xx with a JSON body returns 0 and *out (the caller decrefs).
 * Otherwise prints "tollgate: <status> <API message>" (or the transport failure) on cli->err
 * and returns a negative TG_E* code: TG_ECONNECT, TG_EUPSTREAM (an error status), TG_EPARSE. */
int tg_cli_request(struct tg_cli *cli, const char *method, const char *path, const char *body,
                   json_t **out);

/* Like tg_cli_request, but a 2xx answer's body is appended to out as it came (export's YAML);
 * the error answers are reported the same way. */
int tg_cli_request_text(struct tg_cli *cli, const char *method, const char *path, const char *body,
                        struct tg_buf *out);

/* GETs every page of a cursor list (limit/after, has_more/last_id) and returns the first page
 * object with the later pages' data appended and has_more false. 0 or a negative code (the
 * error already printed). */
int tg_cli_list_fetch(struct tg_cli *cli, const char *path, json_t **out);

/* The same, stopping after max_items items (0: no maximum); has_more then tells whether the
 * API had more. */
int tg_cli_list_fetch_max(struct tg_cli *cli, const char *path, size_t max_items, json_t **out);

/* "/v1/organization/" followed by fmt, in which each "%s" is replaced by the next argument
 * percent-encoded (a path segment or query value); no other directive is understood. Returns
 * a heap string the caller frees. */
char *tg_cli_path(const char *fmt, ...);

/* Prints "tollgate: <message>" on cli->err, with every occurrence of the admin key replaced
 * by "[admin key]". */
void tg_cli_fail(struct tg_cli *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints v pretty-printed (2-space indent, key order kept) and a newline on cli->out. */
void tg_cli_json_print(struct tg_cli *cli, const json_t *v);

/* Runs a parsed command line with the given streams and environment lookup (getenv in
 * tg_cli_main; tests pass their own). Returns the exit code. */
typedef const char *(*tg_cli_getenv_fn)(const char *name);
int tg_cli_run(const struct tg_cli_args *args, FILE *out, FILE *err, tg_cli_getenv_fn env);

/* The commands: help in cli.c (it prints the tables), the others in cli_cmds.c. Each returns
 * the exit code. */
int tg_cli_cmd_help(struct tg_cli *cli);
int tg_cli_cmd_projects_list(struct tg_cli *cli);
int tg_cli_cmd_keys_create(struct tg_cli *cli);
int tg_cli_cmd_keys_list(struct tg_cli *cli);
int tg_cli_cmd_keys_revoke(struct tg_cli *cli);
int tg_cli_cmd_usage(struct tg_cli *cli);
int tg_cli_cmd_keys_get(struct tg_cli *cli);

/* cli_cmds_org.c: projects, members, users, invites, admin keys, service accounts, rate
 * limits. */
int tg_cli_cmd_projects_get(struct tg_cli *cli);
int tg_cli_cmd_projects_create(struct tg_cli *cli);
int tg_cli_cmd_projects_modify(struct tg_cli *cli);
int tg_cli_cmd_projects_rename(struct tg_cli *cli);
int tg_cli_cmd_projects_set_models(struct tg_cli *cli);
int tg_cli_cmd_projects_archive(struct tg_cli *cli);
int tg_cli_cmd_members_list(struct tg_cli *cli);
int tg_cli_cmd_members_add(struct tg_cli *cli);
int tg_cli_cmd_members_set_role(struct tg_cli *cli);
int tg_cli_cmd_members_remove(struct tg_cli *cli);
int tg_cli_cmd_users_list(struct tg_cli *cli);
int tg_cli_cmd_users_get(struct tg_cli *cli);
int tg_cli_cmd_users_set_role(struct tg_cli *cli);
int tg_cli_cmd_users_delete(struct tg_cli *cli);
int tg_cli_cmd_invites_create(struct tg_cli *cli);
int tg_cli_cmd_invites_list(struct tg_cli *cli);
int tg_cli_cmd_invites_get(struct tg_cli *cli);
int tg_cli_cmd_invites_delete(struct tg_cli *cli);
/* The one command that needs no admin key: the invite's token is the credential. */
int tg_cli_cmd_invites_accept(struct tg_cli *cli);
int tg_cli_cmd_admin_keys_create(struct tg_cli *cli);
int tg_cli_cmd_admin_keys_list(struct tg_cli *cli);
int tg_cli_cmd_admin_keys_get(struct tg_cli *cli);
int tg_cli_cmd_admin_keys_revoke(struct tg_cli *cli);
int tg_cli_cmd_svc_list(struct tg_cli *cli);
int tg_cli_cmd_svc_create(struct tg_cli *cli);
int tg_cli_cmd_svc_get(struct tg_cli *cli);
int tg_cli_cmd_svc_rename(struct tg_cli *cli);
int tg_cli_cmd_svc_delete(struct tg_cli *cli);
int tg_cli_cmd_svc_key_create(struct tg_cli *cli);
int tg_cli_cmd_rate_limits_list(struct tg_cli *cli);
int tg_cli_cmd_rate_limits_set(struct tg_cli *cli);

/* cli_cmds_config.c: audit log, config history, export and apply. */
int tg_cli_cmd_audit_list(struct tg_cli *cli);
int tg_cli_cmd_audit_verify(struct tg_cli *cli);
int tg_cli_cmd_history(struct tg_cli *cli);
int tg_cli_cmd_diff(struct tg_cli *cli);
int tg_cli_cmd_rollback(struct tg_cli *cli);
int tg_cli_cmd_export(struct tg_cli *cli);
int tg_cli_cmd_apply(struct tg_cli *cli);

/* Shared by the command files (cli_cmds.c). */
typedef int (*tg_cli_table_fn)(const json_t *v, struct tg_buf *out);

/* Prints v as JSON (--json) or as the table fn makes of it. Returns the exit code. */
int tg_cli_print(struct tg_cli *cli, const json_t *v, tg_cli_table_fn fn);

/* Sends method path with body (a JSON value, taken; NULL for none) and, on success, prints
 * the answer with tg_cli_print(fn), or, when fn is NULL, prints the answer (--json) or the
 * line done (a plain message). Returns the exit code. */
int tg_cli_send(struct tg_cli *cli, const char *method, const char *path, json_t *body,
                tg_cli_table_fn fn, const char *done);

/* GETs every page of the list at path and prints it with fn. Returns the exit code. */
int tg_cli_show_list(struct tg_cli *cli, const char *path, tg_cli_table_fn fn);

/* Prints a created secret: alone on stdout (so $(...) captures it), or the whole answer with
 * --json, then "what" and the not-shown-again warning on stderr. */
void tg_cli_print_secret(struct tg_cli *cli, const json_t *ans, const char *secret,
                         const char *what);

/* ---- costs, forecasts and estimates (cli_costs.c) -------------------------------------------- */

struct tg_cli_costs_query {
    int64_t start_s; /* Unix seconds */
    int64_t end_s;   /* Unix seconds, exclusive; 0: up to now */
    bool by_project, by_key, by_line_item;
    const char *project; /* filter, or NULL */
};

/* Fills q from the costs command's options (--start: default 00:00 UTC six days before now_s's
 * day, as usage; --end; --group-by project, key, line_item; --project). 0, or TG_EINVAL with a
 * reason. */
int tg_cli_costs_query_parse(const struct tg_cli_args *a, int64_t now_s,
                             struct tg_cli_costs_query *q, char *err, size_t err_cap);

/* Appends "/v1/organization/costs?..." for q (limit=180 buckets a page), with page=... when
 * page is not NULL and format=csv when is_csv. */
void tg_cli_costs_query_path(const struct tg_cli_costs_query *q, const char *page, bool is_csv,
                             struct tg_buf *out);

/* Table of a costs page: day (UTC), the group columns of q (project names from projects when
 * given), cost (USD), then a total line. 0 or TG_EPARSE. */
int tg_cli_costs_table(const json_t *page, const struct tg_cli_costs_query *q,
                       const json_t *projects, struct tg_buf *out);

/* Lines of a forecast object: scope, period, as of, month to date, daily average, projected,
 * budget and whether the projection exceeds it. 0 or TG_EPARSE. */
int tg_cli_forecast_table(const json_t *f, struct tg_buf *out);

/* The inputs of `cost estimate`. */
struct tg_cli_estimate {
    const char *model;
    int64_t requests_per_day;
    int64_t prompt_tokens;     /* per request */
    int64_t completion_tokens; /* per request */
    int64_t cache_hit_ppm;     /* share of prompt tokens at the cached price, per million */
};

/* Reads the estimate's options: counts are integers 0..10^10 (tokens 0..10^8); the rate is a
 * decimal 0..1 or a percentage ("25%") with at most 6 (4) decimals. 0 or TG_EINVAL. */
int tg_cli_estimate_parse(const struct tg_cli_args *a, struct tg_cli_estimate *e, char *err,
                          size_t err_cap);

/*
 * The estimate's cost in micro-dollars at prices of micro-dollars per 1M tokens: the exact
 * daily amount is requests x (uncached prompt x input + cached x cached_input + completion x
 * output) / 10^6, with the cached share cache_hit_ppm / 10^6 of the prompt tokens; daily is
 * it rounded up, monthly is 30 times it rounded up (once). 0, or TG_ETOOBIG when it does not
 * fit.
 */
int tg_cli_estimate_cost(const struct tg_cli_estimate *e, int64_t input_micros,
                         int64_t cached_input_micros, int64_t output_micros, int64_t *daily_out,
                         int64_t *monthly_out);

int tg_cli_cmd_costs(struct tg_cli *cli);
int tg_cli_cmd_forecast(struct tg_cli *cli);
int tg_cli_cmd_cost_estimate(struct tg_cli *cli);

#endif
