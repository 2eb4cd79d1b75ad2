/*
 * batch.h: the Files and Batch APIs (/v1/files, /v1/batches) relayed with project isolation.
 *
 * An upload's JSONL lines name models: each line's model is checked against the project and
 * renamed to the provider's name before the file goes to the one provider those models route
 * to. Ownership (file id or batch id -> project, provider, models) is kept in the store as
 * documents of kind "file" and "batch"; a project sees only its own (404 for others'). When a
 * batch is retrieved as completed, its output file is read once and every line's usage goes
 * into the ledger at the batch price: 50% of the standard price (OpenAI's batch discount),
 * one row per line, endpoint "batch:<endpoint>", request_id the batch id (the ledger skips a
 * row it already holds, so a second read bills nothing).
 */
#ifndef TG_GATEWAY_BATCH_H
#define TG_GATEWAY_BATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "gateway/worker.h"
#include "http/server.h"
#include "policy/keys.h"

/* True for the paths this module serves: /v1/files[/...] and /v1/batches[/...]. */
bool tg_batch_path_is_ours(const char *path);

/* Handles a Files or Batch API request of an authenticated project key. key and project
 * belong to state (borrowed; the job takes its own reference to state). Finishes req. */
void tg_batch_handle(struct tg_worker *w, struct tg_http_req *req, struct tg_state *state,
                     const struct tg_key_entry *key, const struct tg_project *project);

/* One part of a multipart/form-data body; pointers into the body (not NUL-terminated). */
struct tg_multipart_part {
    const char *name;
    size_t name_len;
    const char *filename; /* NULL when the part has none */
    size_t filename_len;
    const char *data;
    size_t data_len;
};

/* Parses body per content_type ("multipart/form-data; boundary=..."). Returns 0 and the
 * number of parts in *n (at most cap), or TG_EPARSE for a malformed body or too many parts. */
int tg_multipart_parse(const char *content_type, const char *body, size_t len,
                       struct tg_multipart_part *parts, size_t cap, size_t *n);

#endif
