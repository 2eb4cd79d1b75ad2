/*
 * state.c: snapshot building and publication (see state.h).
 *
 * A snapshot is built whole from the store on the thread pool and never changed afterwards,
 * so requests read it without locks. Project settings are parsed here, once per reload, so
 * the per-request model check is a short string comparison loop and never touches JSON. The
 * limits of every level (organization, projects, keys) are parsed here too; key limits are
 * sorted by key id so a request finds its key's with one binary search.
 */
#include "gateway/state.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"

static struct tg_state_env env;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct tg_state *current;
static atomic_uint_fast64_t generation;

void
tg_state_env_set(const struct tg_state_env *e)
{
    env = *e;
}

const struct tg_state_env *
tg_state_env_get(void)
{
    return &env;
}

static void
state_free(struct tg_state *s)
{
    for (size_t i = 0; i < s->n_projects; i++) {
        free(s->projects[i].id);
        free(s->projects[i].org_id);
        free(s->projects[i].name);
        free(s->projects[i].environment);
        free(s->projects[i].settings);
        for (size_t m = 0; m < s->projects[i].n_models; m++) {
            free(s->projects[i].models[m]);
        }
        free(s->projects[i].models);
        tg_level_limits_free(&s->projects[i].limits);
        tg_token_policy_free(&s->projects[i].token_policy);
        tg_aliases_free(&s->projects[i].aliases);
    }
    free(s->projects);
    tg_level_limits_free(&s->org_limits);
    for (size_t i = 0; i < s->n_key_limits; i++) {
        free(s->key_limits[i].key_id);
        tg_level_limits_free(&s->key_limits[i].limits);
        tg_token_policy_free(&s->key_limits[i].token_policy);
        tg_aliases_free(&s->key_limits[i].aliases);
    }
    free(s->key_limits);
    free(s->org_id);
    free(s->org_name);
    if (s->keys != NULL) {
        tg_keyring_free(s->keys);
    }
    free(s);
}

void
tg_state_unref(struct tg_state *s)
{
    if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1) {
        state_free(s);
    }
}

static int
add_org(const struct tg_org_rec *r, void *arg)
{
    struct tg_state *s = arg;
    if (s->org_id == NULL) {
        s->org_id = tg_xstrdup(r->id);
        s->org_name = tg_xstrdup(r->name);
    }
    return 0;
}

/*
 * Reads a level's limits. The admin API stores only settings this same parser accepted, so a
 * failure means the store was edited by hand: it is logged loudly and the level runs without
 * limits of its own rather than failing the reload (which would freeze every key change).
 */
static void
parse_limits(const json_t *root, const char *what, const char *id, struct tg_level_limits *out)
{
    char err[200];
    if (tg_level_limits_parse(root, out, err, sizeof(err)) < 0) {
        tg_log_error("state: %s %s: limits ignored: %s", what, id, err);
    }
}

/* A level's token policy and aliases, ignored (logged) when bad, as limits are. */
static void
parse_policy(const json_t *root, const char *what, const char *id, struct tg_token_policy *tp,
             struct tg_aliases *al)
{
    char err[200];
    if (tg_token_policy_parse(root, tp, err, sizeof(err)) < 0) {
        tg_log_error("state: %s %s: token policy ignored: %s", what, id, err);
    }
    if (tg_aliases_parse(root, al, err, sizeof(err)) < 0) {
        tg_log_error("state: %s %s: aliases ignored: %s", what, id, err);
    }
}

/*
 * Reads the allowed models out of a project's settings. The admin API only stores a valid
 * object whose "models" is an array of strings, but the store is input all the same: a
 * malformed text or member is logged and ignored (the project then falls back to the config's
 * list) rather than failing the whole reload, which would freeze every key change.
 */
