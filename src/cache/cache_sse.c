/*
 * cache_sse.c: serving a cached answer in the other form, and the cache the gateway uses.
 *
 * A client that asks to stream gets a cached JSON answer as the stream it would have seen:
 * the SDKs rebuild the message from the deltas, so one delta per choice carrying the whole
 * message is enough and keeps the replay cheap. The shared memory cache is one per process
 * because every worker must see what another stored.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/json.h"

static int
append_event(struct tg_buf *out, json_t *chunk)
{
    int rc = tg_buf_append_str(out, "data: ");
    if (rc == 0) {
        rc = tg_json_dump_buf(chunk, out);
    }
    if (rc == 0) {
        rc = tg_buf_append_str(out, "\n\n");
    }
    json_decref(chunk);
    return rc;
}

/* A chunk skeleton: the answer's id, created, model and fingerprint, with choices. */
static json_t *
chunk_of(const json_t *j, json_t *choices)
{
    json_t *c = json_object();
    json_object_set(c, "id", json_object_get(j, "id"));
    json_object_set_new(c, "object", json_string("chat.completion.chunk"));
    json_object_set(c, "created", json_object_get(j, "created"));
    json_object_set(c, "model", json_object_get(j, "model"));
    json_t *fp = json_object_get(j, "system_fingerprint");
    if (fp) {
        json_object_set(c, "system_fingerprint", fp);
    }
    json_object_set_new(c, "choices", choices);
    return c;
}

int
tg_cache_chat_json_to_sse(const char *body, size_t len, struct tg_buf *out)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    const char *object = tg_json_str(j, "object");
    json_t *choices = json_object_get(j, "choices");
    if (!object || strcmp(object, "chat.completion") != 0 || !json_is_array(choices)) {
        json_decref(j);
        return TG_EPARSE;
    }
    int rc = 0;
    size_t i;
    json_t *ch;
    json_array_foreach(choices, i, ch)
    {
        json_t *delta = json_deep_copy(json_object_get(ch, "message"));
        if (!json_is_object(delta)) {
            json_decref(delta);
            delta = json_object();
        }
        /* Tool calls in a delta carry their position. */
        json_t *calls = json_object_get(delta, "tool_calls");
        size_t k;
        json_t *tc;
        json_array_foreach(calls, k, tc)
        {
            json_object_set_new(tc, "index", json_integer((json_int_t)k));
        }
        json_t *lp = json_object_get(ch, "logprobs");
        json_t *first =
            json_pack("{s:O, s:o, s:O, s:n}", "index", json_object_get(ch, "index"), "delta", delta,
                      "logprobs", lp ? lp : json_null(), "finish_reason");
        rc = rc ? rc : append_event(out, chunk_of(j, json_pack("[o]", first)));
        json_t *fin =
            json_pack("{s:O, s:{}, s:n, s:O}", "index", json_object_get(ch, "index"), "delta",
                      "logprobs", "finish_reason", json_object_get(ch, "finish_reason"));
        rc = rc ? rc : append_event(out, chunk_of(j, json_pack("[o]", fin)));
    }
    json_t *usage = json_object_get(j, "usage");
    if (usage) {
        json_t *u = chunk_of(j, json_array());
        json_object_set(u, "usage", usage);
        rc = rc ? rc : append_event(out, u);
    }
    rc = rc ? rc : tg_buf_append_str(out, "data: [DONE]\n\n");
    json_decref(j);
    return rc;
}

void
tg_cache_settings_of_project(const char *settings_json, struct tg_cache_settings *out)
{
    static const char *const names[1] = {"cache"};
    struct tg_json_span v;
    char err[128];
    tg_cache_settings_parse(NULL, out, err, sizeof(err));
    if (!settings_json || tg_json_members(settings_json, strlen(settings_json), names, 1, &v) < 0 ||
        !v.p) {
        return;
    }
    json_t *j = json_loadb(v.p, v.len, 0, NULL);
    if (tg_cache_settings_parse(j, out, err, sizeof(err)) != 0) {
        tg_cache_settings_parse(NULL, out, err, sizeof(err));
    }
    json_decref(j);
}

static struct tg_cache *shared;
static pthread_once_t shared_once = PTHREAD_ONCE_INIT;

static void
make_shared(void)
{
    size_t cap = (size_t)64 << 20;
    const char *env = getenv("TOLLGATE_CACHE_MEMORY_BYTES");
    if (env && *env) {
        char *end;
        unsigned long long v = strtoull(env, &end, 10);
        if (*end == '\0' && v > 0) {
            cap = (size_t)v;
        }
    }
    shared = tg_cache_memory_new(cap);
}

struct tg_cache *
tg_cache_shared_memory(void)
{
    pthread_once(&shared_once, make_shared);
    return shared;
}
