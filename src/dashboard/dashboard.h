/*
 * dashboard.h: the web dashboard at /dashboard: a static page and its assets, built into the
 * binary. The page signs in with an admin key and reads the admin API like any client.
 */
#ifndef TG_DASHBOARD_DASHBOARD_H
#define TG_DASHBOARD_DASHBOARD_H

#include "http/server.h"

/* Answers GET /dashboard, /dashboard/ and /dashboard/<asset>. */
void tg_dashboard_serve(struct tg_http_req *req);

#endif
