/*
 * serve.c: `tollgate serve` (see serve.h).
 *
 * Start-up runs on the main thread and may block (it opens the store, reads files); once the
 * workers listen, the main thread only waits for a signal (SIGHUP reopens the access log, for
 * log rotation). On SIGTERM or SIGINT it marks the node not ready, asks every worker to stop
 * (they finish in-flight requests within the grace period), joins them, then stops the access
 * log's and the ledger's writers, which write every queued line and row before they return.
 */
#include "gateway/serve.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "gateway/access_log.h"
#include "gateway/config.h"
#include "gateway/state.h"
#include "gateway/worker.h"
#include "notify/notifier.h"
#include "policy/admission.h"
#include "policy/keys.h"
#include "store/ledger.h"

#define PEPPER_BYTES 32

struct serve {
    struct tg_config *config;
    struct tg_store *store;
    struct tg_price_table *prices;
    struct tg_ledger *ledger;
    struct tg_admission *admission; /* limits and budgets, shared by every worker */
    struct tg_worker *workers;
    struct tg_notifier *notifier;
    int n_workers;
    unsigned char pepper[PEPPER_BYTES];
    char *pepper_ext; /* pepper from keys.pepper, when configured */
    size_t pepper_len;
};

static int
usage_error(const char *msg)
{
    fprintf(stderr, "tollgate serve: %s\nusage: tollgate serve [--config FILE]\n", msg);
    return 2;
}

static int
make_dir(const char *path)
{
    char *p = tg_xstrdup(path);
    for (char *s = p + 1; *s != '\0'; s++) {
        if (*s == '/') {
            *s = '\0';
            mkdir(p, 0700);
            *s = '/';
        }
    }
    int rc = mkdir(p, 0700) == 0 || errno == EEXIST ? 0 : TG_EIO;
    free(p);
    return rc;
}

/* Writes data to path with mode 0600, atomically (temp file + rename). */
static int
write_secret_file(const char *path, const char *data)
{
    char *tmp = tg_xasprintf("%s.tmp", path);
    int rc = TG_EIO;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
        size_t n = strlen(data);
        bool ok = write(fd, data, n) == (ssize_t)n && fsync(fd) == 0;
        close(fd);
        rc = ok && rename(tmp, path) == 0 ? 0 : TG_EIO;
    }
    free(tmp);
    return rc;
}

/* The pepper: keys.pepper from the config, else DATA_DIR/pepper (made on first start). */
static int
load_pepper(struct serve *s)
{
    char err[256];
    if (s->config->pepper_ref != NULL) {
        s->pepper_ext =
            tg_config_resolve_secret(s->config->pepper_ref, "keys.pepper", err, sizeof(err));
        if (s->pepper_ext == NULL) {
            tg_log_error("%s", err);
            return TG_ECONFIG;
        }
        s->pepper_len = strlen(s->pepper_ext);
        return 0;
    }
    char *path = tg_xasprintf("%s/pepper", s->config->data_dir);
    char hex[2 * PEPPER_BYTES + 2] = "";
    FILE *f = fopen(path, "r");
    int rc = 0;
    if (f != NULL) {
        size_t n = fread(hex, 1, sizeof(hex) - 1, f);
        fclose(f);
        hex[n] = '\0';
        rc = n >= 2 * PEPPER_BYTES ? tg_hex_decode(s->pepper, hex, PEPPER_BYTES) : TG_EPARSE;
        if (rc < 0) {
            tg_log_error("%s is not a pepper file (64 hex characters); restore it, or every "
                         "key stops working",
                         path);
        }
    } else {
        tg_random_bytes(s->pepper, PEPPER_BYTES);
        tg_hex_encode(hex, s->pepper, PEPPER_BYTES);
        strcat(hex, "\n");
        rc = write_secret_file(path, hex);
        if (rc < 0) {
            tg_log_error("cannot write %s: %s", path, strerror(errno));
        }
    }
    free(path);
    s->pepper_len = PEPPER_BYTES;
    return rc;
}

static const unsigned char *
pepper(const struct serve *s)
{
    return s->pepper_ext != NULL ? (const unsigned char *)s->pepper_ext : s->pepper;
}

