/*
 * mock.c: the built-in provider type "mock", answered in-process on the worker's loop.
 *
 * It speaks the OpenAI wire exactly (the same JSON bodies, the same SSE framing), so the relay,
 * the ledger and the SDKs see what a real provider would send, with no network and no key.
 * Everything is a fixed function of the request: the reply's words depend on the prompt's
 * bytes, the prompt's token count is ceil(prompt bytes / 4) (at least 1), and each choice
 * has min(mock.completion_tokens, the request's max tokens) tokens. Only ids and `created`
 * differ between two identical requests.
 *
 * One uv timer drives a call: it fires after latency_ms with the headers and the first
 * frames, then once per paced token (tokens_per_sec), or every loop turn in bursts of
 * MAX_FRAMES_PER_TICK when unpaced. Stream frames are made one at a time from the frame's
 * index, so a long stream never sits in memory. The callback contract is client.h's: nothing
 * fires from inside start, resume or cancel; TG_EAGAIN from on_data pauses until resume;
 * exactly one on_done, after which the call frees itself once its timer has closed.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"
#include "upstream/provider_int.h"

#define DEFAULT_COMPLETION_TOKENS 16
#define MAX_CHOICES 128
#define MAX_INPUTS 2048
#define DEFAULT_DIMENSIONS 8
#define MAX_DIMENSIONS 4096
#define MAX_FRAMES_PER_TICK 64
/* Frames of a Responses stream around its text deltas: created, in_progress,
 * output_item.added, content_part.added / output_text.done, content_part.done,
 * output_item.done and the terminal event. */
#define RESP_HEAD_FRAMES 4
#define RESP_TAIL_FRAMES 4

static const char *const words[] = {"mock", "reply",    "from", "the",   "tollgate",
                                    "test", "provider", "with", "fixed", "words"};
#define N_WORDS (sizeof(words) / sizeof(words[0]))

static const char *const moderation_categories[] = {
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
};

struct mock_call {
    struct tg_provider_call base; /* first: the relay's handle is this struct's address */
    uv_timer_t timer;
    const struct tg_upstream_callbacks *cbs;
    void *arg;

    enum tg_api api;
    int status; /* 200, or 400 for a request the mock refuses */
    bool is_stream;
    bool include_usage;
    bool is_truncated; /* max tokens cut the reply: finish_reason "length" */
    bool is_started;   /* headers sent */
    bool is_paused;
    bool is_canceled;
    bool is_done;

    uint64_t latency_ms;
    uint64_t tokens_per_sec;
    int64_t pace_base_ms; /* token j is due at pace_base_ms + j * 1000 / tokens_per_sec */
    int64_t tokens_sent;

    char id[64];
    char item_id[64]; /* Responses output message */
    char *model;
    int64_t created;
    int64_t n_choices;
    int64_t k; /* tokens per choice */
    int64_t prompt_tokens;
    uint32_t seed; /* first word of the reply, from the prompt */

    size_t frame;
    size_t n_frames;
    struct tg_buf body; /* non-stream: the whole body; stream: the frame being sent */
};

/* ---- reading the request ------------------------------------------------------------- */

/* FNV-1a, the prompt's fingerprint. */
static uint32_t
fnv1a(uint32_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 16777619u;
    }
    return h;
}

struct measure {
    uint64_t bytes;
    uint32_t hash;
};

/* Walks a prompt value: string bytes count as text, an integer as one token id (4 bytes).
 * "role" and "type" members are labels, not text. */
static void
measure_value(const json_t *v, struct measure *m)
{
    if (json_is_string(v)) {
        m->bytes += json_string_length(v);
        m->hash = fnv1a(m->hash, json_string_value(v), json_string_length(v));
    } else if (json_is_integer(v)) {
        json_int_t t = json_integer_value(v);
        m->bytes += 4;
        m->hash = fnv1a(m->hash, &t, sizeof(t));
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            measure_value(json_array_get(v, i), m);
        }
    } else if (json_is_object(v)) {
        const char *key;
        json_t *member;
        json_object_foreach((json_t *)v, key, member)
        {
            if (strcmp(key, "role") != 0 && strcmp(key, "type") != 0) {
                measure_value(member, m);
            }
        }
    }
}

