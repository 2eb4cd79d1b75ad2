/*
 * admin_deployments.c: the runtime state of every model deployment (policy/router.h).
 *
 * Routes (under /v1/organization/):
 *
 *   GET  deployments                                                      any admin key
 *       OpenAI's list shape (?limit, ?after), one item per deployment of every configured
 *       route, in config order:
 *         {"object":"organization.deployment","id":"<model>/<index>","model":"<route name>",
 *          "provider":"<provider>","upstream_model":"<name upstream>",
 *          "status":"available"|"unavailable","unavailable_reason":"<why>"|null,"weight":N,
 *          "priority":N,"strategy":"weighted"|"least_outstanding"|"lowest_latency",
 *          "breaker":"closed"|"open"|"half_open","outstanding":N,
 *          "ewma_ttft_ms":N|null,"cooldown_until":<Unix ms>|null,
 *          "breaker_open_until":<Unix ms>|null,"window_calls":N,"window_failures":N}
 *       cooldown_until is set while a 429's retry-after keeps the deployment out of rotation;
 *       breaker_open_until while the breaker is open (then it turns half-open). A deployment
 *       is "unavailable" for the process's life when its provider's key could not be resolved
 *       at start; the reason names the provider and the variable or file, never a secret.
 *
 * The state lives in memory (the config's routers) and is shared by the workers; it starts
 * fresh with each process. Reading it takes each router's lock briefly; nothing is stored.
 */
#include <stdio.h>

#include "admin/admin_int.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/json.h"
#include "gateway/config.h"

/* A monotonic instant as Unix milliseconds, or null when it is not in the future. */
static void
append_instant(struct tg_buf *b, uint64_t mono_ms, uint64_t now_mono, int64_t now_unix)
{
    if (mono_ms <= now_mono) {
        tg_buf_append_str(b, "null");
        return;
    }
    tg_buf_appendf(b, "%lld", (long long)(now_unix + (int64_t)(mono_ms - now_mono)));
}

static void
append_deployment(struct tg_buf *b, const struct tg_model_route *r, size_t i, const char *id)
{
    uint64_t now_mono = tg_clock_mono_ms();
    int64_t now_unix = tg_clock_unix_ms();
    struct tg_deployment_view v;
    tg_router_view(r->router, i, now_mono, &v);
    tg_buf_append_str(b, "{\"object\":\"organization.deployment\",\"id\":");
    tg_json_quote(b, id);
    tg_buf_append_str(b, ",\"model\":");
    tg_json_quote(b, r->name);
    tg_buf_append_str(b, ",\"provider\":");
    tg_json_quote(b, v.provider);
    tg_buf_append_str(b, ",\"upstream_model\":");
    tg_json_quote(b, v.upstream_model);
    tg_buf_append_str(b, ",\"status\":");
    tg_buf_append_str(b, v.unavailable != NULL ? "\"unavailable\"" : "\"available\"");
    tg_buf_append_str(b, ",\"unavailable_reason\":");
    if (v.unavailable != NULL) {
        tg_json_quote(b, v.unavailable);
    } else {
        tg_buf_append_str(b, "null");
    }
    tg_buf_appendf(b,
                   ",\"weight\":%u,\"priority\":%d,\"strategy\":\"%s\",\"breaker\":\"%s\","
                   "\"outstanding\":%lld,\"ewma_ttft_ms\":",
                   v.weight, v.priority, tg_route_strategy_name(r->strategy),
                   tg_breaker_state_name(v.breaker), (long long)v.outstanding);
    if (v.ewma_ttft_ms < 0) {
        tg_buf_append_str(b, "null");
    } else {
        tg_buf_appendf(b, "%lld", (long long)v.ewma_ttft_ms);
    }
    tg_buf_append_str(b, ",\"cooldown_until\":");
    append_instant(b, v.cooldown_until_ms, now_mono, now_unix);
    tg_buf_append_str(b, ",\"breaker_open_until\":");
    append_instant(b, v.breaker == TG_BREAKER_OPEN ? v.open_until_ms : 0, now_mono, now_unix);
    tg_buf_appendf(b, ",\"window_calls\":%llu,\"window_failures\":%llu}",
                   (unsigned long long)v.window_calls, (unsigned long long)v.window_failures);
}

static void
list_deployments(struct admin_job *j)
{
    const struct tg_config *cfg = j->state->config;
    struct admin_page pg;
    if (!admin_page_begin(&pg, j)) {
        return;
    }
    struct tg_buf item;
    tg_buf_init(&item, 0);
    bool is_more = true;
    for (size_t m = 0; is_more && m < cfg->n_models; m++) {
        const struct tg_model_route *r = &cfg->models[m];
        for (size_t i = 0; is_more && r->router != NULL && i < tg_router_size(r->router); i++) {
            char id[160];
            snprintf(id, sizeof(id), "%s/%zu", r->name, i);
            tg_buf_reset(&item);
            append_deployment(&item, r, i, id);
            is_more = admin_page_add(&pg, id, item.data);
        }
    }
    admin_page_end(&pg);
    tg_buf_deinit(&item);
}

const struct admin_route tg_admin_routes_deployments[] = {
    {TG_HTTP_GET, "deployments", ADMIN_ORG_READ,
     "Model deployments' runtime state (breaker, outstanding, TTFT EWMA, cooldown)",
     list_deployments},
    {0, NULL, 0, NULL, NULL},
};