static void
fill_admin_key(const struct serve *s, struct tg_key_rec *k, const char *value, const char *org_id,
               char *id, char *redacted)
{
    tg_id_new(id, 40, "key_", 24);
    tg_key_redact(value, redacted);
    memset(k, 0, sizeof(*k));
    k->id = id;
    k->org_id = org_id;
    k->name = "admin";
    k->redacted = redacted;
    k->kind = TG_KEY_ADMIN;
    k->role = "owner";
    k->created_ms = tg_clock_unix_ms();
    tg_key_hash(pepper(s), s->pepper_len, value, k->hash);
}

/* The admin key to create on first start: TOLLGATE_ADMIN_KEY, else a new one written to
 * DATA_DIR/admin.key. */
static int
first_admin_key(const struct serve *s, char value[TG_KEY_LEN + 1], char **file_out)
{
    const char *env = getenv("TOLLGATE_ADMIN_KEY");
    if (env != NULL && env[0] != '\0') {
        snprintf(value, TG_KEY_LEN + 1, "%s", env);
        return 0;
    }
    tg_key_generate(value);
    char *path = tg_xasprintf("%s/admin.key", s->config->data_dir);
    char line[TG_KEY_LEN + 2];
    snprintf(line, sizeof(line), "%s\n", value);
    int rc = write_secret_file(path, line);
    memset(line, 0, sizeof(line));
    if (rc < 0) {
        tg_log_error("cannot write %s: %s", path, strerror(errno));
        free(path);
        return rc;
    }
    *file_out = path;
    return 0;
}

static int
count_org(const struct tg_org_rec *r, void *arg)
{
    char **id = arg;
    if (*id == NULL) {
        *id = tg_xstrdup(r->id);
    }
    return 0;
}

struct key_probe {
    const unsigned char *hash;
    bool is_found;
};

static int
probe_key(const struct tg_key_rec *r, void *arg)
{
    struct key_probe *p = arg;
    p->is_found = p->is_found || tg_mem_equal_ct(r->hash, p->hash, TG_SHA256_BYTES);
    return 0;
}

/* The e-mail of the owner user made at first start: TOLLGATE_ADMIN_EMAIL, else
 * owner@localhost. */
static const char *
owner_email(void)
{
    const char *e = getenv("TOLLGATE_ADMIN_EMAIL");
    return e != NULL && e[0] != '\0' ? e : "owner@localhost";
}

/* Writes the owner user document (admin/admin_int.h gives its shape). */
static int
put_owner_user(struct tg_store *st, const char *org_id, const char *user_id)
{
    json_t *data =
        json_pack("{s:s, s:s, s:s}", "name", "Owner", "email", owner_email(), "role", "owner");
    /* Lower-cased like every e-mail the admin API stores, so uniqueness checks hold. */
    char *email = tg_xstrdup(owner_email());
    for (char *p = email; *p != '\0'; p++) {
        *p = (char)tolower((unsigned char)*p);
    }
    json_object_set_new(data, "email", json_string(email));
    free(email);
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    int64_t now = tg_clock_unix_ms();
    struct tg_doc d = {"user", user_id, org_id, NULL, text, now, now};
    int rc = st->ops->doc_put(st, &d);
    free(text);
    return rc;
}

struct first_start {
    const struct tg_org_rec *org;
    const struct tg_project_rec *projects;
    size_t n_projects;
    const struct tg_key_rec *admin;
    const char *user_id;
    bool created;
    int64_t budget_micros; /* the org's monthly budget (config); 0: none */
};

/* The organization's settings document with its first budget (policy/limits.h), so nothing
 * runs unbounded by default, as on the OpenAI platform. */
static int
put_org_budget(struct tg_store *st, const char *org_id, int64_t micros)
{
    if (micros <= 0) {
        return 0;
    }
    char data[96];
    snprintf(data, sizeof(data), "{\"budget\":{\"monthly_limit_micros\":%lld}}", (long long)micros);
    int64_t now = tg_clock_unix_ms();
    struct tg_doc d = {.kind = "org_settings",
                       .id = org_id,
                       .org_id = org_id,
                       .data = data,
                       .created_ms = now,
                       .updated_ms = now};
    return st->ops->doc_put(st, &d);
}

/* The org, its projects, the owner's admin key, the owner user and the org's budget: all or
 * nothing. */
