/*
 * proxy_relay.c: the relay of one call's upstream attempts (see proxy_int.h).
 *
 * Relay modes, chosen when the upstream's headers arrive:
 *   SSE     a 2xx event stream for a streaming request: events are parsed on the side and
 *           forwarded verbatim, batched into one write per upstream read;
 *   BUFFER  everything else: the body is collected (capped), validated and answered whole.
 *
 * Routing (policy/router.h) picks a deployment per attempt; an attempt that failed before
 * anything reached the client is retried on another deployment or a fallback route after a
 * back-off. The call ends in proxy_finish, which settles it (one ledger row, admission settled
 * with the same cost, released when the provider did no work, or billed at its bound, the row
 * flagged as estimated, when the provider answered 2xx without readable usage) and answers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "gateway/observe.h"
#include "gateway/proxy_int.h"
#include "monitor/quality.h"

struct retry_timer {
    uv_timer_t t; /* first: the handle's address is the struct's */
    struct call *c;
};

/* ---- small helpers ------------------------------------------------------------------- */

static void
list_add(struct tg_worker *w, struct call *c)
{
    c->prev = NULL;
    c->next = (struct call *)w->calls;
    if (c->next != NULL) {
        c->next->prev = c;
    }
    w->calls = (struct tg_call *)c;
}

static void
list_remove(struct tg_worker *w, struct call *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        w->calls = (struct tg_call *)c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
}

/* What an upstream response header is to the relay. */
enum up_header {
    UH_OTHER,        /* dropped */
    UH_CONTENT_TYPE, /* tells a stream from a buffered answer */
    UH_RETRY_AFTER,  /* passed, and cools the deployment down after a 429 */
    UH_RETRY_AFTER_MS,
    UH_RATELIMIT, /* x-ratelimit-*: passed unless the key has limits of its own */
    UH_PASS,      /* passed to the client as is */
};

/* One look at the first letter, then at most two comparisons: a response has a dozen
 * headers, and this runs for each. */
static enum up_header
classify_header(const char *name)
{
    switch (name[0] | 0x20) { /* ASCII lower case */
    case 'c':
        return strcasecmp(name, "content-type") == 0 ? UH_CONTENT_TYPE : UH_OTHER;
    case 'r':
        if (strcasecmp(name, "retry-after") == 0) {
            return UH_RETRY_AFTER;
        }
        return strcasecmp(name, "retry-after-ms") == 0 ? UH_RETRY_AFTER_MS : UH_OTHER;
    case 'x':
        if (strncasecmp(name, "x-ratelimit-", 12) == 0) {
            return UH_RATELIMIT;
        }
        return strcasecmp(name, "x-should-retry") == 0 ? UH_PASS : UH_OTHER;
    case 'o':
        return strcasecmp(name, "openai-processing-ms") == 0 ? UH_PASS : UH_OTHER;
    default:
        return UH_OTHER;
    }
}

/* ---- settling ------------------------------------------------------------------------ */

static int64_t
estimate_prompt_tokens(const struct call *c)
{
    return (int64_t)(c->req->body.len / 4) + 1;
}

/* A ledger row of c's attempt with what names it filled in (request, key, route, time);
 * the counts, status and cost are left zero for the caller. */
static void
row_begin(const struct call *c, int attempt, struct tg_ledger_row *out)
{
    memset(out, 0, sizeof(*out));
    copy_field(out->request_id, sizeof(out->request_id), c->req->id);
    out->attempt = attempt;
    out->time_ms = c->admitted_ms;
    copy_field(out->org_id, sizeof(out->org_id), c->key->org_id);
    copy_field(out->project_id, sizeof(out->project_id), c->project->id);
    copy_field(out->key_id, sizeof(out->key_id), c->key->id);
    copy_field(out->user_id, sizeof(out->user_id), c->key->owner_user_id);
    copy_field(out->endpoint, sizeof(out->endpoint), tg_api_name(c->api));
    copy_field(out->model_requested, sizeof(out->model_requested),
               c->model_asked != NULL ? c->model_asked : c->model);
    copy_field(out->provider, sizeof(out->provider), c->provider->name);
    copy_field(out->deployment, sizeof(out->deployment), c->upstream_model);
}

