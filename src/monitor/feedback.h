/*
 * feedback.h: POST /v1/feedback, quality feedback from applications about one earlier request
 * of their project: {"request_id": "...", "score": number, "label": "...", "comment": "..."}.
 */
#ifndef TG_MONITOR_FEEDBACK_H
#define TG_MONITOR_FEEDBACK_H

#include "gateway/state.h"
#include "gateway/worker.h"
#include "http/server.h"

/* Handles the request for project p (authenticated with key); answers req. */
void tg_feedback_handle(struct tg_worker *w, struct tg_http_req *req, struct tg_state *st,
                        const struct tg_key_entry *key, const struct tg_project *p);

#endif