static void
parse_settings(struct tg_project *p, const char *settings)
{
    p->settings = tg_xstrdup(settings != NULL && settings[0] != '\0' ? settings : "{}");
    char err[160];
    json_t *root = tg_json_parse(p->settings, strlen(p->settings), 16, err, sizeof(err));
    if (!json_is_object(root)) {
        tg_log_warn("state: project %s: settings are not a JSON object; ignored", p->id);
        json_decref(root);
        return;
    }
    json_t *models = json_object_get(root, "models");
    if (models != NULL && !json_is_null(models) && !json_is_array(models)) {
        tg_log_warn("state: project %s: settings.models is not a list; ignored", p->id);
    } else if (json_is_array(models) && json_array_size(models) > 0) {
        p->models = tg_xcalloc(json_array_size(models), sizeof(*p->models));
        size_t i;
        json_t *m;
        json_array_foreach(models, i, m)
        {
            if (json_is_string(m)) {
                p->models[p->n_models++] = tg_xstrdup(json_string_value(m));
            }
        }
    }
    parse_limits(root, "project", p->id, &p->limits);
    parse_policy(root, "project", p->id, &p->token_policy, &p->aliases);
    /* Read once here, not per request: the relay consults them on every call. */
    tg_cache_settings_of_project(p->settings, &p->cache);
    tg_mb_settings_of_project(p->settings, &p->embedding_batching);
    json_t *logging = json_object_get(root, "logging");
    if (logging != NULL && !json_is_object(logging)) {
        tg_log_warn("state: project %s: settings.logging is not an object; ignored", p->id);
    }
    p->is_logging_bodies = json_is_true(json_object_get(logging, "bodies"));
    json_decref(root);
}

static int
add_project(const struct tg_project_rec *r, void *arg)
{
    struct tg_state *s = arg;
    s->projects = tg_xrealloc(s->projects, (s->n_projects + 1) * sizeof(*s->projects));
    struct tg_project *p = &s->projects[s->n_projects++];
    p->id = tg_xstrdup(r->id);
    p->org_id = tg_xstrdup(r->org_id);
    p->name = tg_xstrdup(r->name);
    p->environment = tg_xstrdup(r->environment ? r->environment : "");
    p->created_ms = r->created_ms;
    p->archived_ms = r->archived_ms;
    p->is_archived = r->archived_ms != 0;
    p->settings = NULL;
    p->models = NULL;
    p->n_models = 0;
    memset(&p->limits, 0, sizeof(p->limits));
    memset(&p->token_policy, 0, sizeof(p->token_policy));
    memset(&p->aliases, 0, sizeof(p->aliases));
    p->is_logging_bodies = false;
    parse_settings(p, r->settings);
    p->conf = NULL;
    for (size_t i = 0; i < env.config->n_projects; i++) {
        if (strcmp(env.config->projects[i].name, r->name) == 0) {
            p->conf = &env.config->projects[i];
        }
    }
    return 0;
}

/* The JSON object of a settings document, or NULL (logged) when it is not one. */
static json_t *
doc_root(const struct tg_doc *d)
{
    char err[160];
    json_t *root = tg_json_parse(d->data, strlen(d->data), 16, err, sizeof(err));
    if (!json_is_object(root)) {
        tg_log_error("state: %s %s: not a JSON object; ignored", d->kind, d->id);
        json_decref(root);
        return NULL;
    }
    return root;
}

static int
add_org_settings(const struct tg_doc *d, void *arg)
{
    struct tg_state *s = arg;
    json_t *root = doc_root(d);
    if (root != NULL) {
        tg_level_limits_free(&s->org_limits);
        parse_limits(root, "organization", d->id, &s->org_limits);
        json_decref(root);
    }
    return 0;
}

static int
add_key_settings(const struct tg_doc *d, void *arg)
{
    struct tg_state *s = arg;
    json_t *root = doc_root(d);
    if (root == NULL) {
        return 0;
    }
    s->key_limits = tg_xrealloc(s->key_limits, (s->n_key_limits + 1) * sizeof(*s->key_limits));
    struct tg_key_limits *k = &s->key_limits[s->n_key_limits++];
    k->key_id = tg_xstrdup(d->id);
    parse_limits(root, "key", d->id, &k->limits);
    parse_policy(root, "key", d->id, &k->token_policy, &k->aliases);
    json_decref(root);
    return 0;
}

static int
key_limits_cmp(const void *a, const void *b)
{
    return strcmp(((const struct tg_key_limits *)a)->key_id,
                  ((const struct tg_key_limits *)b)->key_id);
}

