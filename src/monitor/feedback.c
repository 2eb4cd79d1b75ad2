/*
 * feedback.c: POST /v1/feedback.
 */
#include "monitor/feedback.h"

void
tg_feedback_handle(struct tg_worker *w, struct tg_http_req *req, struct tg_state *st,
                   const struct tg_key_entry *key, const struct tg_project *p)
{
    (void)w;
    (void)st;
    (void)key;
    (void)p;
    tg_http_respond_error(req, 501, "Feedback is not available yet.", "server_error", NULL, NULL);
}
