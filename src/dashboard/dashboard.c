/*
 * dashboard.c: serves the page and its assets from the arrays the build compiled in.
 *
 * The table below names each asset once; CMakeLists.txt embeds the same files (tg_embed,
 * names web_<file>). ETags are a 64-bit FNV-1a of the content, computed once on first use:
 * the content never changes while the process runs, so a strong validator is exact.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "dashboard/dashboard.h"

extern const unsigned char tg_embed_web_index_html[];
extern const size_t tg_embed_web_index_html_len;
extern const unsigned char tg_embed_web_app_js[];
extern const size_t tg_embed_web_app_js_len;
extern const unsigned char tg_embed_web_app_css[];
extern const size_t tg_embed_web_app_css_len;
extern const unsigned char tg_embed_web_uplot_js[];
extern const size_t tg_embed_web_uplot_js_len;
extern const unsigned char tg_embed_web_uplot_css[];
extern const size_t tg_embed_web_uplot_css_len;

#define PREFIX "/dashboard"

struct source {
    const char *name;
    const char *content_type;
    const unsigned char *data;
    const size_t *len;
};

static const struct source sources[] = {
    {"index.html", "text/html; charset=utf-8", tg_embed_web_index_html,
     &tg_embed_web_index_html_len},
    {"app.js", "text/javascript; charset=utf-8", tg_embed_web_app_js, &tg_embed_web_app_js_len},
    {"app.css", "text/css; charset=utf-8", tg_embed_web_app_css, &tg_embed_web_app_css_len},
    {"uPlot.iife.min.js", "text/javascript; charset=utf-8", tg_embed_web_uplot_js,
     &tg_embed_web_uplot_js_len},
    {"uPlot.min.css", "text/css; charset=utf-8", tg_embed_web_uplot_css,
     &tg_embed_web_uplot_css_len},
};

#define N_ASSETS (sizeof(sources) / sizeof(sources[0]))

static struct tg_dashboard_asset assets[N_ASSETS];
static char etags[N_ASSETS][24];
static pthread_once_t assets_once = PTHREAD_ONCE_INIT;

static void
assets_init(void)
{
    for (size_t i = 0; i < N_ASSETS; i++) {
        const struct source *s = &sources[i];
        uint64_t h = 14695981039346656037ULL;
        for (size_t k = 0; k < *s->len; k++) {
            h = (h ^ s->data[k]) * 1099511628211ULL;
        }
        snprintf(etags[i], sizeof(etags[i]), "\"%016llx\"", (unsigned long long)h);
        assets[i] =
            (struct tg_dashboard_asset){s->name, s->content_type, s->data, *s->len, etags[i]};
    }
}

const struct tg_dashboard_asset *
tg_dashboard_asset_find(const char *path)
{
    pthread_once(&assets_once, assets_init);
    if (strncmp(path, PREFIX, strlen(PREFIX)) != 0) {
        return NULL;
    }
    const char *rest = path + strlen(PREFIX);
    if (*rest == '\0' || strcmp(rest, "/") == 0) {
        return &assets[0];
    }
    if (*rest != '/') {
        return NULL;
    }
    rest++;
    for (size_t i = 0; i < N_ASSETS; i++) {
        if (strcmp(rest, assets[i].name) == 0) {
            return &assets[i];
        }
    }
    return NULL;
}

/* Whether an If-None-Match value (a list of validators, or "*") holds etag. Weak validators
 * (W/"...") match too: If-None-Match compares weakly. */
static bool
etag_matches(const char *inm, const char *etag)
{
    size_t n = strlen(etag);
    for (const char *p = inm; *p != '\0';) {
        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        if (*p == '*') {
            return true;
        }
        if (strncmp(p, "W/", 2) == 0) {
            p += 2;
        }
        if (strncmp(p, etag, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ' ')) {
            return true;
        }
        while (*p != '\0' && *p != ',') {
            p++;
        }
    }
    return false;
}

/* Sent with every answer, errors included: the page loads only from this origin, runs no
 * inline code, cannot be framed, and leaks no URL to anyone. */
#define CSP                                                                                        \
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "                \
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

void
tg_dashboard_serve(struct tg_http_req *req)
{
    const struct tg_dashboard_asset *a = tg_dashboard_asset_find(req->path);
    struct tg_http_header hdrs[6] = {
        {"Content-Security-Policy", CSP},
        {"X-Content-Type-Options", "nosniff"},
        {"Referrer-Policy", "no-referrer"},
        {"X-Frame-Options", "DENY"},
    };
    size_t n = 4;
    if (a == NULL) {
        static const char body[] =
            "{\"error\":{\"message\":\"No such dashboard file.\",\"type\":"
            "\"invalid_request_error\",\"param\":null,\"code\":\"not_found\"}}";
        tg_http_respond(req, 404, "application/json", hdrs, n, body, sizeof(body) - 1);
        return;
    }
    hdrs[n++] = (struct tg_http_header){"ETag", a->etag};
    hdrs[n++] = (struct tg_http_header){"Cache-Control", "no-cache"};
    const char *inm = tg_http_req_header(req, "If-None-Match");
    if (inm != NULL && etag_matches(inm, a->etag)) {
        tg_http_respond(req, 304, NULL, hdrs, n, NULL, 0);
        return;
    }
    tg_http_respond(req, 200, a->content_type, hdrs, n, (const char *)a->data, a->len);
}