static void
settle(struct call *c)
{
    struct tg_ledger_row row;
    row_begin(c, c->attempt > 0 ? c->attempt : 1, &row);
    struct tg_usage u = c->usage;
    bool is_upstream_2xx = c->upstream_status >= 200 && c->upstream_status < 300;
    bool is_complete_stream = c->mode == RELAY_SSE && c->saw_terminal && !c->is_stream_failed;
    if (!u.is_known && c->mode == RELAY_SSE && !is_complete_stream) {
        /* A stream that started but was cut (or the client left and the drain bound ran
         * out) is billed for its prompt and the chunks delivered: never zero. */
        u.prompt_tokens = estimate_prompt_tokens(c);
        u.completion_tokens = c->delivered_chunks;
        row.is_usage_estimated = true;
    } else if (!u.is_known && is_upstream_2xx && c->api != TG_API_MODERATIONS) {
        /* The provider did the work but its usage is missing or garbled: bill the bound
         * (what admission reserved), never a silent zero, and flag the row. */
        u.prompt_tokens = c->prompt_bound;
        u.completion_tokens = c->completion_bound;
        row.is_usage_estimated = true;
    }
    row.prompt_tokens = u.prompt_tokens;
    row.cached_tokens = u.cached_tokens;
    row.completion_tokens = u.completion_tokens;
    row.reasoning_tokens = u.reasoning_tokens;
    row.cost_micros = tg_price_cost_micros(c->price, &u);
    if (c->is_cache_hit) {
        /* Nothing went upstream: no tokens, no cost; the provider column says where the
         * answer came from. */
        row.prompt_tokens = row.cached_tokens = row.completion_tokens = row.reasoning_tokens = 0;
        row.cost_micros = 0;
        row.saved_micros = c->cache_saved_micros;
        u.prompt_tokens = u.completion_tokens = 0;
        copy_field(row.provider, sizeof(row.provider), "cache");
    } else {
        proxy_cache_store(c, &u, row.cost_micros);
    }
    row.status = c->is_client_gone ? 499 : c->client_status;
    row.latency_ms = tg_clock_unix_ms() - c->admitted_ms;
    row.ttft_ms = c->first_byte_us ? (int64_t)((c->first_byte_us - c->req->start_us) / 1000) : -1;
    row.is_stream = c->is_stream;
    copy_field(row.error, sizeof(row.error), c->error);
    tg_ledger_push(c->w->ledger, &row);
    /* The last attempt's time is the upstream share; a cache hit or a call that never went
     * out has none. */
    int64_t upstream_ms = !c->is_cache_hit && c->attempt_start_us != 0
                              ? (int64_t)((tg_clock_mono_us() - c->attempt_start_us) / 1000)
                              : -1;
    struct tg_observation obs = {.row = &row,
                                 .upstream_ms = upstream_ms,
                                 .finish_reason = c->finish_reason,
                                 .is_empty = c->is_empty,
                                 .is_refusal = c->is_refusal,
                                 .is_cache_checked = c->is_cache_checked};
    if (c->is_body_logged) {
        const struct tg_buf *answer = c->mode == RELAY_SSE ? &c->cache_raw : &c->resp;
        obs.request_body = c->req->body.data;
        obs.request_len = c->req->body.len;
        obs.response_body = answer->data;
        obs.response_len = answer->len;
    }
    tg_observe(&obs);
    if (c->is_admitted) {
        c->is_admitted = false;
        if (u.is_known || row.is_usage_estimated) {
            /* The same cost as the ledger row: the budget and the ledger agree. */
            int64_t tokens = add_sat(u.prompt_tokens, u.completion_tokens);
            c->admission->ops->settle(c->admission, c->reservation, tokens, row.cost_micros);
        } else {
            /* No work done (connect error, an error status, nothing delivered). */
            c->admission->ops->release(c->admission, c->reservation);
        }
    }
}

/* ---- answering --------------------------------------------------------------------- */

/* Ends the call: pushes the ledger row, then answers. Answering finishes the request, which
 * frees the arena holding c, so it is the very last thing done with c. */
void
proxy_finish(struct call *c)
{
    if (c->mb != NULL) {
        proxy_mb_answer(c); /* the followers first: c's answer is split among them */
    }
    list_remove(c->w, c);
    settle(c);
    struct tg_http_req *req = c->req;
    if (c->mode == RELAY_SSE) {
        if (c->out.len > 0 && !c->is_client_gone) {
            tg_http_stream_write(req, c->out.data, c->out.len);
        }
        tg_http_stream_end(req);
        return;
    }
    tg_http_respond(req, c->client_status, "application/json", c->pass, c->n_pass,
                    c->resp.data ? c->resp.data : "", c->resp.len);
}

/* Replaces the answer with an OpenAI error object (sent by proxy_finish). */
void
proxy_set_error(struct call *c, int status, const char *type, const char *message)
{
    c->client_status = status;
    c->n_pass = status == 429 || status >= 500 ? c->n_pass : 0;
    copy_field(c->error, sizeof(c->error), message);
    tg_buf_reset(&c->resp);
    tg_json_error_body(&c->resp, message, type, NULL, NULL);
}

static int
upstream_error_status(int err)
{
    return err == TG_ETIMEOUT ? 504 : 502;
}

