/*
 * cache_int.h: helpers the cache backends share (private to src/cache).
 */
#ifndef TG_CACHE_CACHE_INT_H
#define TG_CACHE_CACHE_INT_H

#include "cache/cache.h"

/* True when f selects an entry of that project, model and creation time, now being now_ms. */
bool tg_cache_filter_match(const struct tg_cache_filter *f, const char *project_id,
                           const char *model, int64_t created_ms, int64_t now_ms);

#endif