/* Reads the organization's and the keys' settings documents into s. */
static int
load_limits(struct tg_store *st, struct tg_state *s)
{
    int rc = st->ops->doc_get(st, "org_settings", s->org_id, add_org_settings, s);
    if (rc == TG_ENOTFOUND) {
        rc = 0;
    }
    rc = rc < 0 ? rc : st->ops->doc_list(st, "key_settings", s->org_id, NULL, add_key_settings, s);
    if (rc == 0 && s->n_key_limits > 1) {
        qsort(s->key_limits, s->n_key_limits, sizeof(*s->key_limits), key_limits_cmp);
    }
    return rc;
}

static int
add_key(const struct tg_key_rec *r, void *arg)
{
    tg_keyring_add(arg, r);
    return 0;
}

int
tg_state_reload(void)
{
    struct tg_state *s = tg_xcalloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    s->config = env.config;
    s->prices = env.prices;
    s->keys = tg_keyring_new();
    struct tg_store *st = env.store;
    int rc = st->ops->orgs_list(st, add_org, s);
    if (rc == 0 && s->org_id == NULL) {
        rc = TG_ENOTFOUND;
    }
    rc = rc < 0 ? rc : st->ops->projects_list(st, s->org_id, add_project, s);
    rc = rc < 0 ? rc : st->ops->keys_list(st, s->org_id, add_key, s->keys);
    rc = rc < 0 ? rc : load_limits(st, s);
    if (rc < 0) {
        tg_log_error("state: reload failed: %s", tg_strerror(rc));
        state_free(s);
        return rc;
    }
    pthread_mutex_lock(&lock);
    struct tg_state *old = current;
    s->generation = atomic_load(&generation) + 1;
    current = s;
    atomic_store(&generation, s->generation);
    pthread_mutex_unlock(&lock);
    tg_state_unref(old);
    return 0;
}

uint64_t
tg_state_generation(void)
{
    return atomic_load_explicit(&generation, memory_order_acquire);
}

struct tg_state *
tg_state_acquire(void)
{
    pthread_mutex_lock(&lock);
    struct tg_state *s = current;
    if (s != NULL) {
        atomic_fetch_add(&s->refs, 1);
    }
    pthread_mutex_unlock(&lock);
    return s;
}

void
tg_state_shutdown(void)
{
    pthread_mutex_lock(&lock);
    struct tg_state *old = current;
    current = NULL;
    pthread_mutex_unlock(&lock);
    tg_state_unref(old);
}

const struct tg_project *
tg_state_project(const struct tg_state *s, const char *id_or_name)
{
    for (size_t i = 0; i < s->n_projects; i++) {
        if (strcmp(s->projects[i].id, id_or_name) == 0 ||
            strcmp(s->projects[i].name, id_or_name) == 0) {
            return &s->projects[i];
        }
    }
    return NULL;
}

const struct tg_level_limits *
tg_state_key_limits(const struct tg_state *s, const char *key_id)
{
    if (s == NULL || key_id == NULL || s->n_key_limits == 0) {
        return NULL;
    }
    struct tg_key_limits want = {.key_id = (char *)key_id};
    const struct tg_key_limits *k =
        bsearch(&want, s->key_limits, s->n_key_limits, sizeof(*s->key_limits), key_limits_cmp);
    return k != NULL ? &k->limits : NULL;
}

const struct tg_key_limits *
tg_state_key_settings(const struct tg_state *s, const char *key_id)
{
    if (s == NULL || key_id == NULL || s->n_key_limits == 0) {
        return NULL;
    }
    struct tg_key_limits want = {.key_id = (char *)key_id};
    return bsearch(&want, s->key_limits, s->n_key_limits, sizeof(*s->key_limits), key_limits_cmp);
}

bool
tg_project_allows(const struct tg_project *p, const struct tg_config *c, const char *model)
{
    if (p->n_models > 0) {
        for (size_t i = 0; i < p->n_models; i++) {
            if (strcmp(p->models[i], model) == 0) {
                return true;
            }
        }
        return false;
    }
    if (p->conf != NULL && p->conf->n_models > 0) {
        for (size_t i = 0; i < p->conf->n_models; i++) {
            if (strcmp(p->conf->models[i], model) == 0) {
                return true;
            }
        }
        return false;
    }
    return tg_config_route(c, model) != NULL;
}
