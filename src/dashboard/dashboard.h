/*
 * dashboard.h: the web dashboard at /dashboard: a static page and its assets, built into the
 * binary. The page signs in with an admin key and reads the admin API like any client.
 *
 * The assets are the files of web/ (index.html, app.js, app.css) and uPlot's dist files,
 * compiled in by the build (tg_embed), so the page needs nothing from another origin. Every
 * answer carries a strict Content-Security-Policy (only this origin; no inline script or
 * style; no framing), nosniff and no-referrer. Assets are revalidated on each load (ETag,
 * Cache-Control: no-cache) so an upgraded binary is never shadowed by a cached page.
 */
#ifndef TG_DASHBOARD_DASHBOARD_H
#define TG_DASHBOARD_DASHBOARD_H

#include <stddef.h>

#include "http/server.h"

/* One file of the page, as served. */
struct tg_dashboard_asset {
    const char *name;         /* under /dashboard/, e.g. "app.js" */
    const char *content_type; /* with charset for text */
    const unsigned char *data;
    size_t len;
    const char *etag; /* quoted strong validator of the content, e.g. "\"3f2a...\"" */
};

/* The asset a request path names: "/dashboard" and "/dashboard/" are the page
 * (index.html), "/dashboard/<name>" the asset of that name; NULL for any other path.
 * Thread-safe; the result lives as long as the process. */
const struct tg_dashboard_asset *tg_dashboard_asset_find(const char *path);

/* Answers GET (and HEAD) /dashboard, /dashboard/ and /dashboard/<asset>: the asset, 304 when
 * If-None-Match holds its ETag, or a 404 OpenAI error for an unknown name. */
void tg_dashboard_serve(struct tg_http_req *req);

#endif