/* Appends our own in-band error to a stream the upstream cut or spoiled. */
static void
stream_fail(struct call *c, const char *message)
{
    if (c->is_stream_failed) {
        return;
    }
    c->is_stream_failed = true;
    copy_field(c->error, sizeof(c->error), message);
    struct tg_buf *o = &c->out;
    if (c->api == TG_API_RESPONSES) {
        tg_buf_appendf(o,
                       "event: error\ndata: {\"type\":\"error\",\"sequence_number\":%lld,"
                       "\"error\":{\"type\":\"server_error\",\"code\":\"server_error\","
                       "\"message\":",
                       (long long)c->events_sent);
        tg_json_quote(o, message);
        tg_buf_appendf(o,
                       ",\"param\":null}}\n\nevent: response.failed\ndata: "
                       "{\"type\":\"response.failed\",\"sequence_number\":%lld,"
                       "\"response\":{\"id\":",
                       (long long)c->events_sent + 1);
        tg_json_quote(o, c->response_id ? c->response_id : "");
        tg_buf_append_str(o, ",\"object\":\"response\",\"status\":\"failed\",\"error\":{"
                             "\"code\":\"server_error\",\"message\":");
        tg_json_quote(o, message);
        tg_buf_append_str(o, "}}}\n\n");
    } else {
        tg_buf_append_str(o, "data: ");
        tg_json_error_body(o, message, "server_error", NULL, NULL);
        tg_buf_append_str(o, "\n\n");
    }
}

/* ---- upstream callbacks -------------------------------------------------------------- */

/* retry-after (seconds) or retry-after-ms of a 429: how long its deployment cools down. */
static void
note_retry_after(struct call *c, const char *value, bool is_ms)
{
    char *end = NULL;
    double v = strtod(value, &end);
    if (end != value && v >= 0 && v <= 86400000.0 && (is_ms || !c->has_retry_after_ms)) {
        c->retry_after_ms = (uint64_t)(is_ms ? v : v * 1000);
        c->has_retry_after_ms = is_ms; /* the finer header wins, whatever the order */
    }
}

static void
on_headers(int status, const struct tg_upstream_header *headers, size_t n, void *arg)
{
    struct call *c = arg;
    c->upstream_status = status;
    bool is_sse = false;
    for (size_t i = 0; i < n; i++) {
        enum up_header kind = classify_header(headers[i].name);
        switch (kind) {
        case UH_OTHER:
            continue;
        case UH_CONTENT_TYPE:
            is_sse = strstr(headers[i].value, "text/event-stream") != NULL;
            continue;
        case UH_RETRY_AFTER:
        case UH_RETRY_AFTER_MS:
            note_retry_after(c, headers[i].value, kind == UH_RETRY_AFTER_MS);
            break;
        case UH_RATELIMIT:
            if (c->has_own_rl) {
                continue; /* ours (proxy_admit_call) describe the client's limits */
            }
            break;
        case UH_PASS:
            break;
        }
        if (c->n_pass < MAX_PASS_HEADERS) {
            c->pass[c->n_pass].name = tg_arena_strdup(&c->req->arena, headers[i].name);
            c->pass[c->n_pass].value = tg_arena_strdup(&c->req->arena, headers[i].value);
            c->n_pass++;
        }
    }
    if (c->is_stream && is_sse && status >= 200 && status < 300) {
        c->mode = RELAY_SSE;
        c->client_status = status;
        if (!c->is_client_gone) {
            tg_http_stream_begin(c->req, status, "text/event-stream; charset=utf-8", c->pass,
                                 c->n_pass);
        }
    } else {
        c->mode = RELAY_BUFFER;
    }
}

static bool
span_is_empty_array(struct tg_json_span v)
{
    if (v.p == NULL || v.p[0] != '[') {
        return false;
    }
    for (size_t i = 1; i < v.len; i++) {
        if (v.p[i] != ' ' && v.p[i] != '\t' && v.p[i] != '\n' && v.p[i] != '\r') {
            return v.p[i] == ']';
        }
    }
    return false;
}

/*
 * One chat/completions stream event: validated and read by one scan (every chunk of a real
 * stream carries "usage": null, so looking for the word would parse them all). Only a usage
 * object is parsed. Returns false when the event is not a JSON object.
 */
/*
 * Whether a chunk's choices can still change the quality signals: before any content was seen,
 * or when the chunk finishes or refuses. Most chunks of a long answer carry
 * "finish_reason":null after content was seen, and one memmem spares them the JSON walk. A
 * provider that writes the member differently is walked every time: slower, never wrong.
 */
static bool
chunk_has_signal(const struct call *c, struct tg_json_span choices)
{
    static const char null_finish[] = "\"finish_reason\":null";
    static const char refusal[] = "\"refusal\":\"";
    return c->is_empty ||
           memmem(choices.p, choices.len, null_finish, sizeof(null_finish) - 1) == NULL ||
           memmem(choices.p, choices.len, refusal, sizeof(refusal) - 1) != NULL;
}

