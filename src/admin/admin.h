/*
 * admin.h: the admin API under /v1/organization/..., in the shapes of OpenAI's Admin API.
 *
 * Routes live in one declared table in admin.c (method, path pattern, roles, handler), from
 * which the README's route table is made. Handlers that read or change the store run on the
 * libuv thread pool and answer on the loop; a change to keys or projects reloads the state
 * snapshot before the answer goes out, so the change holds for the next request on every
 * worker of this node.
 *
 * The admin layer borrows the gateway's state snapshot (gateway/state.h): the one place where
 * a lower folder reads the wiring's types, kept to that header.
 */
#ifndef TG_ADMIN_ADMIN_H
#define TG_ADMIN_ADMIN_H

#include <stdbool.h>
#include <uv.h>

#include "gateway/state.h"
#include "http/server.h"
#include "policy/keys.h"

/* Handles req (path under /v1/organization/) for an authenticated admin key. state is
 * borrowed for the call (the handler takes its own reference when it goes async).
 * Finishes req. */
void tg_admin_handle(struct tg_http_req *req, uv_loop_t *loop, struct tg_state *state,
                     const struct tg_key_entry *key);

/* True when req is a public admin route (invite acceptance), answered without an admin key
 * by tg_admin_handle_public (same ownership and threads as tg_admin_handle). */
bool tg_admin_is_public(const struct tg_http_req *req);
void tg_admin_handle_public(struct tg_http_req *req, uv_loop_t *loop, struct tg_state *state);

#endif
