/*
 * provider.c: the registry of provider types and the call wrappers (see provider.h).
 *
 * The registry is one static table; adding a type is adding its ops here. The wrappers go
 * through the provider's ops (set by the config loader), falling back to the table by type
 * name so a provider struct made by hand still works.
 */
#include "upstream/provider.h"

#include <string.h>

#include "core/err.h"
#include "upstream/provider_int.h"

static const struct tg_provider_ops *const types[] = {
    &tg_provider_openai_ops,
    &tg_provider_compat_ops,
    &tg_provider_azure_ops,
    &tg_provider_mock_ops,
};

const struct tg_provider_ops *
tg_provider_ops_find(const char *type)
{
    if (type == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(types[i]->type, type) == 0) {
            return types[i];
        }
    }
    return NULL;
}

static const struct tg_provider_ops *
ops_of(const struct tg_provider *p)
{
    return p->ops != NULL ? p->ops : tg_provider_ops_find(p->type);
}

int
tg_provider_call_start(const struct tg_provider *p, struct tg_upstream_client *client,
                       uv_loop_t *loop, const struct tg_provider_request *req,
                       const struct tg_upstream_callbacks *cbs, void *arg,
                       struct tg_provider_call **out)
{
    const struct tg_provider_ops *ops = ops_of(p);
    if (ops == NULL) {
        return TG_ECONFIG;
    }
    return ops->start(p, client, loop, req, cbs, arg, out);
}

/* The call remembers the ops that made it, which is the right table even if p changed. */
void
tg_provider_call_resume(const struct tg_provider *p, struct tg_provider_call *call)
{
    if (call != NULL) {
        call->ops->resume(call);
    }
}

void
tg_provider_call_cancel(const struct tg_provider *p, struct tg_provider_call *call)
{
    if (call != NULL) {
        call->ops->cancel(call);
    }
}
