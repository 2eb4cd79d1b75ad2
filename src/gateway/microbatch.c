/*
 * microbatch.c: settings, merge and split of embedding micro-batches (see microbatch.h).
 *
 * Everything here works on parsed JSON: a batch is formed only for requests the fast path
 * already validated, and the merge and split run once per batch, not per request byte.
 */
#include "gateway/microbatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"

static int
fail(char *err, size_t cap, const char *msg)
{
    snprintf(err, cap, "%s", msg);
    return -1;
}

static bool
int_in(const json_t *o, const char *name, int lo, int hi, int *out)
{
    const json_t *v = json_object_get(o, name);
    if (v == NULL) {
        return true; /* keeps the default */
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        return false;
    }
    *out = (int)json_integer_value(v);
    return true;
}

int
tg_mb_settings_parse(const json_t *v, struct tg_mb_settings *out, char *err, size_t err_cap)
{
    out->enabled = false;
    out->window_ms = 5;
    out->max_inputs = 256;
    if (!json_is_object(v)) {
        return fail(err, err_cap, "embedding_batching must be an object.");
    }
    const char *name;
    const json_t *m;
    json_object_foreach((json_t *)v, name, m)
    {
        if (strcmp(name, "enabled") != 0 && strcmp(name, "window_ms") != 0 &&
            strcmp(name, "max_inputs") != 0) {
            snprintf(err, err_cap, "embedding_batching has no member `%s`.", name);
            return -1;
        }
    }
    const json_t *en = json_object_get(v, "enabled");
    if (en != NULL && !json_is_boolean(en)) {
        return fail(err, err_cap, "embedding_batching.enabled must be true or false.");
    }
    out->enabled = json_is_true(en);
    if (!int_in(v, "window_ms", 1, TG_MB_WINDOW_MS_MAX, &out->window_ms)) {
        return fail(err, err_cap, "embedding_batching.window_ms must be an integer from 1 to 50.");
    }
    if (!int_in(v, "max_inputs", 1, TG_MB_MAX_INPUTS_MAX, &out->max_inputs)) {
        return fail(err, err_cap,
                    "embedding_batching.max_inputs must be an integer from 1 to 2048.");
    }
    return 0;
}

void
tg_mb_settings_of_project(const char *settings_json, struct tg_mb_settings *out)
{
    memset(out, 0, sizeof(*out));
    if (settings_json == NULL || strstr(settings_json, "embedding_batching") == NULL) {
        return; /* the common case: no parse */
    }
    json_t *root = json_loads(settings_json, 0, NULL);
    const json_t *v = json_object_get(root, "embedding_batching");
    char err[128];
    if (v == NULL || tg_mb_settings_parse(v, out, err, sizeof(err)) != 0) {
        out->enabled = false;
    }
    json_decref(root);
}

void
tg_mb_split(int64_t total, const int64_t *weights, size_t n, int64_t *out)
{
    if (n == 0) {
        return;
    }
    long double sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += weights[i] > 0 ? (long double)weights[i] : 0;
    }
    int64_t given = 0;
    long double *frac = tg_xcalloc(n, sizeof(*frac));
    for (size_t i = 0; i < n; i++) {
        long double w = sum > 0 ? (weights[i] > 0 ? (long double)weights[i] : 0) : 1;
        long double exact = (long double)total * w / (sum > 0 ? sum : (long double)n);
        out[i] = (int64_t)exact;
        frac[i] = exact - (long double)out[i];
        given += out[i];
    }
    /* The remainder is smaller than n: one more token each to the largest fractions. */
    for (int64_t left = total - given; left > 0; left--) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++) {
            if (frac[i] > frac[best]) {
                best = i;
            }
        }
        out[best]++;
        frac[best] = -1;
    }
    free(frac);
}

static bool
is_token_array(const json_t *v)
{
    if (!json_is_array(v) || json_array_size(v) == 0) {
        return false;
    }
    size_t i;
    const json_t *t;
    json_array_foreach(v, i, t)
    {
        if (!json_is_integer(t)) {
            return false;
        }
    }
    return true;
}

static int64_t
input_bytes(const json_t *v)
{
    if (json_is_string(v)) {
        return (int64_t)json_string_length(v);
    }
    /* A token array: its text as sent stands for its size. */
    char *s = json_dumps(v, JSON_COMPACT);
    int64_t n = s != NULL ? (int64_t)strlen(s) : 0;
    free(s);
    return n;
}