static bool
note_chunk(struct call *c, const struct tg_sse_event *ev, bool *drop)
{
    static const char *const names[3] = {"usage", "choices", "error"};
    struct tg_json_span v[3];
    if (tg_json_members(ev->data, ev->data_len, names, 3, v) < 0) {
        return false;
    }
    if (v[0].p != NULL && v[0].p[0] == '{') {
        tg_usage_parse_text(c->api, v[0].p, v[0].len, &c->usage);
    }
    if (span_is_empty_array(v[1])) {
        *drop = v[0].p != NULL && v[0].p[0] == '{' && !c->wants_usage;
    } else if (v[1].p != NULL) {
        c->delivered_chunks++;
        if (chunk_has_signal(c, v[1])) {
            tg_quality_choices(v[1], c->finish_reason, sizeof(c->finish_reason), &c->is_empty,
                               &c->is_refusal);
        }
    }
    if (v[2].p != NULL && v[2].p[0] == '{') {
        c->is_stream_failed = true;
    }
    return true;
}

static bool
event_is(const struct tg_sse_event *ev, const char *name)
{
    return strcmp(ev->event, name) == 0;
}

static void
note_responses_event(struct call *c, const struct tg_sse_event *ev)
{
    bool terminal = event_is(ev, "response.completed") || event_is(ev, "response.incomplete") ||
                    event_is(ev, "response.failed");
    if (!terminal && !event_is(ev, "response.created") && !event_is(ev, "error")) {
        if (event_is(ev, "response.output_text.delta")) {
            c->delivered_chunks++;
        }
        return;
    }
    json_t *j = json_loadb(ev->data, ev->data_len, 0, NULL);
    json_t *resp = json_object_get(j, "response");
    if (event_is(ev, "response.created") && c->response_id == NULL) {
        const char *id = tg_json_str(resp, "id");
        c->response_id = id ? tg_arena_strdup(&c->req->arena, id) : NULL;
    } else if (terminal) {
        c->saw_terminal = true;
        tg_usage_parse(TG_API_RESPONSES, json_object_get(resp, "usage"), &c->usage);
        c->is_stream_failed = event_is(ev, "response.failed");
        /* The terminal event carries the whole response: its output gives the signals. */
        static const char *const rnames[1] = {"response"};
        static const char *const qnames[3] = {"output", "status", "incomplete_details"};
        struct tg_json_span r, q[3];
        if (tg_json_members(ev->data, ev->data_len, rnames, 1, &r) >= 0 && r.p != NULL &&
            r.p[0] == '{' && tg_json_members(r.p, r.len, qnames, 3, q) >= 0) {
            tg_quality_responses(q[0], q[1], q[2], c->finish_reason, sizeof(c->finish_reason),
                                 &c->is_empty, &c->is_refusal);
        }
    } else {
        c->is_stream_failed = true;
    }
    json_decref(j);
}

static int
on_event(const struct tg_sse_event *ev, void *arg)
{
    struct call *c = arg;
    if (!ev->has_data || c->is_stream_failed || c->saw_terminal) {
        return 0;
    }
    if (c->provider->ops->keep_event != NULL && !c->provider->ops->keep_event(ev)) {
        return 0;
    }
    bool drop = false;
    if (c->api == TG_API_RESPONSES) {
        if (!tg_json_is_valid(ev->data, ev->data_len)) {
            stream_fail(c, "The upstream sent a malformed stream event.");
            return TG_EPARSE;
        }
        note_responses_event(c, ev);
    } else if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        c->saw_terminal = true;
    } else if (!note_chunk(c, ev, &drop)) {
        stream_fail(c, "The upstream sent a malformed stream event.");
        return TG_EPARSE;
    }
    if (!drop && !c->is_client_gone) {
        c->events_sent++;
        tg_buf_append(&c->out, ev->raw, ev->raw_len);
    }
    return 0;
}