static int64_t
tokens_for_bytes(uint64_t bytes)
{
    int64_t t = (int64_t)((bytes + 3) / 4);
    return t < 1 ? 1 : t;
}

/* The request's cap on output tokens per choice, or -1 when it sets none. */
static int64_t
max_tokens_of(enum tg_api api, const json_t *body)
{
    static const char *const fields[TG_API_COUNT][2] = {
        [TG_API_CHAT] = {"max_completion_tokens", "max_tokens"},
        [TG_API_COMPLETIONS] = {"max_tokens", NULL},
        [TG_API_RESPONSES] = {"max_output_tokens", NULL},
    };
    for (int i = 0; i < 2; i++) {
        const char *f = fields[api][i];
        const json_t *v = f != NULL ? json_object_get(body, f) : NULL;
        if (json_is_integer(v) && json_integer_value(v) >= 0) {
            return (int64_t)json_integer_value(v);
        }
    }
    return -1;
}

/* ---- small writers ----------------------------------------------------------------------- */

static void
reply_error(struct mock_call *c, const char *message, const char *param)
{
    c->status = 400;
    c->is_stream = false;
    tg_buf_reset(&c->body);
    tg_json_error_body(&c->body, message, "invalid_request_error", param, NULL);
}

/* Token j of choice ch, as it appears in the text (words after the first lead with a space). */
static void
append_token(struct tg_buf *b, const struct mock_call *c, int64_t ch, int64_t j)
{
    if (j > 0) {
        tg_buf_append_str(b, " ");
    }
    tg_buf_append_str(b, words[(c->seed + (uint64_t)ch + (uint64_t)j) % N_WORDS]);
}

/* The whole reply text of choice ch as a JSON string (the words need no escaping). */
static void
append_text_json(struct tg_buf *b, const struct mock_call *c, int64_t ch)
{
    tg_buf_append_str(b, "\"");
    for (int64_t j = 0; j < c->k; j++) {
        append_token(b, c, ch, j);
    }
    tg_buf_append_str(b, "\"");
}

static const char *
finish_reason(const struct mock_call *c)
{
    return c->is_truncated ? "\"length\"" : "\"stop\"";
}

static int64_t
completion_tokens(const struct mock_call *c)
{
    return c->k * c->n_choices;
}

static void
append_chat_usage(struct tg_buf *b, const struct mock_call *c)
{
    int64_t out = completion_tokens(c);
    tg_buf_appendf(b,
                   "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},"
                   "\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
                   "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}",
                   (long long)c->prompt_tokens, (long long)out,
                   (long long)(c->prompt_tokens + out));
}

static void
append_responses_usage(struct tg_buf *b, const struct mock_call *c)
{
    int64_t out = completion_tokens(c);
    tg_buf_appendf(b,
                   "{\"input_tokens\":%lld,\"input_tokens_details\":{\"cached_tokens\":0},"
                   "\"output_tokens\":%lld,\"output_tokens_details\":{\"reasoning_tokens\":0},"
                   "\"total_tokens\":%lld}",
                   (long long)c->prompt_tokens, (long long)out,
                   (long long)(c->prompt_tokens + out));
}

/* {"id":..,"object":..,"created":..,"model":.. : the head every chat/completions object has. */
static void
append_head(struct tg_buf *b, const struct mock_call *c, const char *object)
{
    tg_buf_appendf(b, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", c->id, object,
                   (long long)c->created);
    tg_json_quote(b, c->model);
}

/* ---- whole bodies -------------------------------------------------------------------- */