static int
first_start_tx(struct tg_store *st, void *arg)
{
    struct first_start *fs = arg;
    int rc = st->ops->bootstrap(st, fs->org, fs->projects, fs->n_projects, fs->admin, &fs->created);
    if (rc == 0 && fs->created) {
        rc = put_owner_user(st, fs->org->id, fs->user_id);
        rc = rc < 0 ? rc : put_org_budget(st, fs->org->id, fs->budget_micros);
    }
    return rc;
}

struct owner_probe {
    bool has_owner;
    char *user_id; /* the first owner user's id (64 bytes) */
};

static int
probe_owner(const struct tg_doc *d, void *arg)
{
    struct owner_probe *p = arg;
    json_t *data = json_loads(d->data, 0, NULL);
    const char *role = json_string_value(json_object_get(data, "role"));
    if (!p->has_owner && role != NULL && strcmp(role, "owner") == 0) {
        p->has_owner = true;
        snprintf(p->user_id, 64, "%s", d->id);
    }
    json_decref(data);
    return 0;
}

struct owner_key {
    char user_id[64]; /* the user of the first active owner admin key that has one */
};

static int
probe_owner_key(const struct tg_key_rec *r, void *arg)
{
    struct owner_key *k = arg;
    if (k->user_id[0] == '\0' && r->kind == TG_KEY_ADMIN && r->revoked_ms == 0 &&
        r->owner_user_id != NULL && r->role != NULL && strcmp(r->role, "owner") == 0) {
        snprintf(k->user_id, sizeof(k->user_id), "%s", r->owner_user_id);
    }
    return 0;
}

/*
 * A store made before users existed (or whose owner user was lost) gets an owner user once:
 * the user that the owner admin keys name, else a new one. Admin keys made before users
 * existed carry no user; they keep the owner role (the store has no op to give a key an owner
 * after the fact).
 */
static int
adopt_owner(struct serve *s, const char *org_id, char owner_id[64])
{
    struct owner_probe probe = {false, owner_id};
    int rc = s->store->ops->doc_list(s->store, "user", org_id, NULL, probe_owner, &probe);
    if (rc < 0 || probe.has_owner) {
        return rc;
    }
    struct owner_key key = {""};
    rc = s->store->ops->keys_list(s->store, org_id, probe_owner_key, &key);
    if (rc < 0) {
        return rc;
    }
    if (key.user_id[0] == '\0') {
        tg_id_new(key.user_id, sizeof(key.user_id), "user-", 24);
    }
    snprintf(owner_id, 64, "%s", key.user_id);
    rc = put_owner_user(s->store, org_id, key.user_id);
    if (rc == 0) {
        tg_log_info("store has no owner user: created owner user %s (%s)", key.user_id,
                    owner_email());
    }
    return rc;
}

/* On a store made before: makes sure TOLLGATE_ADMIN_KEY, if set, is an owner admin key (of
 * the owner user owner_id). */
static int
adopt_env_admin_key(struct serve *s, const char *org_id, const char *owner_id)
{
    const char *env = getenv("TOLLGATE_ADMIN_KEY");
    if (env == NULL || env[0] == '\0') {
        return 0;
    }
    char key_id[40];
    char redacted[TG_KEY_REDACTED_CAP];
    struct tg_key_rec admin;
    fill_admin_key(s, &admin, env, org_id, key_id, redacted);
    admin.owner_user_id = owner_id;
    struct key_probe probe = {admin.hash, false};
    int rc = s->store->ops->keys_list(s->store, org_id, probe_key, &probe);
    if (rc == 0 && !probe.is_found) {
        rc = s->store->ops->key_insert(s->store, &admin);
        tg_log_info("TOLLGATE_ADMIN_KEY added as owner admin key %s", key_id);
    }
    return rc;
}