static int
on_data(const char *data, size_t len, void *arg)
{
    struct call *c = arg;
    if (c->first_byte_us == 0) {
        c->first_byte_us = tg_clock_mono_us();
    }
    if (c->is_client_gone && c->mb == NULL &&
        tg_clock_mono_ms() - c->gone_at_ms > c->state->config->disconnect_drain_ms) {
        copy_field(c->error, sizeof(c->error), "client gone; drain bound reached");
        return TG_ECANCELED;
    }
    if (c->mode == RELAY_SSE && (c->is_cache_store || c->is_body_logged) &&
        tg_buf_append(&c->cache_raw, data, len) < 0) {
        c->is_cache_store = false; /* larger than an answer may be: not cached */
        c->is_body_logged = false; /* nor logged whole */
    }
    if (c->mode == RELAY_BUFFER) {
        if (tg_buf_append(&c->resp, data, len) < 0) {
            c->is_too_big = true;
            return TG_ECANCELED;
        }
        return 0;
    }
    int rc = tg_sse_reader_feed(&c->sse, data, len, on_event, c);
    if (rc == TG_ETOOBIG) {
        stream_fail(c, "The upstream sent a stream event larger than the gateway accepts.");
    }
    if (c->is_client_gone) {
        tg_buf_reset(&c->out);
        return rc < 0 ? TG_ECANCELED : 0;
    }
    int w = 0;
    if (c->out.len > 0) {
        w = tg_http_stream_write(c->req, c->out.data, c->out.len);
        tg_buf_reset(&c->out);
    }
    if (rc < 0) {
        return TG_ECANCELED; /* the error event is queued; end the upstream transfer */
    }
    if (w == 1) {
        c->is_paused = true;
        return TG_EAGAIN;
    }
    return 0;
}

/* BUFFER mode end: validate and answer the whole body. */
static void
answer_buffered(struct call *c)
{
    const char *body = c->resp.data ? c->resp.data : "";
    size_t len = c->resp.len;
    int status = c->upstream_status;
    static const char *const names[5] = {"usage", "choices", "output", "status",
                                         "incomplete_details"};
    struct tg_json_span v[5];
    if (status >= 200 && status < 300 && tg_json_members(body, len, names, 5, v) >= 0) {
        /* A valid object: only its usage member is parsed; the quality signals are read
         * from the spans of the answer. */
        if (v[0].p != NULL) {
            tg_usage_parse_text(c->api, v[0].p, v[0].len, &c->usage);
        }
        c->is_empty = true;
        if (c->api == TG_API_RESPONSES) {
            tg_quality_responses(v[2], v[3], v[4], c->finish_reason, sizeof(c->finish_reason),
                                 &c->is_empty, &c->is_refusal);
        } else if (v[1].p != NULL) {
            tg_quality_choices(v[1], c->finish_reason, sizeof(c->finish_reason), &c->is_empty,
                               &c->is_refusal);
        }
        c->error[0] = '\0';
        c->client_status = status;
        return;
    }
    json_t *j = tg_json_parse(body, len, 512, c->error, sizeof(c->error));
    if (j == NULL || !json_is_object(j)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "The upstream provider returned %s (HTTP %d).",
                 len == 0 ? "an empty body" : "a body that is not valid JSON", status);
        json_decref(j);
        proxy_set_error(c, 502, "server_error", msg);
        return;
    }
    if (status >= 200 && status < 300) {
        tg_usage_from_response(c->api, j, &c->usage);
        c->error[0] = '\0';
    } else {
        json_t *e = json_object_get(j, "error");
        const char *m = tg_json_str(e, "message");
        copy_field(c->error, sizeof(c->error), m ? m : "upstream error");
        if (!json_is_object(e)) {
            json_decref(j);
            char msg[160];
            snprintf(msg, sizeof(msg), "The upstream provider failed with HTTP %d.", status);
            proxy_set_error(c, status >= 500 ? 502 : status, "server_error", msg);
            return;
        }
    }
    json_decref(j);
    c->client_status = status;
}

static bool retry(struct call *c, int err, const char *message);

static void
on_done(int err, const char *message, void *arg)
{
    struct call *c = arg;
    c->pcall = NULL;
    if (retry(c, err, message)) {
        return;
    }
    if (c->mode == RELAY_SSE) {
        if (tg_sse_reader_has_partial(&c->sse) && err == 0 && !c->saw_terminal) {
            err = TG_EUPSTREAM;
        }
        if (!c->saw_terminal && !c->is_stream_failed) {
            char msg[200];
            snprintf(msg, sizeof(msg), "The upstream stream ended early: %s",
                     err < 0 ? message : "no end-of-stream marker");
            stream_fail(c, msg);
        }
    } else if (c->is_too_big) {
        proxy_set_error(c, 502, "server_error", "The upstream response exceeded the size limit.");
    } else if (err < 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "The upstream provider %s failed: %s", c->provider->name,
                 message ? message : tg_strerror(err));
        proxy_set_error(c, upstream_error_status(err), "server_error", msg);
    } else {
        answer_buffered(c);
    }
    proxy_finish(c);
}

static void
on_client_abort(struct tg_http_req *req, void *arg)
{
    struct call *c = arg;
    c->is_client_gone = true;
    c->gone_at_ms = tg_clock_mono_ms();
    if (c->is_paused && c->pcall != NULL) {
        c->is_paused = false;
        tg_provider_call_resume(c->provider, c->pcall);
    }
}