static void
build_chat_body(struct mock_call *c)
{
    struct tg_buf *b = &c->body;
    append_head(b, c, "chat.completion");
    tg_buf_append_str(b, ",\"choices\":[");
    for (int64_t ch = 0; ch < c->n_choices; ch++) {
        tg_buf_appendf(b, "%s{\"index\":%lld,\"message\":{\"role\":\"assistant\",\"content\":",
                       ch > 0 ? "," : "", (long long)ch);
        append_text_json(b, c, ch);
        tg_buf_appendf(b,
                       ",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,"
                       "\"finish_reason\":%s}",
                       finish_reason(c));
    }
    tg_buf_append_str(b, "],\"usage\":");
    append_chat_usage(b, c);
    tg_buf_append_str(b, ",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_mock\"}");
}

static void
build_completions_body(struct mock_call *c)
{
    struct tg_buf *b = &c->body;
    append_head(b, c, "text_completion");
    tg_buf_append_str(b, ",\"choices\":[");
    for (int64_t ch = 0; ch < c->n_choices; ch++) {
        tg_buf_append_str(b, ch > 0 ? ",{\"text\":" : "{\"text\":");
        append_text_json(b, c, ch);
        tg_buf_appendf(b, ",\"index\":%lld,\"logprobs\":null,\"finish_reason\":%s}", (long long)ch,
                       finish_reason(c));
    }
    tg_buf_append_str(b, "],\"usage\":");
    append_chat_usage(b, c);
    tg_buf_append_str(b, ",\"system_fingerprint\":\"fp_mock\"}");
}

/* The Responses message item; is_final gives it its text and final status. */
static void
append_resp_item(struct tg_buf *b, const struct mock_call *c, bool is_final)
{
    tg_buf_appendf(b,
                   "{\"type\":\"message\",\"id\":\"%s\",\"status\":\"%s\",\"role\":\"assistant\","
                   "\"content\":[",
                   c->item_id,
                   !is_final         ? "in_progress"
                   : c->is_truncated ? "incomplete"
                                     : "completed");
    if (is_final) {
        tg_buf_append_str(b, "{\"type\":\"output_text\",\"text\":");
        append_text_json(b, c, 0);
        tg_buf_append_str(b, ",\"annotations\":[]}");
    }
    tg_buf_append_str(b, "]}");
}