/* First start: the default organization, its three projects and an owner admin key. */
static int
bootstrap(struct serve *s)
{
    const char *env_key = getenv("TOLLGATE_ADMIN_KEY");
    if (env_key != NULL && env_key[0] != '\0' && !tg_key_is_wellformed(env_key)) {
        tg_log_error("TOLLGATE_ADMIN_KEY is not a tollgate key (\"tg-\" followed by 43 "
                     "base64url characters); unset it to have one generated");
        return TG_ECONFIG;
    }
    char *existing = NULL;
    int rc = s->store->ops->orgs_list(s->store, count_org, &existing);
    if (rc < 0 || existing != NULL) {
        char owner_id[64] = "";
        rc = rc < 0 ? rc : adopt_owner(s, existing, owner_id);
        rc = rc < 0 ? rc : adopt_env_admin_key(s, existing, owner_id);
        free(existing);
        return rc;
    }
    char org_id[40];
    char proj_ids[3][40];
    tg_id_new(org_id, sizeof(org_id), "org-", 24);
    int64_t now = tg_clock_unix_ms();
    static const char *const names[3] = {"development", "staging", "production"};
    struct tg_project_rec projects[3];
    for (int i = 0; i < 3; i++) {
        tg_id_new(proj_ids[i], sizeof(proj_ids[i]), "proj_", 24);
        projects[i] = (struct tg_project_rec){.id = proj_ids[i],
                                              .org_id = org_id,
                                              .name = names[i],
                                              .environment = names[i],
                                              .created_ms = now};
    }
    struct tg_org_rec org = {org_id, "Default", now};
    char value[TG_KEY_LEN + 1] = "";
    char key_id[40];
    char redacted[TG_KEY_REDACTED_CAP];
    char *file = NULL;
    rc = first_admin_key(s, value, &file);
    if (rc < 0) {
        return rc;
    }
    struct tg_key_rec admin;
    fill_admin_key(s, &admin, value, org_id, key_id, redacted);
    memset(value, 0, sizeof(value));
    char user_id[40];
    tg_id_new(user_id, sizeof(user_id), "user-", 24);
    admin.owner_user_id = user_id;
    struct first_start fs = {
        .org = &org,
        .projects = projects,
        .n_projects = 3,
        .admin = &admin,
        .user_id = user_id,
        .budget_micros = s->config->default_org_budget_micros,
    };
    rc = s->store->ops->transact(s->store, first_start_tx, &fs);
    bool created = fs.created;
    if (rc < 0) {
        tg_log_error("cannot initialise the store: %s", tg_strerror(rc));
    } else if (created) {
        tg_log_info("first start: created organization %s with projects development, staging "
                    "and production",
                    org_id);
        tg_log_info("owner user %s (%s) holds admin key %s", user_id, owner_email(), key_id);
        if (file != NULL) {
            tg_log_info("owner admin key %s written to %s (mode 0600)", key_id, file);
        } else {
            tg_log_info("owner admin key %s is the value of TOLLGATE_ADMIN_KEY", key_id);
        }
    }
    free(file);
    return rc;
}

static int
load_prices(struct serve *s)
{
    char err[256];
    s->prices = tg_price_table_new();
    int rc = tg_price_table_load_builtin(s->prices, err, sizeof(err));
    if (rc < 0) {
        tg_log_error("built-in price table: %s", err);
        return rc;
    }
    for (size_t i = 0; i < s->config->n_prices; i++) {
        tg_price_table_set(s->prices, &s->config->prices[i]);
    }
    return 0;
}

static int
load_config(struct serve *s, int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            path = argv[i] + 9;
        } else {
            return usage_error("unknown option");
        }
    }
    char err[512];
    int rc = path ? tg_config_load(path, &s->config, err, sizeof(err))
                  : tg_config_from_env(&s->config, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "tollgate: %s\n", err);
        return 1;
    }
    enum tg_log_level level;
    if (tg_log_level_parse(s->config->log_level, &level) == 0) {
        tg_log_set_level(level);
    }
    return 0;
}

static int
open_store(struct serve *s)
{
    if (make_dir(s->config->data_dir) < 0) {
        tg_log_error("cannot create data directory %s: %s", s->config->data_dir, strerror(errno));
        return TG_EIO;
    }
    char err[512];
    char *path = tg_xasprintf("%s/tollgate.db", s->config->data_dir);
    int rc = tg_store_sqlite_open(path, &s->store, err, sizeof(err));
    if (rc < 0) {
        tg_log_error("cannot open the store %s: %s", path, err);
    }
    free(path);
    return rc;
}

