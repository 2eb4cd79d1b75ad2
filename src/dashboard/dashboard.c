/*
 * dashboard.c: serves the page and its assets.
 */
#include "dashboard/dashboard.h"

void
tg_dashboard_serve(struct tg_http_req *req)
{
    tg_http_respond_error(req, 404, "The dashboard is not available yet.", "invalid_request_error",
                          NULL, NULL);
}