/* The Responses object: in progress (no output, no usage) or final. */
static void
append_resp_object(struct tg_buf *b, const struct mock_call *c, bool is_final)
{
    const char *status = !is_final ? "in_progress" : c->is_truncated ? "incomplete" : "completed";
    tg_buf_appendf(b,
                   "{\"id\":\"%s\",\"object\":\"response\",\"created_at\":%lld,\"status\":\"%s\","
                   "\"error\":null,\"incomplete_details\":%s,\"model\":",
                   c->id, (long long)c->created, status,
                   is_final && c->is_truncated ? "{\"reason\":\"max_output_tokens\"}" : "null");
    tg_json_quote(b, c->model);
    tg_buf_append_str(b, ",\"output\":[");
    if (is_final) {
        append_resp_item(b, c, true);
    }
    tg_buf_append_str(b, "],\"usage\":");
    if (is_final) {
        append_responses_usage(b, c);
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_append_str(b, "}");
}

/* A deterministic vector component in [-1, 1), a multiple of 1/1024 so that float32, the
 * JSON decimal and the base64 bytes all hold exactly the same number. */
static float
embedding_component(uint64_t h, int64_t d)
{
    uint64_t x = h + 0x9e3779b97f4a7c15ull * (uint64_t)(d + 1);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    return (float)((int64_t)(x % 2048) - 1024) / 1024.0f;
}

static void
append_embedding(struct tg_buf *b, const json_t *item, int64_t dims, bool is_base64)
{
    struct measure m = {0, 2166136261u};
    measure_value(item, &m);
    if (!is_base64) {
        tg_buf_append_str(b, "[");
        for (int64_t d = 0; d < dims; d++) {
            tg_buf_appendf(b, "%s%.17g", d > 0 ? "," : "", (double)embedding_component(m.hash, d));
        }
        tg_buf_append_str(b, "]");
        return;
    }
    size_t n = (size_t)dims * 4;
    unsigned char *raw = tg_xmalloc(n);
    for (int64_t d = 0; d < dims; d++) {
        float f = embedding_component(m.hash, d);
        uint32_t u;
        memcpy(&u, &f, 4);
        for (int i = 0; i < 4; i++) {
            raw[d * 4 + i] = (unsigned char)(u >> (8 * i)); /* little-endian on every host */
        }
    }
    char *enc = tg_xmalloc(tg_base64_len(n) + 1);
    size_t len = tg_base64_encode(enc, raw, n);
    tg_buf_append_str(b, "\"");
    tg_buf_append(b, enc, len);
    tg_buf_append_str(b, "\"");
    free(enc);
    free(raw);
}

/* The inputs of an embeddings or moderations request: a string, a token-id array (one input),
 * or an array of those. Returns the number of inputs (0 for an invalid input). */
static size_t
count_inputs(const json_t *input, bool *is_list)
{
    *is_list = false;
    if (json_is_string(input)) {
        return 1;
    }
    if (!json_is_array(input) || json_array_size(input) == 0) {
        return 0;
    }
    if (json_is_integer(json_array_get(input, 0))) {
        return 1; /* one input given as token ids */
    }
    *is_list = true;
    return json_array_size(input);
}

static void
build_embeddings_body(struct mock_call *c, const json_t *body)
{
    const json_t *input = json_object_get(body, "input");
    bool is_list;
    size_t n = count_inputs(input, &is_list);
    if (n == 0 || n > MAX_INPUTS) {
        reply_error(c, "'input' must be a non-empty string or array of at most 2048 inputs.",
                    "input");
        return;
    }
    int64_t dims = tg_json_int(body, "dimensions", DEFAULT_DIMENSIONS);
    if (dims < 1 || dims > MAX_DIMENSIONS) {
        reply_error(c, "'dimensions' must be between 1 and 4096.", "dimensions");
        return;
    }
    const char *format = tg_json_str(body, "encoding_format");
    bool is_base64 = format != NULL && strcmp(format, "base64") == 0;
    if (format != NULL && !is_base64 && strcmp(format, "float") != 0) {
        reply_error(c, "'encoding_format' must be 'float' or 'base64'.", "encoding_format");
        return;
    }
    struct tg_buf *b = &c->body;
    tg_buf_append_str(b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < n; i++) {
        tg_buf_appendf(
            b, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":", i > 0 ? "," : "", i);
        append_embedding(b, is_list ? json_array_get(input, i) : input, dims, is_base64);
        tg_buf_append_str(b, "}");
    }
    tg_buf_append_str(b, "],\"model\":");
    tg_json_quote(b, c->model);
    tg_buf_appendf(b, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}",
                   (long long)c->prompt_tokens, (long long)c->prompt_tokens);
}

static void
build_moderations_body(struct mock_call *c, const json_t *body)
{
    bool is_list;
    size_t n = count_inputs(json_object_get(body, "input"), &is_list);
    if (n == 0 || n > MAX_INPUTS) {
        reply_error(c, "'input' must be a non-empty string or array.", "input");
        return;
    }
    struct tg_buf *b = &c->body;
    size_t n_cat = sizeof(moderation_categories) / sizeof(moderation_categories[0]);
    tg_buf_appendf(b, "{\"id\":\"%s\",\"model\":", c->id);
    tg_json_quote(b, c->model);
    tg_buf_append_str(b, ",\"results\":[");
    for (size_t i = 0; i < n; i++) {
        tg_buf_append_str(b, i > 0 ? ",{\"flagged\":false" : "{\"flagged\":false");
        static const char *const parts[] = {"categories", "category_scores",
                                            "category_applied_input_types"};
        for (int part = 0; part < 3; part++) {
            tg_buf_appendf(b, ",\"%s\":{", parts[part]);
            for (size_t k = 0; k < n_cat; k++) {
                static const char *const values[] = {"false", "0.000001", "[]"};
                tg_buf_appendf(b, "%s\"%s\":%s", k > 0 ? "," : "", moderation_categories[k],
                               values[part]);
            }
            tg_buf_append_str(b, "}");
        }
        tg_buf_append_str(b, "}");
    }
    tg_buf_append_str(b, "]}");
}