static void
on_client_drain(struct tg_http_req *req, void *arg)
{
    struct call *c = arg;
    if (c->is_paused && c->pcall != NULL) {
        c->is_paused = false;
        tg_provider_call_resume(c->provider, c->pcall);
    }
}

static const struct tg_upstream_callbacks callbacks = {on_headers, on_data, on_done};

/* ---- routing: deployments, retries, fallbacks (policy/router.h) ------------------------- */

static uint64_t
route_rnd(void)
{
    static _Thread_local uint64_t x;
    if (x == 0) {
        x = tg_clock_mono_us() | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

/* The next fallback route the project may use and, under a budget, can price; NULL when
 * none is left. Sets next_price. */
static const struct tg_model_route *
next_fallback(struct call *c)
{
    const struct tg_config *cfg = c->state->config;
    while (c->next_fallback < c->first_route->n_fallbacks) {
        const char *name = c->first_route->fallbacks[c->next_fallback++];
        const struct tg_model_route *fr = tg_config_route(cfg, name);
        if (fr == NULL || fr->router == NULL || !tg_project_allows(c->project, cfg, name)) {
            continue;
        }
        const struct tg_price *p = tg_price_lookup(c->state->prices, name);
        if (p == NULL) {
            p = tg_price_lookup(c->state->prices, fr->upstream_model);
        }
        if (p == NULL && c->is_budgeted && c->api != TG_API_MODERATIONS) {
            continue; /* it could not be billed */
        }
        c->next_price = p;
        return fr;
    }
    return NULL;
}

/*
 * Finds the next attempt's target: another deployment of the current route while its
 * max_attempts allow, else the next fallback's. The pick counts as outstanding on the
 * router; apply_target makes it current. Returns false when nothing is left.
 */
static bool
pick_target(struct call *c)
{
    const struct tg_model_route *r = c->route;
    const struct tg_price *price = c->price;
    if (r->router == NULL) { /* a route built by hand: its one provider, once */
        c->next_route = r;
        c->next_dep = -1;
        c->next_provider = c->attempt == 0 ? c->provider : NULL;
        c->next_upstream_model = c->upstream_model;
        c->next_price = price;
        return c->next_provider != NULL;
    }
    uint64_t tried = c->tried;
    int route_attempts = c->route_attempts;
    for (;;) {
        int i = -1;
        if (route_attempts < r->retry_max_attempts) {
            i = tg_router_pick(r->router, tried, tg_clock_mono_ms(), route_rnd());
        }
        if (i >= 0) {
            const struct tg_model_deployment *d = &r->deployments[i];
            c->next_route = r;
            c->next_dep = i;
            c->next_provider = tg_config_provider(c->state->config, d->provider);
            c->next_upstream_model = strcmp(r->name, "*") == 0 ? c->model : d->upstream_model;
            c->next_price = price;
            return true;
        }
        r = next_fallback(c);
        if (r == NULL) {
            return false;
        }
        price = c->next_price;
        tried = 0;
        route_attempts = 0;
    }
}

static void
apply_target(struct call *c)
{
    if (c->next_route != c->route) {
        c->route = c->next_route;
        c->tried = 0;
        c->route_attempts = 0;
    }
    c->dep = c->next_dep;
    if (c->dep >= 0) {
        c->tried |= UINT64_C(1) << c->dep;
    }
    c->route_attempts++;
    c->provider = c->next_provider;
    c->upstream_model = c->next_upstream_model;
    c->price = c->next_price;
}

/* Tells the router how this attempt went (once per pick). */
static void
record_attempt(struct call *c, int err)
{
    if (c->dep < 0 || c->route->router == NULL) {
        return;
    }
    const struct tg_model_route *r = c->route;
    int status = c->upstream_status;
    enum tg_route_outcome o = TG_ROUTE_OK;
    if (c->is_cache_hit || err == TG_ECANCELED || c->provider == NULL) {
        o = TG_ROUTE_ABANDONED;
    } else if (err < 0 || status >= 500) {
        o = TG_ROUTE_FAILED;
    } else if (status == 429) {
        /* A lone deployment without fallbacks keeps serving: cooling it down would only turn
         * the provider's 429 into ours. */
        bool has_other = r->n_deployments > 1 || c->first_route->n_fallbacks > 0;
        o = has_other ? TG_ROUTE_THROTTLED : TG_ROUTE_ABANDONED;
    }
    int64_t ttft_ms =
        c->first_byte_us ? (int64_t)((c->first_byte_us - c->attempt_start_us) / 1000) : -1;
    tg_router_record(r->router, c->dep, o, ttft_ms, c->retry_after_ms, tg_clock_mono_ms());
    c->dep = -1;
}

/* The ledger row of an attempt that failed and is retried: no usage, no cost. */
static void
push_attempt_row(struct call *c, int status, const char *error)
{
    struct tg_ledger_row row;
    row_begin(c, c->attempt, &row);
    row.status = status;
    row.latency_ms = tg_clock_unix_ms() - c->admitted_ms;
    row.ttft_ms = -1;
    row.is_stream = c->is_stream;
    copy_field(row.error, sizeof(row.error), error);
    tg_ledger_push(c->w->ledger, &row);
}

/* Nothing to try: 503 (the ledger row says why; admission is released by settle). */
static void
no_deployment(struct call *c)
{
    char msg[768];
    snprintf(msg, sizeof(msg),
             "No deployment of model `%s` is available now (circuit open or cooling down after "
             "rate limits); try again shortly.",
             c->model);
    /* When every deployment of the route is out for good (its provider's key was missing at
     * start), waiting will not help: say which provider and which key reference. */
    const struct tg_router *rt = c->route != NULL ? c->route->router : NULL;
    const char *why = rt != NULL ? tg_router_unavailable(rt, 0) : NULL;
    for (size_t i = 1; why != NULL && i < tg_router_size(rt); i++) {
        why = tg_router_unavailable(rt, i) != NULL ? why : NULL;
    }
    if (why != NULL) {
        snprintf(msg, sizeof(msg),
                 "No deployment of model `%s` is available: %s. The operator must provide the "
                 "key and restart the gateway.",
                 c->model, why);
    }
    proxy_set_error(c, 503, "server_error", msg);
    c->mode = RELAY_BUFFER;
    proxy_finish(c);
}

static void
start_attempt(struct call *c)
{
    c->attempt++;
    c->attempt_start_us = tg_clock_mono_us();
    c->retry_after_ms = 0;
    c->has_retry_after_ms = false;
    if (strcmp(c->prepared_for, c->upstream_model) != 0) {
        /* Another deployment names the model differently: the body's "model" changes. */
        tg_buf_reset(&c->rewritten);
        c->prepared_for = c->upstream_model;
        if (proxy_prepare_upstream_body(c) < 0 || (c->mb != NULL && proxy_mb_body(c) < 0)) {
            record_attempt(c, TG_ECANCELED);
            proxy_set_error(c, 500, "server_error", "The request could not be prepared.");
            c->mode = RELAY_BUFFER;
            proxy_finish(c);
            return;
        }
    }
    struct tg_provider_request preq = {
        .api = c->api,
        .upstream_model = c->upstream_model,
        .body = c->upstream_body,
        .body_len = c->upstream_body_len,
        .is_stream = c->is_stream,
        .request_id = c->req->id,
        .timeouts = c->dep >= 0 ? &c->route->deployments[c->dep].timeouts : NULL,
    };
    int rc = tg_provider_call_start(c->provider, c->w->upstream, &c->w->loop, &preq, &callbacks, c,
                                    &c->pcall);
    if (rc == TG_EINVAL) {
        char msg[200];
        snprintf(msg, sizeof(msg), "The upstream provider %s could not be called: %s",
                 c->provider->name, tg_strerror(rc));
        record_attempt(c, TG_ECANCELED);
        proxy_set_error(c, 400, "invalid_request_error", msg);
        c->mode = RELAY_BUFFER;
        proxy_finish(c);
    } else if (rc < 0) {
        on_done(rc, tg_strerror(rc), c); /* a connect-time failure: retried like any other */
    }
}

static void
timer_closed(uv_handle_t *h)
{
    free(h); /* the struct retry_timer: t is its first member */
}

static void
on_retry_timer(uv_timer_t *t)
{
    struct retry_timer *rt = (struct retry_timer *)t;
    struct call *c = rt->c;
    c->timer = NULL;
    uv_close((uv_handle_t *)t, timer_closed);
    if (c->is_client_gone) {
        record_attempt(c, TG_ECANCELED);
        proxy_set_error(c, 502, "server_error", "client gone before the retry");
        c->mode = RELAY_BUFFER;
        proxy_finish(c);
        return;
    }
    start_attempt(c);
}

/* Shutdown during a back-off: the picked deployment is not tried; the call ends with 503. */
static void
cancel_retry(struct call *c)
{
    uv_timer_stop(&c->timer->t);
    uv_close((uv_handle_t *)&c->timer->t, timer_closed);
    c->timer = NULL;
    record_attempt(c, TG_ECANCELED);
    proxy_set_error(c, 503, "server_error", "The gateway is shutting down.");
    c->mode = RELAY_BUFFER;
    proxy_finish(c);
}

/*
 * After an attempt: records it on the router and, when it failed in a way another
 * deployment may not (connect error, timeout, 429, 5xx) before anything reached the client,
 * and something is left to try, pushes the attempt's ledger row and schedules the next
 * attempt after the back-off. Returns true when a retry is scheduled (the call goes on).
 */
static bool
retry(struct call *c, int err, const char *message)
{
    int status = c->upstream_status;
    bool is_retryable =
        (err < 0 && err != TG_ECANCELED) || (err == 0 && (status == 429 || status >= 500));
    bool can_retry = is_retryable && c->mode != RELAY_SSE && !c->is_client_gone && !c->is_too_big &&
                     !c->is_cache_hit && !c->w->is_cancelled && c->first_route != NULL;
    record_attempt(c, err);
    if (!can_retry || !pick_target(c)) {
        return false;
    }
    char why[128];
    if (err < 0) {
        snprintf(why, sizeof(why), "%s", message ? message : tg_strerror(err));
    } else {
        snprintf(why, sizeof(why), "upstream HTTP %d", status);
    }
    push_attempt_row(c, err < 0 ? upstream_error_status(err) : status, why);
    tg_log_info("request %s: attempt %d on %s/%s failed (%s); retrying", c->req->id, c->attempt,
                c->provider->name, c->upstream_model, why);
    apply_target(c);
    /* A clean slate for the next attempt: nothing of the failed one reached the client. */
    c->upstream_status = 0;
    c->client_status = 0;
    c->mode = RELAY_NONE;
    c->n_pass = c->n_pass_base;
    c->first_byte_us = 0;
    c->error[0] = '\0';
    memset(&c->usage, 0, sizeof(c->usage));
    tg_buf_reset(&c->resp);
    uint64_t backoff = c->first_route->retry_backoff_ms;
    int shift = c->attempt - 1 < 6 ? c->attempt - 1 : 6;
    backoff = backoff << shift;
    backoff = backoff > 10000 ? 10000 : backoff;
    struct retry_timer *rt = tg_xcalloc(1, sizeof(*rt));
    rt->c = c;
    uv_timer_init(&c->w->loop, &rt->t);
    c->timer = rt;
    uv_timer_start(&rt->t, on_retry_timer, backoff, 0);
    return true;
}

/* Answers c from a cache entry by playing it through the relay as if the provider had sent
 * it, so the replay gets the same framing, usage reading and ledger row as a live answer. */
void
proxy_cache_replay(struct call *c, const struct tg_cache_entry *e)
{
    struct tg_buf synth;
    tg_buf_init(&synth, 0);
    const char *body = e->body;
    size_t len = e->body_len;
    bool as_sse = e->is_stream;
    if (c->is_stream && !e->is_stream &&
        tg_cache_chat_json_to_sse(e->body, e->body_len, &synth) == 0) {
        body = synth.data;
        len = synth.len;
        as_sse = true;
    }
    struct tg_upstream_header h = {"content-type",
                                   as_sse ? "text/event-stream" : "application/json"};
    list_add(c->w, c);
    on_headers(e->status, &h, 1, c);
    /* The whole body is queued in one write; a full client queue only means it drains later. */
    (void)on_data(body, len, c);
    on_done(0, NULL, c);
    tg_buf_deinit(&synth);
}

/* ---- going upstream, shutdown ----------------------------------------------------------- */

/* Sends an admitted call upstream: the step after the cache, on a miss. */
void
proxy_go_upstream(struct call *c)
{
    struct tg_http_req *req = c->req;
    struct tg_worker *w = c->w;
    int prc = proxy_prepare_upstream_body(c);
    if (prc < 0) {
        if (c->is_admitted) {
            c->is_admitted = false;
            c->admission->ops->release(c->admission, c->reservation);
        }
        if (prc != TG_EPARSE) { /* parse_body answered already */
            tg_http_respond_error(req, 500, "The request could not be prepared.", "server_error",
                                  NULL, NULL);
        }
        return;
    }
    c->prepared_for = c->upstream_model;
    c->n_pass_base = c->n_pass;
    tg_http_req_on_abort(req, on_client_abort, c);
    tg_http_req_on_drain(req, on_client_drain, c);
    list_add(w, c);
    if (proxy_mb_join(c)) {
        return; /* answered when its batch is */
    }
    proxy_go_route(c);
}

/* Picks the deployment and makes the first attempt. */
void
proxy_go_route(struct call *c)
{
    if (!pick_target(c)) {
        no_deployment(c);
        return;
    }
    apply_target(c);
    start_attempt(c);
}

void
tg_proxy_cancel_all(struct tg_worker *w)
{
    proxy_mb_cancel_pending(w);
    struct call *next = NULL;
    for (struct call *c = (struct call *)w->calls; c != NULL; c = next) {
        next = c->next;
        if (c->timer != NULL) {
            cancel_retry(c); /* finishes c */
        } else if (c->pcall != NULL) {
            copy_field(c->error, sizeof(c->error), "gateway shutting down");
            tg_provider_call_cancel(c->provider, c->pcall);
        }
    }
}
