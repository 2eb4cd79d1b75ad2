/*
 * proxy.c: the inference path (see proxy.h): its entry points, decoding and policy, models.
 *
 * One struct call per request (gateway/proxy_int.h), allocated in the request's arena: the
 * request is finished only at the very end (after the upstream call ended and the ledger row
 * was pushed), so the arena outlives every callback that uses the call. A client that leaves
 * early does not end the call: the relay (proxy_relay.c) keeps reading the upstream (up to
 * disconnect_drain_ms) for the usage, then settles with status 499.
 *
 * The steps of a request: decode the body (one validating scan, jansson as the fallback),
 * apply the token policy and aliases, route, admit (proxy_admit.c), consult the response cache
 * (proxy_cache.c), then go upstream, alone or in an embeddings micro-batch (proxy_mb.c).
 */
#include "gateway/proxy.h"

#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"
#include "gateway/policies.h"
#include "gateway/proxy_int.h"

_Static_assert(F_COUNT <= TG_JSON_MAX_NAMES, "decode finds the fields in one tg_json_members pass");

const char *const proxy_field_names[F_COUNT] = {
    "model",
    "stream",
    "stream_options",
    "n",
    "best_of",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "messages",
    "prompt",
    "input",
    "instructions",
};

/* ---- small helpers ------------------------------------------------------------------- */

static void
call_cleanup(void *arg)
{
    struct call *c = arg;
    if (c->body != NULL) {
        json_decref(c->body);
    }
    tg_buf_deinit(&c->rewritten);
    tg_buf_deinit(&c->resp);
    tg_buf_deinit(&c->out);
    tg_buf_deinit(&c->cache_raw);
    tg_sse_reader_deinit(&c->sse);
    tg_mb_req_deinit(&c->mbreq);
    tg_state_unref(c->state);
}

static int
bad_request(struct tg_http_req *req, const char *message, const char *param)
{
    return tg_http_respond_error(req, 400, message, "invalid_request_error", param, NULL);
}

/* ---- decoding and policy ------------------------------------------------------------- */

enum kind
proxy_kind_of_span(struct tg_json_span v)
{
    if (v.p == NULL) {
        return K_ABSENT;
    }
    switch (v.p[0]) {
    case 'n':
        return K_NULL;
    case 't':
        return K_TRUE;
    case 'f':
        return K_FALSE;
    case '"':
        return K_STRING;
    case '[':
        return K_ARRAY;
    case '{':
        return K_OBJECT;
    default:
        break;
    }
    /* Digits only, and few enough to fit an int64 as jansson would read it. */
    bool is_uint = v.len <= 18;
    for (size_t i = 0; i < v.len && is_uint; i++) {
        is_uint = v.p[i] >= '0' && v.p[i] <= '9';
    }
    return is_uint ? K_UINT : K_NUMBER;
}

static enum kind
kind_of_json(const json_t *v)
{
    switch (v == NULL ? JSON_NULL : json_typeof(v)) {
    case JSON_NULL:
        return v == NULL ? K_ABSENT : K_NULL;
    case JSON_TRUE:
        return K_TRUE;
    case JSON_FALSE:
        return K_FALSE;
    case JSON_STRING:
        return K_STRING;
    case JSON_ARRAY:
        return K_ARRAY;
    case JSON_OBJECT:
        return K_OBJECT;
    case JSON_INTEGER:
        return json_integer_value(v) >= 0 ? K_UINT : K_NUMBER;
    default:
        return K_NUMBER;
    }
}

static enum kind
field_kind(const struct call *c, enum field f)
{
    return c->body != NULL ? kind_of_json(json_object_get(c->body, proxy_field_names[f]))
                           : proxy_kind_of_span(c->fields[f]);
}

/* stream_options.include_usage is true (stream_options already checked to be an object). */
static bool
include_usage_is_true(const struct call *c)
{
    if (c->body != NULL) {
        return json_is_true(
            json_object_get(json_object_get(c->body, "stream_options"), "include_usage"));
    }
    static const char *const name[1] = {"include_usage"};
    struct tg_json_span v;
    struct tg_json_span so = c->fields[F_STREAM_OPTIONS];
    return tg_json_members(so.p, so.len, name, 1, &v) >= 0 && proxy_kind_of_span(v) == K_TRUE;
}