/* ---- stream frames --------------------------------------------------------------------- */

static size_t
choice_block(const struct mock_call *c)
{
    /* chat: role chunk, k token chunks, finish chunk; completions: no role chunk */
    return (size_t)c->k + (c->api == TG_API_CHAT ? 2 : 1);
}

static size_t
count_frames(const struct mock_call *c)
{
    if (!c->is_stream) {
        return 1;
    }
    if (c->api == TG_API_RESPONSES) {
        return RESP_HEAD_FRAMES + (size_t)c->k + RESP_TAIL_FRAMES;
    }
    return (size_t)c->n_choices * choice_block(c) + (c->include_usage ? 1 : 0) + 1;
}

static bool
frame_is_token(const struct mock_call *c, size_t f)
{
    if (!c->is_stream) {
        return false;
    }
    if (c->api == TG_API_RESPONSES) {
        return f >= RESP_HEAD_FRAMES && f < RESP_HEAD_FRAMES + (size_t)c->k;
    }
    size_t block = choice_block(c);
    if (f >= (size_t)c->n_choices * block) {
        return false;
    }
    size_t r = f % block;
    return c->api == TG_API_CHAT ? r >= 1 && r <= (size_t)c->k : r < (size_t)c->k;
}

static void
chat_frame(struct mock_call *c, size_t f, struct tg_buf *b)
{
    size_t block = choice_block(c);
    size_t all = (size_t)c->n_choices * block;
    if (f == count_frames(c) - 1) {
        tg_buf_append_str(b, "data: [DONE]\n\n");
        return;
    }
    bool is_chat = c->api == TG_API_CHAT;
    tg_buf_append_str(b, "data: ");
    append_head(b, c, is_chat ? "chat.completion.chunk" : "text_completion");
    if (is_chat) {
        tg_buf_append_str(b, ",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_mock\"");
    }
    if (f == all) { /* the usage chunk: after every finish chunk, before [DONE] */
        tg_buf_append_str(b, ",\"choices\":[],\"usage\":");
        append_chat_usage(b, c);
        tg_buf_append_str(b, "}\n\n");
        return;
    }
    long long ch = (long long)(f / block);
    int64_t r = (int64_t)(f % block);
    int64_t j = is_chat ? r - 1 : r; /* token index, k for the finish chunk */
    if (is_chat && r == 0) {
        tg_buf_appendf(b,
                       ",\"choices\":[{\"index\":%lld,\"delta\":{\"role\":\"assistant\","
                       "\"content\":\"\",\"refusal\":null},\"logprobs\":null,"
                       "\"finish_reason\":null}]",
                       ch);
    } else if (j < c->k) {
        tg_buf_append_str(b, is_chat ? ",\"choices\":[{\"index\":" : ",\"choices\":[{\"text\":\"");
        if (is_chat) {
            tg_buf_appendf(b, "%lld,\"delta\":{\"content\":\"", ch);
        }
        append_token(b, c, ch, j);
        if (is_chat) {
            tg_buf_append_str(b, "\"},\"logprobs\":null,\"finish_reason\":null}]");
        } else {
            tg_buf_appendf(b, "\",\"index\":%lld,\"logprobs\":null,\"finish_reason\":null}]", ch);
        }
    } else if (is_chat) {
        tg_buf_appendf(b,
                       ",\"choices\":[{\"index\":%lld,\"delta\":{},\"logprobs\":null,"
                       "\"finish_reason\":%s}]",
                       ch, finish_reason(c));
    } else {
        tg_buf_appendf(b,
                       ",\"choices\":[{\"text\":\"\",\"index\":%lld,\"logprobs\":null,"
                       "\"finish_reason\":%s}]",
                       ch, finish_reason(c));
    }
    tg_buf_append_str(b, c->include_usage ? ",\"usage\":null}\n\n" : "}\n\n");
}

