/*
 * policies.c: token policies and aliases on the request path (see policies.h).
 *
 * An alias naming a tier is resolved on every request, against the snapshot's allow-list and
 * the live price table, so a change of either moves the next request; the tier lists are
 * short (a handful of models), so the scan costs less than the JSON parse it rides on.
 */
#include "gateway/policies.h"

#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"

#define MAX_TIER_MODELS 64

static void
key_parts(const struct tg_state *st, const char *key_id, const struct tg_token_policy **tp,
          const struct tg_aliases **al)
{
    const struct tg_key_limits *k = tg_state_key_settings(st, key_id);
    *tp = k != NULL ? &k->token_policy : NULL;
    *al = k != NULL ? &k->aliases : NULL;
}

bool
tg_policies_touch(const struct tg_state *st, const struct tg_project *p, const char *key_id,
                  const char *model)
{
    const struct tg_token_policy *ktp;
    const struct tg_aliases *kal;
    key_parts(st, key_id, &ktp, &kal);
    if (!tg_token_policy_is_empty(&p->token_policy) ||
        (ktp != NULL && !tg_token_policy_is_empty(ktp))) {
        return true;
    }
    return model != NULL && tg_aliases_find(kal, &p->aliases, model) != NULL;
}

struct allow_ctx {
    const struct tg_project *p;
    const struct tg_config *cfg;
};

static bool
allow(const char *model, void *arg)
{
    const struct allow_ctx *a = arg;
    return tg_project_allows(a->p, a->cfg, model) && tg_config_route(a->cfg, model) != NULL;
}

static int
resolve(const struct tg_state *st, const struct tg_project *p, const struct tg_alias *a,
        struct tg_policy_outcome *out)
{
    if (a->model != NULL) {
        out->model = a->model;
        return 0;
    }
    const char *names[MAX_TIER_MODELS];
    size_t n = tg_config_tier_models(st->config, a->tier, names, MAX_TIER_MODELS);
    struct allow_ctx ctx = {p, st->config};
    out->model = tg_alias_pick_cheapest(names, n, st->prices, allow, &ctx);
    if (out->model != NULL) {
        return 0;
    }
    out->status = 404;
    snprintf(out->message, sizeof(out->message),
             "The model alias `%.64s` names the tier `%.64s`, which has no model this project "
             "may use with a known price.",
             a->name, a->tier);
    snprintf(out->param, sizeof(out->param), "model");
    return TG_EINVAL;
}

int
tg_policies_apply(const struct tg_state *st, const struct tg_project *p, const char *key_id,
                  enum tg_api api, const char *model, json_t *body, struct tg_policy_outcome *out)
{
    memset(out, 0, sizeof(*out));
    out->model = model;
    const struct tg_token_policy *ktp;
    const struct tg_aliases *kal;
    key_parts(st, key_id, &ktp, &kal);
    const struct tg_alias *a = model != NULL ? tg_aliases_find(kal, &p->aliases, model) : NULL;
    if (a != NULL) {
        int rc = resolve(st, p, a, out);
        if (rc < 0) {
            return rc;
        }
        out->is_alias = true;
        json_object_set_new(body, "model", json_string(out->model));
    }
    struct tg_token_policy merged;
    tg_token_policy_merge(ktp, &p->token_policy, &merged);
    struct tg_policy_result res;
    if (tg_token_policy_apply(&merged, api, body, &res) < 0) {
        out->status = 400;
        snprintf(out->message, sizeof(out->message), "%s", res.message);
        snprintf(out->param, sizeof(out->param), "%s", res.param);
        return TG_EINVAL;
    }
    /* The header is a list of short names; truncating it is harmless, so it is built with
     * bounded appends rather than one snprintf the compiler flags as possibly truncated. */
    struct tg_buf h;
    tg_buf_init(&h, sizeof(out->header) - 1);
    tg_buf_append_str(&h, out->is_alias ? "model=aliased" : "");
    tg_buf_append_str(&h, out->is_alias && res.changes[0] != '\0' ? "," : "");
    tg_buf_append_str(&h, res.changes);
    size_t n = h.len < sizeof(out->header) - 1 ? h.len : sizeof(out->header) - 1;
    memcpy(out->header, h.data ? h.data : "", n);
    out->header[n] = '\0';
    tg_buf_deinit(&h);
    return 0;
}