int
tg_mb_req_parse(const char *body, size_t len, struct tg_mb_req *out)
{
    memset(out, 0, sizeof(*out));
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *input = json_object_get(root, "input");
    json_t *inputs = NULL;
    if (json_is_string(input) || is_token_array(input)) {
        inputs = json_array();
        json_array_append(inputs, input);
    } else if (json_is_array(input) && json_array_size(input) > 0) {
        size_t i;
        json_t *e;
        json_array_foreach(input, i, e)
        {
            if (!json_is_string(e) && !is_token_array(e)) {
                json_decref(root);
                return TG_EINVAL;
            }
        }
        inputs = json_incref(input);
    } else {
        json_decref(root);
        return TG_EINVAL;
    }
    json_object_del(root, "input");
    json_object_del(root, "user"); /* who asked does not change the vectors */
    out->key = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    if (out->key == NULL) {
        json_decref(inputs);
        json_decref(root);
        return TG_ENOMEM;
    }
    out->body = root;
    out->inputs = inputs;
    out->n_inputs = json_array_size(inputs);
    size_t i;
    json_t *e;
    json_array_foreach(inputs, i, e)
    {
        out->weight += input_bytes(e);
    }
    return 0;
}

void
tg_mb_req_deinit(struct tg_mb_req *r)
{
    json_decref(r->body);
    json_decref(r->inputs);
    free(r->key);
    memset(r, 0, sizeof(*r));
}

int
tg_mb_merge(const struct tg_mb_req *const *reqs, size_t n, struct tg_buf *out)
{
    if (n == 0) {
        return TG_EINVAL;
    }
    json_t *body = json_deep_copy(reqs[0]->body);
    json_t *all = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_extend(all, reqs[i]->inputs);
    }
    json_object_set_new(body, "input", all);
    int rc = tg_json_dump_buf(body, out);
    json_decref(body);
    return rc;
}

/* The data items of an answer, by their "index" (the order providers answer in is not
 * promised); NULL unless every input from 0 to want - 1 has exactly one. */
static json_t **
items_by_index(const json_t *data, size_t want)
{
    if (!json_is_array(data) || json_array_size(data) != want) {
        return NULL;
    }
    json_t **by = tg_xcalloc(want, sizeof(*by));
    size_t i;
    json_t *e;
    json_array_foreach(data, i, e)
    {
        json_t *ix = json_object_get(e, "index");
        json_int_t k = json_is_integer(ix) ? json_integer_value(ix) : -1;
        if (!json_is_object(e) || k < 0 || (size_t)k >= want || by[k] != NULL) {
            free(by);
            return NULL;
        }
        by[k] = e;
    }
    return by;
}

int
tg_mb_split_answer(const char *body, size_t len, const struct tg_mb_req *const *reqs, size_t n,
                   struct tg_buf *outs, int64_t *prompt, int64_t *total)
{
    size_t want = 0;
    for (size_t i = 0; i < n; i++) {
        want += reqs[i]->n_inputs;
    }
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t **by = items_by_index(json_object_get(root, "data"), want);
    if (by == NULL) {
        json_decref(root);
        return TG_EUPSTREAM;
    }
    json_t *usage = json_object_get(root, "usage");
    *total = tg_json_int(usage, "prompt_tokens", 0);
    int64_t *weights = tg_xcalloc(n, sizeof(*weights));
    for (size_t i = 0; i < n; i++) {
        weights[i] = reqs[i]->weight;
    }
    tg_mb_split(*total, weights, n, prompt);
    free(weights);
    json_t *model = json_object_get(root, "model");
    size_t at = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *data = json_array();
        for (size_t k = 0; k < reqs[i]->n_inputs; k++) {
            json_t *item = json_copy(by[at + k]);
            json_object_set_new(item, "index", json_integer((json_int_t)k));
            json_array_append_new(data, item);
        }
        at += reqs[i]->n_inputs;
        json_t *one = json_object();
        json_object_set_new(one, "object", json_string("list"));
        json_object_set_new(one, "data", data);
        if (model != NULL) {
            json_object_set(one, "model", model);
        }
        json_t *u = json_object();
        json_object_set_new(u, "prompt_tokens", json_integer(prompt[i]));
        json_object_set_new(u, "total_tokens", json_integer(prompt[i]));
        json_object_set_new(one, "usage", u);
        rc = tg_json_dump_buf(one, &outs[i]);
        json_decref(one);
    }
    free(by);
    json_decref(root);
    return rc;
}