static void
event_head(struct tg_buf *b, const char *name, size_t seq)
{
    tg_buf_appendf(b, "event: %s\ndata: {\"type\":\"%s\",\"sequence_number\":%zu", name, name, seq);
}

/* ,"item_id":..,"output_index":0,"content_index":0 */
static void
event_where(struct tg_buf *b, const struct mock_call *c)
{
    tg_buf_appendf(b, ",\"item_id\":\"%s\",\"output_index\":0,\"content_index\":0", c->item_id);
}

static void
responses_frame(struct mock_call *c, size_t f, struct tg_buf *b)
{
    size_t k = (size_t)c->k;
    if (f < 2) {
        event_head(b, f == 0 ? "response.created" : "response.in_progress", f);
        tg_buf_append_str(b, ",\"response\":");
        append_resp_object(b, c, false);
    } else if (f == 2 || f == RESP_HEAD_FRAMES + k + 2) {
        event_head(b, f == 2 ? "response.output_item.added" : "response.output_item.done", f);
        tg_buf_append_str(b, ",\"output_index\":0,\"item\":");
        append_resp_item(b, c, f != 2);
    } else if (f == 3 || f == RESP_HEAD_FRAMES + k + 1) {
        bool is_done = f != 3;
        event_head(b, is_done ? "response.content_part.done" : "response.content_part.added", f);
        event_where(b, c);
        tg_buf_append_str(b, ",\"part\":{\"type\":\"output_text\",\"text\":");
        if (is_done) {
            append_text_json(b, c, 0);
        } else {
            tg_buf_append_str(b, "\"\"");
        }
        tg_buf_append_str(b, ",\"annotations\":[]}");
    } else if (f < RESP_HEAD_FRAMES + k) {
        event_head(b, "response.output_text.delta", f);
        event_where(b, c);
        tg_buf_append_str(b, ",\"delta\":\"");
        append_token(b, c, 0, (int64_t)(f - RESP_HEAD_FRAMES));
        tg_buf_append_str(b, "\",\"logprobs\":[]");
    } else if (f == RESP_HEAD_FRAMES + k) {
        event_head(b, "response.output_text.done", f);
        event_where(b, c);
        tg_buf_append_str(b, ",\"text\":");
        append_text_json(b, c, 0);
        tg_buf_append_str(b, ",\"logprobs\":[]");
    } else {
        event_head(b, c->is_truncated ? "response.incomplete" : "response.completed", f);
        tg_buf_append_str(b, ",\"response\":");
        append_resp_object(b, c, true);
    }
    tg_buf_append_str(b, "}\n\n");
}

/* ---- driving the call ------------------------------------------------------------------ */

static void
on_closed(uv_handle_t *h)
{
    struct mock_call *c = h->data;
    tg_buf_deinit(&c->body);
    free(c->model);
    free(c);
}

static void
finish(struct mock_call *c, int err, const char *message)
{
    c->is_done = true;
    uv_timer_stop(&c->timer);
    c->cbs->on_done(err, message, c->arg);
    uv_close((uv_handle_t *)&c->timer, on_closed);
}

/* Sends frame c->frame. Returns on_data's answer. */
static int
send_frame(struct mock_call *c)
{
    size_t f = c->frame++;
    if (!c->is_stream) {
        return c->cbs->on_data(c->body.data, c->body.len, c->arg);
    }
    tg_buf_reset(&c->body);
    if (c->api == TG_API_RESPONSES) {
        responses_frame(c, f, &c->body);
    } else {
        chat_frame(c, f, &c->body);
    }
    return c->cbs->on_data(c->body.data, c->body.len, c->arg);
}