/* Checks the types of the fields the gateway reads. Returns false after answering 400. */
static bool
check_fields(struct call *c)
{
    struct tg_http_req *req = c->req;
    enum kind k = field_kind(c, F_STREAM);
    if (k != K_ABSENT && k != K_NULL && k != K_TRUE && k != K_FALSE) {
        bad_request(req, "Invalid type for 'stream': expected a boolean.", "stream");
        return false;
    }
    c->is_stream = k == K_TRUE;
    if (c->is_stream && (c->api == TG_API_EMBEDDINGS || c->api == TG_API_MODERATIONS)) {
        bad_request(req, "Streaming is not supported on this endpoint.", "stream");
        return false;
    }
    k = field_kind(c, F_STREAM_OPTIONS);
    if (k != K_ABSENT && k != K_NULL) {
        if (!c->is_stream) {
            bad_request(req,
                        "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                        "stream_options");
            return false;
        }
        if (k != K_OBJECT) {
            bad_request(req, "Invalid type for 'stream_options': expected an object.",
                        "stream_options");
            return false;
        }
        c->wants_usage = include_usage_is_true(c);
    }
    /* The field each endpoint cannot do without, with the JSON types it takes: refused
     * here so a malformed call costs no upstream round trip. */
    static const struct {
        enum field field;
        bool may_be_string;
    } required[TG_API_COUNT] = {
        [TG_API_CHAT] = {F_MESSAGES, false},    [TG_API_COMPLETIONS] = {F_PROMPT, true},
        [TG_API_EMBEDDINGS] = {F_INPUT, true},  [TG_API_RESPONSES] = {F_COUNT, false},
        [TG_API_MODERATIONS] = {F_INPUT, true},
    };
    enum field need = required[c->api].field;
    if (need != F_COUNT) {
        k = field_kind(c, need);
        bool may_be_string = required[c->api].may_be_string;
        if (k != K_ARRAY && !(may_be_string && k == K_STRING)) {
            char msg[160];
            if (k == K_ABSENT) {
                snprintf(msg, sizeof(msg), "Missing required parameter: '%s'.",
                         proxy_field_names[need]);
            } else {
                snprintf(msg, sizeof(msg), "Invalid type for '%s': expected %s.",
                         proxy_field_names[need],
                         may_be_string ? "a string or an array" : "an array");
            }
            bad_request(req, msg, proxy_field_names[need]);
            return false;
        }
    }
    for (enum field f = F_N; f <= F_MAX_OUTPUT_TOKENS; f++) {
        k = field_kind(c, f);
        if (k != K_ABSENT && k != K_NULL && k != K_UINT) {
            char msg[128];
            snprintf(msg, sizeof(msg), "Invalid value for '%s': expected a non-negative integer.",
                     proxy_field_names[f]);
            bad_request(req, msg, proxy_field_names[f]);
            return false;
        }
    }
    return true;
}

/* Parses the body with jansson (the fast path's fallback). Returns false after answering. */
static bool
parse_body(struct call *c)
{
    char err[256];
    c->body = tg_json_parse(c->req->body.data, c->req->body.len, c->state->config->max_json_depth,
                            err, sizeof(err));
    if (c->body == NULL) {
        char msg[320];
        snprintf(msg, sizeof(msg), "We could not parse the JSON body of your request. (%s)", err);
        bad_request(c->req, msg, NULL);
        return false;
    }
    if (!json_is_object(c->body)) {
        bad_request(c->req, "The request body must be a JSON object.", NULL);
        return false;
    }
    return true;
}

/* One change to the client's bytes: the span [at, at + len) becomes the model's new name
 * (field F_MODEL) or an integer (an output cap, n). */
struct edit {
    const char *at;
    size_t len;
    enum field field;
};

static int
append_edit(struct call *c, struct tg_buf *o, enum field f)
{
    if (f == F_MODEL) {
        return tg_json_quote(o, c->upstream_model);
    }
    return tg_buf_appendf(o, "%lld", (long long)c->field_value[f]);
}

/* The fast path's rewrite: the client's bytes with members inserted after the opening brace
 * (stream_options, an injected output cap) and values replaced in place (the model, a
 * clamped cap or n), without a parse tree. */
static int
splice_upstream_body(struct call *c, bool rename, bool add_usage)
{
    const char *text = c->req->body.data;
    size_t len = c->req->body.len;
    const char *open = memchr(text, '{', len); /* the scan saw an object, so it is there */
    struct tg_buf *o = &c->rewritten;
    int rc = tg_buf_append(o, text, (size_t)(open + 1 - text));
    if (add_usage) {
        rc = rc < 0 ? rc : tg_buf_append_str(o, "\"stream_options\":{\"include_usage\":true},");
    }
    struct edit edits[F_COUNT];
    size_t n = 0;
    if (rename) {
        edits[n++] = (struct edit){c->fields[F_MODEL].p, c->fields[F_MODEL].len, F_MODEL};
    }
    for (enum field f = F_N; f <= F_MAX_OUTPUT_TOKENS; f++) {
        if (!c->write_field[f]) {
            continue;
        }
        if (c->fields[f].p == NULL) {
            /* The object has members (model at least), so a trailing comma is right. */
            rc = rc < 0 ? rc : tg_buf_appendf(o, "\"%s\":", proxy_field_names[f]);
            rc = rc < 0 ? rc : append_edit(c, o, f);
            rc = rc < 0 ? rc : tg_buf_append_str(o, ",");
        } else {
            edits[n++] = (struct edit){c->fields[f].p, c->fields[f].len, f};
        }
    }
    /* Replacements in text order (a handful: insertion sort). */
    for (size_t i = 1; i < n; i++) {
        for (size_t j = i; j > 0 && edits[j].at < edits[j - 1].at; j--) {
            struct edit e = edits[j];
            edits[j] = edits[j - 1];
            edits[j - 1] = e;
        }
    }
    const char *rest = open + 1;
    for (size_t i = 0; i < n; i++) {
        rc = rc < 0 ? rc : tg_buf_append(o, rest, (size_t)(edits[i].at - rest));
        rc = rc < 0 ? rc : append_edit(c, o, edits[i].field);
        rest = edits[i].at + edits[i].len;
    }
    return rc < 0 ? rc : tg_buf_append(o, rest, (size_t)(text + len - rest));
}

/* Rewrites the body for the provider when needed; otherwise sends the client's bytes. */
int
proxy_prepare_upstream_body(struct call *c)
{
    bool rename = strcmp(c->model, c->upstream_model) != 0;
    bool add_usage =
        c->is_stream && !c->wants_usage && (c->api == TG_API_CHAT || c->api == TG_API_COMPLETIONS);
    bool rewrite = c->is_policy_rewritten;
    for (enum field f = F_N; f <= F_MAX_OUTPUT_TOKENS; f++) {
        rewrite = rewrite || c->write_field[f];
    }
    if (!rename && !add_usage && !rewrite) {
        c->upstream_body = c->req->body.data;
        c->upstream_body_len = c->req->body.len;
        return 0;
    }
    int rc;
    if (c->body == NULL && !(add_usage && c->fields[F_STREAM_OPTIONS].p != NULL)) {
        rc = splice_upstream_body(c, rename, add_usage);
    } else {
        /* stream_options given without include_usage: merged by jansson (rare). */
        if (c->body == NULL && !parse_body(c)) {
            return TG_EPARSE;
        }
        if (rename) {
            json_object_set_new(c->body, "model", json_string(c->upstream_model));
        }
        if (add_usage) {
            json_t *so = json_object_get(c->body, "stream_options");
            if (!json_is_object(so)) {
                so = json_object();
                json_object_set_new(c->body, "stream_options", so);
            }
            json_object_set_new(so, "include_usage", json_true());
        }
        for (enum field f = F_N; f <= F_MAX_OUTPUT_TOKENS; f++) {
            if (c->write_field[f]) {
                json_object_set_new(c->body, proxy_field_names[f], json_integer(c->field_value[f]));
            }
        }
        rc = tg_json_dump_buf(c->body, &c->rewritten);
    }
    c->upstream_body = c->rewritten.data;
    c->upstream_body_len = c->rewritten.len;
    return rc;
}

/* ---- entry points ---------------------------------------------------------------------- */

static bool
decode(struct call *c)
{
    struct tg_http_req *req = c->req;
    if (req->body.len == 0) {
        bad_request(req, "The request body is empty; send a JSON object.", NULL);
        return false;
    }
    const char *model = NULL;
    size_t model_len = 0;
    /* A body too deep, invalid or with \u escapes takes the parser, which says what is wrong. */
    bool is_fast =
        tg_json_members_depth(req->body.data, req->body.len, c->state->config->max_json_depth,
                              proxy_field_names, F_COUNT, c->fields) == 1 &&
        (c->fields[F_MODEL].p == NULL ||
         tg_json_span_plain_string(c->fields[F_MODEL], &model, &model_len));
    if (is_fast) {
        if (model != NULL) {
            char *m = tg_arena_alloc(&req->arena, model_len + 1);
            memcpy(m, model, model_len);
            m[model_len] = '\0';
            model = m;
        }
    } else {
        if (!parse_body(c)) {
            return false;
        }
        model = tg_json_str(c->body, "model");
        /* A copy: rewriting "model" for the provider frees the body's string. */
        model = model != NULL ? tg_arena_strdup(&req->arena, model) : NULL;
    }
    enum kind k = field_kind(c, F_MODEL);
    if (k == K_ABSENT && c->api == TG_API_MODERATIONS) {
        c->model = "omni-moderation-latest";
    } else if (k != K_STRING || model == NULL) {
        bad_request(req,
                    k == K_ABSENT ? "You must provide a model parameter."
                                  : "Invalid type for 'model': expected a string.",
                    "model");
        return false;
    } else {
        c->model = model;
    }
    return check_fields(c);
}

/* The key's and project's token policy and aliases (gateway/policies.h), on the parsed body.
 * Returns false after answering. */
static bool
apply_policies(struct call *c)
{
    if (!tg_policies_touch(c->state, c->project, c->key->id, c->model)) {
        return true;
    }
    if (c->body == NULL && !parse_body(c)) {
        return false;
    }
    struct tg_policy_outcome o;
    if (tg_policies_apply(c->state, c->project, c->key->id, c->api, c->model, c->body, &o) < 0) {
        tg_http_respond_error(c->req, o.status, o.message, "invalid_request_error", o.param,
                              o.status == 404 ? "model_not_found" : NULL);
        return false;
    }
    if (o.is_alias) {
        c->model_asked = c->model;
        c->model = tg_arena_strdup(&c->req->arena, o.model);
    }
    c->is_policy_rewritten = true;
    if (o.header[0] != '\0' && c->n_pass < MAX_PASS_HEADERS) {
        c->pass[c->n_pass].name = "x-tollgate-policy";
        c->pass[c->n_pass].value = tg_arena_strdup(&c->req->arena, o.header);
        c->n_pass++;
    }
    /* The policy may have changed n, the caps or stream-independent members: re-check. */
    return check_fields(c);
}

/* The dearest of the route's price and its fallbacks' prices, field by field: an upper bound
 * of whichever model ends up answering, so the reservation covers every candidate. */
static void
bound_price(struct call *c)
{
    const struct tg_model_route *r = c->route;
    c->has_bound_price = false;
    if (r->n_fallbacks == 0 || c->price == NULL) {
        return;
    }
    struct tg_price *b = &c->bound_price;
    *b = *c->price;
    for (size_t i = 0; i < r->n_fallbacks; i++) {
        const struct tg_model_route *fr = tg_config_route(c->state->config, r->fallbacks[i]);
        const struct tg_price *p = tg_price_lookup(c->state->prices, r->fallbacks[i]);
        if (p == NULL && fr != NULL) {
            p = tg_price_lookup(c->state->prices, fr->upstream_model);
        }
        if (p != NULL) {
            b->input_micros = p->input_micros > b->input_micros ? p->input_micros : b->input_micros;
            b->cached_input_micros = p->cached_input_micros > b->cached_input_micros
                                         ? p->cached_input_micros
                                         : b->cached_input_micros;
            b->output_micros =
                p->output_micros > b->output_micros ? p->output_micros : b->output_micros;
        }
    }
    c->has_bound_price = true;
}

static bool
route(struct call *c)
{
    const struct tg_config *cfg = c->state->config;
    const struct tg_model_route *r = NULL;
    if (tg_project_allows(c->project, cfg, c->model)) {
        r = tg_config_route(cfg, c->model);
    }
    if (r == NULL) {
        char msg[256];
        snprintf(msg, sizeof(msg), "The model `%s` does not exist or you do not have access to it.",
                 c->model);
        tg_http_respond_error(c->req, 404, msg, "invalid_request_error", NULL, "model_not_found");
        return false;
    }
    c->provider = tg_config_provider(cfg, r->provider);
    c->upstream_model = strcmp(r->name, "*") == 0 ? c->model : r->upstream_model;
    c->price = tg_price_lookup(c->state->prices, c->model);
    if (c->price == NULL) {
        c->price = tg_price_lookup(c->state->prices, c->upstream_model);
    }
    c->first_route = c->route = r;
    c->dep = -1;
    bound_price(c);
    return c->provider != NULL;
}

void
tg_proxy_handle(struct tg_worker *w, struct tg_http_req *req, enum tg_api api,
                struct tg_state *state, const struct tg_key_entry *key,
                const struct tg_project *project)
{
    struct call *c = tg_arena_alloc(&req->arena, sizeof(*c));
    c->w = w;
    c->req = req;
    c->api = api;
    c->key = key;
    c->project = project;
    /* The project's "logging": {"bodies": true}: settle hands the bodies to the access log. */
    c->is_body_logged = project->is_logging_bodies;
    c->state = state;
    atomic_fetch_add(&state->refs, 1);
    c->admitted_ms = tg_clock_unix_ms();
    c->is_empty = true; /* until output is seen; counted only with a finish_reason */
    tg_buf_init(&c->rewritten, 0);
    tg_buf_init(&c->resp, state->config->max_response_bytes);
    tg_buf_init(&c->out, 0);
    tg_buf_init(&c->cache_raw, state->config->max_response_bytes);
    tg_sse_reader_init(&c->sse, state->config->max_sse_event_bytes);
    tg_arena_cleanup_add(&req->arena, call_cleanup, c);

    c->admission = tg_state_env_get()->admission;
    if (!decode(c) || !apply_policies(c) || !route(c) || !proxy_admit_call(c)) {
        return;
    }
    if (proxy_cache_lookup(c)) {
        return;
    }
    proxy_go_upstream(c);
}

/* ---- models ------------------------------------------------------------------------------ */

static void
append_model(struct tg_buf *b, const char *name, const char *owner, bool *first)
{
    tg_buf_append_str(b, *first ? "" : ",");
    *first = false;
    tg_buf_append_str(b, "{\"id\":");
    tg_json_quote(b, name);
    tg_buf_append_str(b, ",\"object\":\"model\",\"created\":0,\"owned_by\":");
    tg_json_quote(b, owner);
    tg_buf_append_str(b, "}");
}

void
tg_proxy_models(struct tg_http_req *req, const struct tg_state *state,
                const struct tg_project *project, const char *model_id)
{
    const struct tg_config *cfg = state->config;
    struct tg_buf b;
    tg_buf_init(&b, 0);
    bool first = true;
    if (model_id == NULL) {
        tg_buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    }
    bool found = false;
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct tg_model_route *r = &cfg->models[i];
        if (strcmp(r->name, "*") == 0 || !tg_project_allows(project, cfg, r->name)) {
            continue;
        }
        if (model_id == NULL || strcmp(model_id, r->name) == 0) {
            append_model(&b, r->name, r->provider, &first);
            found = true;
        }
    }
    if (model_id == NULL) {
        tg_buf_append_str(&b, "]}");
        tg_http_respond(req, 200, "application/json", NULL, 0, b.data, b.len);
    } else if (found) {
        tg_http_respond(req, 200, "application/json", NULL, 0, b.data, b.len);
    } else {
        char msg[256];
        snprintf(msg, sizeof(msg), "The model `%s` does not exist or you do not have access to it.",
                 model_id);
        tg_http_respond_error(req, 404, msg, "invalid_request_error", "model", "model_not_found");
    }
    tg_buf_deinit(&b);
}