static int
start_workers(struct serve *s)
{
    int n = s->config->workers;
    if (n <= 0) {
        n = (int)uv_available_parallelism();
    }
    s->workers = tg_xcalloc((size_t)n, sizeof(*s->workers));
    for (int i = 0; i < n; i++) {
        int rc = tg_worker_start(&s->workers[i], i, s->ledger);
        if (rc < 0) {
            tg_log_error("cannot listen on %s:%d: %s", s->config->listen_host,
                         s->config->listen_port, tg_strerror(rc));
            tg_worker_join(&s->workers[i]);
            return rc;
        }
        s->n_workers = i + 1;
    }
    return 0;
}

static void
stop_workers(struct serve *s)
{
    tg_gateway_set_ready(false);
    for (int i = 0; i < s->n_workers; i++) {
        tg_worker_request_stop(&s->workers[i]);
    }
    for (int i = 0; i < s->n_workers; i++) {
        tg_worker_join(&s->workers[i]);
    }
    s->n_workers = 0;
}

static void
on_signal(uv_signal_t *h, int signum)
{
    tg_log_info("received %s: stopping (finishing in-flight requests)",
                signum == SIGTERM ? "SIGTERM" : "SIGINT");
    uv_stop(h->loop);
}

/* SIGHUP: log rotation. The access log reopens its file; nothing else is reloaded. */
static void
on_hangup(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    tg_log_info("received SIGHUP: reopening the access log");
    tg_access_log_reopen();
}