static int64_t
token_due_ms(const struct mock_call *c)
{
    return c->pace_base_ms + (int64_t)((uint64_t)c->tokens_sent * 1000 / c->tokens_per_sec);
}

static void
on_timer(uv_timer_t *t)
{
    struct mock_call *c = t->data;
    if (c->is_canceled) {
        finish(c, TG_ECANCELED, "canceled");
        return;
    }
    if (c->is_paused) {
        return;
    }
    int64_t now = (int64_t)uv_now(t->loop);
    if (!c->is_started) {
        c->is_started = true;
        c->pace_base_ms = now;
        struct tg_upstream_header h = {
            "content-type", c->is_stream ? "text/event-stream; charset=utf-8" : "application/json"};
        c->cbs->on_headers(c->status, &h, 1, c->arg);
    }
    for (int i = 0; i < MAX_FRAMES_PER_TICK; i++) {
        if (c->is_canceled) {
            finish(c, TG_ECANCELED, "canceled");
            return;
        }
        if (c->frame == c->n_frames) {
            finish(c, 0, NULL);
            return;
        }
        bool is_token = frame_is_token(c, c->frame);
        if (is_token && c->tokens_per_sec > 0 && token_due_ms(c) > now) {
            uv_timer_start(t, on_timer, (uint64_t)(token_due_ms(c) - now), 0);
            return;
        }
        c->tokens_sent += is_token ? 1 : 0;
        int rc = send_frame(c);
        if (rc == TG_EAGAIN) {
            c->is_paused = true;
            return;
        }
        if (rc < 0) {
            finish(c, TG_ECANCELED, "canceled by the consumer");
            return;
        }
    }
    uv_timer_start(t, on_timer, 0, 0); /* give the loop a turn between bursts */
}

/* ---- ops ----------------------------------------------------------------------------------- */

/* Reads what the reply depends on. Returns false after preparing a 400 body. */
static bool
read_request(struct mock_call *c, const struct tg_mock_settings *ms, const json_t *body)
{
    static const char *const prompt_fields[TG_API_COUNT][2] = {
        [TG_API_CHAT] = {"messages", NULL},     [TG_API_COMPLETIONS] = {"prompt", NULL},
        [TG_API_EMBEDDINGS] = {"input", NULL},  [TG_API_RESPONSES] = {"instructions", "input"},
        [TG_API_MODERATIONS] = {"input", NULL},
    };
    if (c->api == TG_API_CHAT && !json_is_array(json_object_get(body, "messages"))) {
        reply_error(c, "Missing required parameter: 'messages'.", "messages");
        return false;
    }
    struct measure m = {0, 2166136261u};
    for (int i = 0; i < 2; i++) {
        const char *f = prompt_fields[c->api][i];
        if (f != NULL) {
            measure_value(json_object_get(body, f), &m);
        }
    }
    c->prompt_tokens = tokens_for_bytes(m.bytes);
    c->seed = m.hash % N_WORDS;
    c->n_choices = 1;
    if (c->api == TG_API_CHAT || c->api == TG_API_COMPLETIONS) {
        c->n_choices = tg_json_int(body, "n", 1);
        if (c->n_choices < 1 || c->n_choices > MAX_CHOICES) {
            reply_error(c, "'n' must be between 1 and 128.", "n");
            return false;
        }
        const json_t *so = json_object_get(body, "stream_options");
        c->include_usage = c->is_stream && tg_json_bool(so, "include_usage", false);
    }
    c->k = ms->completion_tokens > 0 ? ms->completion_tokens : DEFAULT_COMPLETION_TOKENS;
    int64_t cap = c->api == TG_API_EMBEDDINGS || c->api == TG_API_MODERATIONS
                      ? -1
                      : max_tokens_of(c->api, body);
    if (cap >= 0 && cap < c->k) {
        c->k = cap;
        c->is_truncated = true;
    }
    return true;
}

static void
prepare(struct mock_call *c, const struct tg_mock_settings *ms,
        const struct tg_provider_request *req)
{
    static const char *const id_prefix[TG_API_COUNT] = {
        [TG_API_CHAT] = "chatcmpl-mock-",    [TG_API_COMPLETIONS] = "cmpl-mock-",
        [TG_API_EMBEDDINGS] = "emb-mock-",   [TG_API_RESPONSES] = "resp_mock",
        [TG_API_MODERATIONS] = "modr-mock-",
    };
    tg_id_new(c->id, sizeof(c->id), id_prefix[c->api], 24);
    tg_id_new(c->item_id, sizeof(c->item_id), "msg_mock", 24);
    char err[160];
    const char *text = req->body != NULL ? req->body : "";
    json_t *body = tg_json_parse(text, req->body != NULL ? req->body_len : 0, 64, err, sizeof(err));
    const char *model = req->upstream_model ? req->upstream_model : tg_json_str(body, "model");
    c->model = tg_xstrdup(model != NULL ? model : "mock");
    if (!json_is_object(body)) {
        reply_error(c, "We could not parse the JSON body of your request.", NULL);
    } else if (read_request(c, ms, body)) {
        if (c->api == TG_API_EMBEDDINGS) {
            c->is_stream = false;
            build_embeddings_body(c, body);
        } else if (c->api == TG_API_MODERATIONS) {
            c->is_stream = false;
            build_moderations_body(c, body);
        } else if (!c->is_stream && c->api == TG_API_CHAT) {
            build_chat_body(c);
        } else if (!c->is_stream && c->api == TG_API_COMPLETIONS) {
            build_completions_body(c);
        } else if (!c->is_stream) {
            append_resp_object(&c->body, c, true);
        }
    }
    json_decref(body);
    c->n_frames = count_frames(c);
}

static int
mock_start(const struct tg_provider *p, struct tg_upstream_client *client, uv_loop_t *loop,
           const struct tg_provider_request *req, const struct tg_upstream_callbacks *cbs,
           void *arg, struct tg_provider_call **out)
{
    if (loop == NULL || (unsigned)req->api >= TG_API_COUNT) {
        return TG_EINVAL;
    }
    struct mock_call *c = tg_xcalloc(1, sizeof(*c));
    c->base.ops = &tg_provider_mock_ops;
    c->cbs = cbs;
    c->arg = arg;
    c->api = req->api;
    c->status = 200;
    c->is_stream = req->is_stream;
    c->latency_ms = p->mock.latency_ms;
    c->tokens_per_sec = p->mock.tokens_per_sec;
    c->created = (int64_t)time(NULL);
    tg_buf_init(&c->body, 0);
    prepare(c, &p->mock, req);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, on_timer, c->latency_ms, 0);
    *out = &c->base;
    return 0;
}

static void
mock_resume(struct tg_provider_call *call)
{
    struct mock_call *c = (struct mock_call *)call;
    if (!c->is_paused || c->is_done) {
        return;
    }
    c->is_paused = false;
    if (c->tokens_per_sec > 0) {
        /* the next token is due now; pacing goes on from here, not from before the pause */
        c->pace_base_ms = (int64_t)uv_now(c->timer.loop) -
                          (int64_t)((uint64_t)c->tokens_sent * 1000 / c->tokens_per_sec);
    }
    uv_timer_start(&c->timer, on_timer, 0, 0);
}

static void
mock_cancel(struct tg_provider_call *call)
{
    struct mock_call *c = (struct mock_call *)call;
    if (c->is_done || c->is_canceled) {
        return;
    }
    c->is_canceled = true;
    uv_timer_start(&c->timer, on_timer, 0, 0); /* on_done comes from the loop, not from here */
}

const struct tg_provider_ops tg_provider_mock_ops = {
    .type = "mock",
    .start = mock_start,
    .resume = mock_resume,
    .cancel = mock_cancel,
    .keep_event = NULL,
};