static void
wait_for_signal(void)
{
    uv_loop_t loop;
    uv_signal_t term;
    uv_signal_t intr;
    uv_signal_t hup;
    uv_loop_init(&loop);
    uv_signal_init(&loop, &term);
    uv_signal_init(&loop, &intr);
    uv_signal_init(&loop, &hup);
    uv_signal_start(&term, on_signal, SIGTERM);
    uv_signal_start(&intr, on_signal, SIGINT);
    uv_signal_start(&hup, on_hangup, SIGHUP);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&term, NULL);
    uv_close((uv_handle_t *)&intr, NULL);
    uv_close((uv_handle_t *)&hup, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

struct seed {
    struct tg_admission *a;
    const char *org_id;
    int64_t period_start_ms;
};

static int
seed_level(const struct tg_spend_rec *r, void *arg)
{
    struct seed *sd = arg;
    enum tg_scope scope = r->key_id != NULL       ? TG_SCOPE_KEY
                          : r->project_id != NULL ? TG_SCOPE_PROJECT
                                                  : TG_SCOPE_ORG;
    const char *id = r->key_id != NULL ? r->key_id : r->project_id ? r->project_id : sd->org_id;
    if (r->cost_micros > 0) {
        sd->a->ops->seed_spend(sd->a, scope, id, sd->period_start_ms, r->cost_micros);
    }
    return 0;
}

struct org_ids {
    char **ids;
    size_t n;
};

/* Store callbacks must not call back into the store: the ids are collected first. */
static int
collect_org_ids(const struct tg_org_rec *r, void *arg)
{
    struct org_ids *o = arg;
    o->ids = tg_xrealloc(o->ids, (o->n + 1) * sizeof(*o->ids));
    o->ids[o->n++] = tg_xstrdup(r->id);
    return 0;
}

/*
 * Admission (policy/admission.h), seeded with this month's spend from the ledger so that a
 * restart keeps every budget's spend. Runs before the workers start, so nothing is admitted
 * against an unseeded budget. (The ledger writer flushes every row at a clean stop.)
 */
static int
start_admission(struct serve *s)
{
    int tz = s->config->budget_tz_offset_minutes;
    int rc = tg_admission_local_new(tz, &s->admission);
    if (rc < 0) {
        tg_log_error("cannot create the admission counters: %s", tg_strerror(rc));
        return rc;
    }
    struct seed sd = {s->admission, NULL, tg_period_start_ms(tg_clock_unix_ms(), tz)};
    struct org_ids orgs = {NULL, 0};
    rc = s->store->ops->orgs_list(s->store, collect_org_ids, &orgs);
    for (size_t i = 0; i < orgs.n; i++) {
        sd.org_id = orgs.ids[i];
        if (rc == 0) {
            rc = s->store->ops->spend_by_level(s->store, orgs.ids[i], sd.period_start_ms,
                                               seed_level, &sd);
        }
        free(orgs.ids[i]);
    }
    free(orgs.ids);
    if (rc < 0) {
        tg_log_error("cannot read this month's spend from the ledger: %s", tg_strerror(rc));
    }
    return rc;
}

static void
log_start(const struct serve *s)
{
    const struct tg_config *c = s->config;
    if (c->is_mock_default) {
        tg_log_warn("no config file and no OPENAI_API_KEY: serving the built-in mock provider "
                    "(set OPENAI_API_KEY or pass --config to reach a real provider)");
    }
    tg_log_info("config: %s; %zu provider(s), %zu model route(s); data in %s", c->source,
                c->n_providers, c->n_models, c->data_dir);
    tg_log_info("listening on %s:%d (%d workers)", c->listen_host, c->listen_port, s->n_workers);
}

/* The notifier: budget alerts from admission's spend, delivered from the store's outbox. */
static int
start_notifier(struct serve *s)
{
    const struct tg_config *c = s->config;
    struct tg_notifier_opts o = {
        .store = s->store,
        .ledger = s->ledger,
        .admission = tg_state_env_get()->admission,
        .smtp = &c->smtp,
        .tz_offset_minutes = c->budget_tz_offset_minutes,
        .interval_ms = c->notify_interval_ms,
        .webhook_timeout_ms = c->webhook_timeout_ms,
    };
    int rc = tg_notifier_start(&o, &s->notifier);
    if (rc < 0) {
        tg_log_error("cannot start the notifier: %s", tg_strerror(rc));
    }
    return rc;
}

static void
teardown(struct serve *s)
{
    stop_workers(s);
    /* The workers were its only writers: every line of a graceful stop is written. */
    tg_access_log_stop();
    /* Before the store closes; undelivered rows stay in the outbox for the next start. */
    tg_notifier_stop(s->notifier);
    if (s->ledger != NULL) {
        tg_ledger_stop(s->ledger);
    }
    tg_state_shutdown();
    if (s->admission != NULL) {
        /* After the workers and the notifier, the only users, have stopped. */
        s->admission->ops->free(s->admission);
    }
    if (s->store != NULL) {
        s->store->ops->close(s->store);
    }
    if (s->prices != NULL) {
        tg_price_table_free(s->prices);
    }
    if (s->pepper_ext != NULL) {
        memset(s->pepper_ext, 0, s->pepper_len);
        free(s->pepper_ext);
    }
    memset(s->pepper, 0, sizeof(s->pepper));
    free(s->workers);
    tg_config_free(s->config);
}

int
tg_serve_main(int argc, char **argv)
{
    struct serve s;
    memset(&s, 0, sizeof(s));
    signal(SIGPIPE, SIG_IGN);
    int rc = load_config(&s, argc, argv);
    if (rc != 0) {
        return rc;
    }
    rc = open_store(&s);
    rc = rc < 0 ? rc : load_pepper(&s);
    rc = rc < 0 ? rc : load_prices(&s);
    rc = rc < 0 ? rc : bootstrap(&s);
    rc = rc < 0 ? rc : start_admission(&s);
    if (rc == 0) {
        struct tg_state_env env = {
            .config = s.config,
            .prices = s.prices,
            .store = s.store,
            .pepper = pepper(&s),
            .pepper_len = s.pepper_len,
            .admission = s.admission,
        };
        tg_state_env_set(&env);
        rc = tg_state_reload();
    }
    if (rc == 0) {
        struct tg_ledger_opts lo = {s.config->ledger_batch_rows, s.config->ledger_flush_ms, 100000};
        rc = tg_ledger_start(s.store, &lo, &s.ledger);
    }
    if (rc == 0 && s.config->access_log_path != NULL) {
        rc = tg_access_log_start(s.config->access_log_path, s.config->access_log_queue);
    }
    rc = rc < 0 ? rc : start_workers(&s);
    rc = rc < 0 ? rc : start_notifier(&s);
    if (rc == 0) {
        log_start(&s);
        wait_for_signal();
    }
    teardown(&s);
    if (rc == 0) {
        tg_log_info("stopped; every ledger row written");
    }
    return rc == 0 ? 0 : 1;
}
