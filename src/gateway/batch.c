/*
 * batch.c: the Files and Batch APIs (see batch.h).
 *
 * One job per request, in the request's arena, walks a short chain of steps: a store step
 * (thread pool: the store blocks), an upstream step (the worker's curl client), and the
 * answer. Listing answers from the store's copy of each object (refreshed whenever the object
 * passes through), so a project never sees another's ids even in a list. Only HTTP providers
 * of the OpenAI shape ("openai", "openai-compatible") carry files and batches.
 */
#include "gateway/batch.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"
#include "policy/admission.h"
#include "policy/price.h"
#include "store/store.h"
#include "upstream/api.h"
#include "upstream/provider.h"

#define MAX_PARTS 16
#define UP_BOUNDARY "tollgate-batch-3f9c2a71e4b8d605"

enum op {
    OP_FILE_CREATE,
    OP_FILE_LIST,
    OP_FILE_GET,
    OP_FILE_CONTENT,
    OP_FILE_DELETE,
    OP_BATCH_CREATE,
    OP_BATCH_LIST,
    OP_BATCH_GET,
    OP_BATCH_CANCEL,
};

enum store_op { S_GET, S_PUT, S_DELETE, S_LIST };

struct job;
typedef void (*step_fn)(struct job *j);

struct job {
    struct tg_worker *w;
    struct tg_http_req *req;
    struct tg_state *state;
    const struct tg_key_entry *key;
    const struct tg_project *project;
    enum op op;
    const char *id; /* file or batch id from the path (arena) */
    const struct tg_provider *provider;

    /* Store step. */
    uv_work_t work;
    enum store_op sop;
    const char *kind;
    const char *doc_id;
    char *put_data; /* S_PUT: JSON text (heap) */
    json_t *doc;    /* S_GET: the document's data; S_LIST: array of data objects */
    char *doc_project;
    int store_rc;
    step_fn after_store;

    /* Upstream step. */
    struct tg_upstream_call *up;
    struct tg_buf up_body; /* what we send */
    struct tg_buf resp;    /* what came back */
    int status;
    char content_type[96];
    char *url;
    char *auth;
    step_fn after_upstream;
    int up_err;

    json_t *file_doc; /* OP_BATCH_CREATE: the input file's document */
};

/* ---- small helpers -------------------------------------------------------------------- */

static void
job_cleanup(void *arg)
{
    struct job *j = arg;
    tg_buf_deinit(&j->up_body);
    tg_buf_deinit(&j->resp);
    free(j->put_data);
    free(j->doc_project);
    free(j->url);
    if (j->auth != NULL) {
        explicit_bzero(j->auth, strlen(j->auth));
        free(j->auth);
    }
    json_decref(j->doc);
    json_decref(j->file_doc);
    tg_state_unref(j->state);
}

static void
fail(struct job *j, int status, const char *message, const char *param, const char *code)
{
    tg_http_respond_error(j->req, status, message,
                          status >= 500 ? "server_error" : "invalid_request_error", param, code);
}

static void
not_found(struct job *j)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "No such %s: '%.100s'", j->op < OP_BATCH_CREATE ? "File" : "Batch",
             j->id);
    fail(j, 404, msg, "id", NULL);
}

static void
respond_json_buf(struct job *j, int status, struct tg_buf *b)
{
    tg_http_respond(j->req, status, "application/json", NULL, 0, b->data ? b->data : "", b->len);
}

static bool
provider_carries_files(const struct tg_provider *p)
{
    return p != NULL && p->base_url != NULL &&
           (strcmp(p->type, "openai") == 0 || strcmp(p->type, "openai-compatible") == 0);
}

/* The provider and provider-side name for model if the project may use it, else NULL. */
static const struct tg_provider *
route_model(const struct job *j, const char *model, const char **upstream)
{
    const struct tg_config *cfg = j->state->config;
    if (!tg_project_allows(j->project, cfg, model)) {
        return NULL;
    }
    const struct tg_model_route *r = tg_config_route(cfg, model);
    if (r == NULL) {
        return NULL;
    }
    *upstream = strcmp(r->name, "*") == 0 ? model : r->upstream_model;
    return tg_config_provider(cfg, r->provider);
}

/* ---- multipart ------------------------------------------------------------------------ */

static const char *
find(const char *hay, size_t n, const char *needle, size_t m)
{
    return m == 0 ? hay : memmem(hay, n, needle, m);
}

/* The value of attr (e.g. name) in a header's parameters: "name=\"x\"" or name=x. */
static bool
header_param(const char *h, size_t n, const char *attr, const char **v, size_t *vlen)
{
    size_t alen = strlen(attr);
    for (size_t i = 0; i + alen + 1 <= n; i++) {
        bool at_word = i == 0 || h[i - 1] == ';' || h[i - 1] == ' ' || h[i - 1] == '\t';
        if (!at_word || strncasecmp(h + i, attr, alen) != 0 || h[i + alen] != '=') {
            continue;
        }
        const char *p = h + i + alen + 1;
        const char *end = h + n;
        if (p < end && *p == '"') {
            const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
            if (q == NULL) {
                return false;
            }
            *v = p + 1;
            *vlen = (size_t)(q - p - 1);
            return true;
        }
        const char *q = p;
        while (q < end && *q != ';' && *q != ' ' && *q != '\r') {
            q++;
        }
        *v = p;
        *vlen = (size_t)(q - p);
        return true;
    }
    return false;
}

/* Reads one part's header block [h, h+n) into part. */
static int
part_headers(const char *h, size_t n, struct tg_multipart_part *part)
{
    const char *end = h + n;
    for (const char *line = h; line < end;) {
        const char *eol = find(line, (size_t)(end - line), "\r\n", 2);
        size_t ll = eol ? (size_t)(eol - line) : (size_t)(end - line);
        static const char cd[] = "content-disposition:";
        if (ll >= sizeof(cd) - 1 && strncasecmp(line, cd, sizeof(cd) - 1) == 0) {
            if (!header_param(line, ll, "name", &part->name, &part->name_len)) {
                return TG_EPARSE;
            }
            if (!header_param(line, ll, "filename", &part->filename, &part->filename_len)) {
                part->filename = NULL;
            }
        }
        line = eol ? eol + 2 : end;
    }
    return part->name != NULL ? 0 : TG_EPARSE;
}

int
tg_multipart_parse(const char *content_type, const char *body, size_t len,
                   struct tg_multipart_part *parts, size_t cap, size_t *n)
{
    *n = 0;
    static const char mp[] = "multipart/form-data";
    if (content_type == NULL || strncasecmp(content_type, mp, sizeof(mp) - 1) != 0) {
        return TG_EPARSE;
    }
    const char *b;
    size_t blen;
    if (!header_param(content_type, strlen(content_type), "boundary", &b, &blen) || blen == 0 ||
        blen > 200) {
        return TG_EPARSE;
    }
    char delim[208];
    int dlen = snprintf(delim, sizeof(delim), "\r\n--%.*s", (int)blen, b);
    /* The first delimiter may open the body without the CRLF before it. */
    const char *p;
    if (len >= (size_t)dlen - 2 && memcmp(body, delim + 2, (size_t)dlen - 2) == 0) {
        p = body + dlen - 2;
    } else {
        p = find(body, len, delim, (size_t)dlen);
        if (p == NULL) {
            return TG_EPARSE;
        }
        p += dlen;
    }
    const char *end = body + len;
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
            return 0; /* the closing delimiter */
        }
        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
            return TG_EPARSE;
        }
        p += 2;
        const char *hend = find(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (hend == NULL || *n >= cap) {
            return TG_EPARSE;
        }
        struct tg_multipart_part *part = &parts[*n];
        memset(part, 0, sizeof(*part));
        size_t hlen = (size_t)(hend - p) + 2; /* keep the last header's CRLF */
        if (part_headers(p, hlen, part) < 0) {
            return TG_EPARSE;
        }
        const char *data = hend + 4;
        const char *next = find(data, (size_t)(end - data), delim, (size_t)dlen);
        if (next == NULL) {
            return TG_EPARSE;
        }
        part->data = data;
        part->data_len = (size_t)(next - data);
        (*n)++;
        p = next + dlen;
    }
}

/* ---- store step (thread pool) ---------------------------------------------------------- */

static int
got_doc(const struct tg_doc *d, void *arg)
{
    struct job *j = arg;
    j->doc = json_loads(d->data, 0, NULL);
    j->doc_project = d->project_id ? tg_xstrdup(d->project_id) : NULL;
    return 0;
}

static int
listed_doc(const struct tg_doc *d, void *arg)
{
    struct job *j = arg;
    json_t *v = json_loads(d->data, 0, NULL);
    if (v != NULL) {
        json_array_append_new(j->doc, v);
    }
    return 0;
}

static void
store_work(uv_work_t *wk)
{
    struct job *j = wk->data;
    struct tg_store *s = tg_state_env_get()->store;
    if (s == NULL) {
        j->store_rc = TG_EIO;
        return;
    }
    switch (j->sop) {
    case S_GET:
        j->store_rc = s->ops->doc_get(s, j->kind, j->doc_id, got_doc, j);
        if (j->store_rc == 0 && j->doc == NULL) {
            j->store_rc = TG_EPARSE;
        }
        break;
    case S_PUT: {
        int64_t now = tg_clock_unix_ms();
        struct tg_doc d = {.kind = j->kind,
                           .id = j->doc_id,
                           .org_id = j->key->org_id,
                           .project_id = j->project->id,
                           .data = j->put_data,
                           .created_ms = now,
                           .updated_ms = now};
        j->store_rc = s->ops->doc_put(s, &d);
        break;
    }
    case S_DELETE:
        j->store_rc = s->ops->doc_delete(s, j->kind, j->doc_id);
        break;
    case S_LIST:
        j->doc = json_array();
        j->store_rc = s->ops->doc_list(s, j->kind, j->key->org_id, j->project->id, listed_doc, j);
        break;
    }
}

static void
store_done(uv_work_t *wk, int status)
{
    struct job *j = wk->data;
    if (status != 0) {
        j->store_rc = TG_ECANCELED;
    }
    if (j->store_rc < 0 && j->store_rc != TG_ENOTFOUND) {
        tg_log_error("batch: store %s %s failed: %s", j->kind, j->doc_id ? j->doc_id : "(list)",
                     tg_strerror(j->store_rc));
    }
    j->after_store(j);
}

static void
store_run(struct job *j, enum store_op sop, const char *kind, const char *id, step_fn next)
{
    j->sop = sop;
    j->kind = kind;
    j->doc_id = id;
    j->after_store = next;
    if (sop == S_GET || sop == S_LIST) {
        json_decref(j->doc);
        j->doc = NULL;
        free(j->doc_project);
        j->doc_project = NULL;
    }
    j->work.data = j;
    int rc = uv_queue_work(&j->w->loop, &j->work, store_work, store_done);
    if (rc != 0) {
        fail(j, 500, "The gateway could not reach its store.", NULL, NULL);
    }
}

/* Puts a document whose data is obj (reference taken), then runs next. */
static void
store_put(struct job *j, const char *kind, const char *id, json_t *obj, step_fn next)
{
    free(j->put_data);
    j->put_data = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    store_run(j, S_PUT, kind, id, next);
}

/* After S_GET of the path's object: false (answered 404/500) unless it is the project's. */
static bool
owned(struct job *j)
{
    if (j->store_rc == TG_ENOTFOUND ||
        (j->store_rc == 0 && (j->doc_project == NULL || strcmp(j->doc_project, j->project->id)))) {
        not_found(j);
        return false;
    }
    if (j->store_rc < 0) {
        fail(j, 500, "The gateway's store failed; try again.", NULL, NULL);
        return false;
    }
    const char *pname = tg_json_str(j->doc, "provider");
    j->provider = pname ? tg_config_provider(j->state->config, pname) : NULL;
    if (!provider_carries_files(j->provider)) {
        fail(j, 502, "The provider of this object is no longer configured.", NULL, NULL);
        return false;
    }
    if (j->provider->unavailable != NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg), "The provider %s of this object is unavailable: %s.",
                 j->provider->name, j->provider->unavailable);
        fail(j, 503, msg, NULL, NULL);
        return false;
    }
    return true;
}

/* ---- upstream step --------------------------------------------------------------------- */

static void
on_up_headers(int status, const struct tg_upstream_header *h, size_t n, void *arg)
{
    struct job *j = arg;
    j->status = status;
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(h[i].name, "content-type") == 0) {
            snprintf(j->content_type, sizeof(j->content_type), "%s", h[i].value);
        }
    }
}

static int
on_up_data(const char *data, size_t len, void *arg)
{
    struct job *j = arg;
    return tg_buf_append(&j->resp, data, len) < 0 ? TG_ECANCELED : 0;
}

static void
on_up_done(int err, const char *message, void *arg)
{
    struct job *j = arg;
    j->up = NULL;
    j->up_err = err;
    if (err < 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "The upstream provider %s failed: %s", j->provider->name,
                 message ? message : tg_strerror(err));
        fail(j, err == TG_ETIMEOUT ? 504 : 502, msg, NULL, NULL);
        return;
    }
    j->after_upstream(j);
}

static const struct tg_upstream_callbacks up_callbacks = {on_up_headers, on_up_data, on_up_done};

/* Calls method base_url + path on j->provider with j->up_body (when content_type is set). */
static void
upstream_run(struct job *j, const char *method, const char *path, const char *content_type,
             step_fn next)
{
    const struct tg_provider *p = j->provider;
    size_t n = strlen(p->base_url);
    while (n > 0 && p->base_url[n - 1] == '/') {
        n--;
    }
    free(j->url);
    j->url = tg_xasprintf("%.*s%s", (int)n, p->base_url, path);
    struct tg_upstream_header hdrs[3];
    size_t nh = 0;
    if (p->api_key != NULL && p->api_key[0] != '\0' && j->auth == NULL) {
        j->auth = tg_xasprintf("Bearer %s", p->api_key);
    }
    if (j->auth != NULL) {
        hdrs[nh++] = (struct tg_upstream_header){"Authorization", j->auth};
    }
    if (content_type != NULL) {
        hdrs[nh++] = (struct tg_upstream_header){"Content-Type", content_type};
    }
    hdrs[nh++] = (struct tg_upstream_header){"X-Client-Request-Id", j->req->id};
    struct tg_upstream_request ureq = {.method = method,
                                       .url = j->url,
                                       .headers = hdrs,
                                       .n_headers = nh,
                                       .body = content_type ? j->up_body.data : NULL,
                                       .body_len = content_type ? j->up_body.len : 0,
                                       .timeouts = p->timeouts};
    struct tg_upstream_timeouts d;
    tg_upstream_timeouts_default(&d);
    ureq.timeouts.connect_ms = ureq.timeouts.connect_ms ? ureq.timeouts.connect_ms : d.connect_ms;
    ureq.timeouts.first_byte_ms =
        ureq.timeouts.first_byte_ms ? ureq.timeouts.first_byte_ms : d.first_byte_ms;
    ureq.timeouts.idle_ms = ureq.timeouts.idle_ms ? ureq.timeouts.idle_ms : d.idle_ms;
    ureq.timeouts.total_ms = ureq.timeouts.total_ms ? ureq.timeouts.total_ms : d.total_ms;
    tg_buf_reset(&j->resp);
    j->status = 0;
    j->content_type[0] = '\0';
    j->after_upstream = next;
    int rc = tg_upstream_call_start(j->w->upstream, &ureq, &up_callbacks, j, &j->up);
    if (rc < 0) {
        fail(j, 502, "The upstream provider could not be called.", NULL, NULL);
    }
}

/* Relays a non-2xx upstream answer as is (an OpenAI error body); true when it did. */
static bool
relay_error(struct job *j)
{
    if (j->status >= 200 && j->status < 300) {
        return false;
    }
    tg_http_respond(j->req, j->status, "application/json", NULL, 0,
                    j->resp.data ? j->resp.data : "", j->resp.len);
    return true;
}

static json_t *
resp_json(struct job *j)
{
    json_t *v = json_loadb(j->resp.data ? j->resp.data : "", j->resp.len, 0, NULL);
    if (!json_is_object(v) || tg_json_str(v, "id") == NULL) {
        json_decref(v);
        fail(j, 502, "The upstream provider answered with an unreadable object.", NULL, NULL);
        return NULL;
    }
    return v;
}

static void
answer_resp(struct job *j)
{
    tg_http_respond(j->req, 200, "application/json", NULL, 0, j->resp.data ? j->resp.data : "",
                    j->resp.len);
}

/* ---- files ---------------------------------------------------------------------------- */

struct upload {
    const char *purpose;
    size_t purpose_len;
    const struct tg_multipart_part *file;
};

/* Checks and rewrites the JSONL lines into out; records {model: first line} in models.
 * Returns the provider every allowed model routes to, or NULL (answered). */
static const struct tg_provider *
rewrite_lines(struct job *j, const char *data, size_t len, struct tg_buf *out, json_t *models)
{
    const struct tg_provider *prov = NULL;
    int line_no = 0;
    char msg[300];
    for (const char *p = data, *end = data + len; p < end;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t ll = eol ? (size_t)(eol - p) : (size_t)(end - p);
        const char *line = p;
        p = eol ? eol + 1 : end;
        line_no++;
        if (ll > 0 && line[ll - 1] == '\r') {
            ll--;
        }
        if (ll == 0) {
            continue;
        }
        json_t *v = json_loadb(line, ll, 0, NULL);
        json_t *body = json_object_get(v, "body");
        const char *model = tg_json_str(body, "model");
        if (model == NULL) {
            json_decref(v);
            snprintf(msg, sizeof(msg),
                     "Line %d of the file is not a request object with body.model.", line_no);
            fail(j, 400, msg, "file", "invalid_file_format");
            return NULL;
        }
        if (json_object_get(models, model) == NULL) {
            json_object_set_new(models, model, json_integer(line_no));
        }
        const char *upstream = NULL;
        const struct tg_provider *lp = route_model(j, model, &upstream);
        if (lp != NULL && prov != NULL && lp != prov) {
            json_decref(v);
            snprintf(msg, sizeof(msg),
                     "Line %d: the model `%.100s` is served by another provider than the "
                     "file's earlier lines; a batch goes to one provider.",
                     line_no, model);
            fail(j, 400, msg, "file", "invalid_file_format");
            return NULL;
        }
        if (lp != NULL) {
            prov = lp;
            json_object_set_new(body, "model", json_string(upstream));
        }
        char *text = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(v);
        tg_buf_append_str(out, text);
        tg_buf_append_str(out, "\n");
        free(text);
    }
    if (prov == NULL) {
        fail(j, 400, "No line of the file names a model this project can use.", "file",
             "model_not_found");
    } else if (prov->unavailable != NULL) {
        /* Its key was missing at start: say so here rather than let the provider answer 401. */
        snprintf(msg, sizeof(msg), "The provider %s of these models is unavailable: %s.",
                 prov->name, prov->unavailable);
        fail(j, 503, msg, NULL, NULL);
        prov = NULL;
    } else if (!provider_carries_files(prov)) {
        snprintf(msg, sizeof(msg), "The provider %s of these models does not take batch files.",
                 prov->name);
        fail(j, 400, msg, "file", NULL);
        prov = NULL;
    }
    return prov;
}

static void
created_stored(struct job *j)
{
    if (j->store_rc < 0) {
        fail(j, 500, "The object was created but its ownership could not be recorded.", NULL, NULL);
        return;
    }
    answer_resp(j);
}

/* A create the provider answered: the object is recorded as the project's (kind "file" or
 * "batch", with its provider and the models it names), then the answer goes out. */
static void
record_created(struct job *j, const char *kind, json_t *models)
{
    if (relay_error(j)) {
        return;
    }
    json_t *obj = resp_json(j);
    if (obj == NULL) {
        return;
    }
    json_t *d = json_object();
    json_object_set_new(d, "provider", json_string(j->provider->name));
    json_object_set(d, "models", models);
    if (strcmp(kind, "batch") == 0) {
        json_object_set_new(d, "is_accounted", json_false());
    }
    json_object_set_new(d, "object", obj);
    j->id = tg_arena_strdup(&j->req->arena, tg_json_str(obj, "id"));
    store_put(j, kind, j->id, d, created_stored);
}

static void
file_created(struct job *j)
{
    record_created(j, "file", j->file_doc);
}

static void
file_create(struct job *j)
{
    struct tg_multipart_part parts[MAX_PARTS];
    size_t n = 0;
    const char *ct = tg_http_req_header(j->req, "content-type");
    if (tg_multipart_parse(ct, j->req->body.data, j->req->body.len, parts, MAX_PARTS, &n) < 0) {
        fail(j, 400, "Expected a multipart/form-data body with a file and purpose.", NULL, NULL);
        return;
    }
    struct upload u = {0};
    for (size_t i = 0; i < n; i++) {
        if (parts[i].name_len == 7 && memcmp(parts[i].name, "purpose", 7) == 0) {
            u.purpose = parts[i].data;
            u.purpose_len = parts[i].data_len;
        } else if (parts[i].name_len == 4 && memcmp(parts[i].name, "file", 4) == 0) {
            u.file = &parts[i];
        }
    }
    if (u.file == NULL) {
        fail(j, 400, "Missing required parameter: 'file'.", "file", NULL);
        return;
    }
    if (u.purpose == NULL || u.purpose_len != 5 || memcmp(u.purpose, "batch", 5) != 0) {
        fail(j, 400, "This gateway accepts files with purpose 'batch' only.", "purpose", NULL);
        return;
    }
    struct tg_buf lines;
    tg_buf_init(&lines, 0);
    j->file_doc = json_object();
    j->provider = rewrite_lines(j, u.file->data, u.file->data_len, &lines, j->file_doc);
    if (j->provider == NULL || memmem(lines.data, lines.len, UP_BOUNDARY, strlen(UP_BOUNDARY))) {
        if (j->provider != NULL) {
            fail(j, 400, "The file could not be framed for the provider.", "file", NULL);
        }
        tg_buf_deinit(&lines);
        return;
    }
    struct tg_buf *b = &j->up_body;
    tg_buf_append_str(b, "--" UP_BOUNDARY "\r\nContent-Disposition: form-data; "
                         "name=\"purpose\"\r\n\r\nbatch\r\n--" UP_BOUNDARY "\r\n");
    tg_buf_appendf(b,
                   "Content-Disposition: form-data; name=\"file\"; filename=\"%.*s\"\r\n"
                   "Content-Type: application/jsonl\r\n\r\n",
                   u.file->filename ? (int)u.file->filename_len : 11,
                   u.file->filename ? u.file->filename : "batch.jsonl");
    tg_buf_append(b, lines.data ? lines.data : "", lines.len);
    tg_buf_append_str(b, "\r\n--" UP_BOUNDARY "--\r\n");
    tg_buf_deinit(&lines);
    upstream_run(j, "POST", "/files", "multipart/form-data; boundary=" UP_BOUNDARY, file_created);
}

/* A list answer from the stored copies, newest first, limited by ?limit. */
static void
list_listed(struct job *j)
{
    if (j->store_rc < 0) {
        fail(j, 500, "The gateway's store failed; try again.", NULL, NULL);
        return;
    }
    const char *lim = tg_http_req_query(j->req, "limit");
    long limit = lim ? strtol(lim, NULL, 10) : 10000;
    limit = limit > 0 ? limit : 10000;
    const char *after = tg_http_req_query(j->req, "after");
    struct tg_buf b;
    tg_buf_init(&b, 0);
    tg_buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    size_t n = json_array_size(j->doc);
    long shown = 0;
    bool skipping = after != NULL && after[0] != '\0';
    bool has_more = false;
    const char *first = NULL, *last = NULL;
    for (size_t i = n; i-- > 0;) {
        json_t *obj = json_object_get(json_array_get(j->doc, i), "object");
        const char *id = tg_json_str(obj, "id");
        if (id == NULL) {
            continue;
        }
        if (skipping) {
            skipping = strcmp(id, after) != 0;
            continue;
        }
        if (shown == limit) {
            has_more = true;
            break;
        }
        char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
        tg_buf_append_str(&b, shown ? "," : "");
        tg_buf_append_str(&b, text);
        free(text);
        first = first ? first : id;
        last = id;
        shown++;
    }
    tg_buf_append_str(&b, "],\"first_id\":");
    first ? tg_json_quote(&b, first) : tg_buf_append_str(&b, "null");
    tg_buf_append_str(&b, ",\"last_id\":");
    last ? tg_json_quote(&b, last) : tg_buf_append_str(&b, "null");
    tg_buf_appendf(&b, ",\"has_more\":%s}", has_more ? "true" : "false");
    respond_json_buf(j, 200, &b);
    tg_buf_deinit(&b);
}

static void
file_content_got(struct job *j)
{
    if (relay_error(j)) {
        return;
    }
    tg_http_respond(j->req, 200, j->content_type[0] ? j->content_type : "application/octet-stream",
                    NULL, 0, j->resp.data ? j->resp.data : "", j->resp.len);
}

static void
file_deleted_stored(struct job *j)
{
    answer_resp(j);
}

static void
file_deleted(struct job *j)
{
    if (relay_error(j)) {
        return;
    }
    store_run(j, S_DELETE, "file", j->id, file_deleted_stored);
}

static void
file_owned(struct job *j)
{
    if (!owned(j)) {
        return;
    }
    char *path = tg_arena_sprintf(&j->req->arena, "/files/%s%s", j->id,
                                  j->op == OP_FILE_CONTENT ? "/content" : "");
    if (j->op == OP_FILE_DELETE) {
        upstream_run(j, "DELETE", path, NULL, file_deleted);
    } else if (j->op == OP_FILE_CONTENT) {
        upstream_run(j, "GET", path, NULL, file_content_got);
    } else {
        upstream_run(j, "GET", path, NULL, answer_resp);
    }
}

/* ---- batches --------------------------------------------------------------------------- */

static void batch_refresh(struct job *j);

static void
batch_created(struct job *j)
{
    record_created(j, "batch", json_object_get(j->file_doc, "models"));
}

/* Every model of the input file must be one the project may use now, on the file's
 * provider; the first that is not is refused with its line. */
static bool
check_models(struct job *j)
{
    json_t *models = json_object_get(j->file_doc, "models");
    const char *model;
    json_t *line;
    json_object_foreach(models, model, line)
    {
        const char *upstream = NULL;
        const struct tg_provider *p = route_model(j, model, &upstream);
        if (p != j->provider) {
            char msg[300];
            snprintf(msg, sizeof(msg),
                     "Line %lld of the input file: the model `%.100s` does not exist or you do "
                     "not have access to it.",
                     (long long)json_integer_value(line), model);
            fail(j, 400, msg, "input_file_id", "model_not_found");
            return false;
        }
    }
    return true;
}

static void
batch_file_owned(struct job *j)
{
    if (!owned(j)) {
        return;
    }
    j->file_doc = j->doc;
    j->doc = NULL;
    if (!check_models(j)) {
        return;
    }
    json_t *body = json_loadb(j->req->body.data, j->req->body.len, 0, NULL);
    char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    tg_buf_append_str(&j->up_body, text);
    free(text);
    upstream_run(j, "POST", "/batches", "application/json", batch_created);
}

/*
 * A batch's cost is known only when it completes, so it cannot reserve its bound as a live call
 * does; but a batch is not started for a key, project or organization whose monthly budget is
 * already used up (its cost is charged on completion, see charge_budgets). Answers 429
 * insufficient_quota and returns true when so.
 */
static bool
budget_is_spent(struct job *j)
{
    struct tg_admission *a = tg_state_env_get()->admission;
    if (a == NULL) {
        return false;
    }
    const struct tg_level_limits *levels[TG_SCOPE_COUNT] = {
        [TG_SCOPE_KEY] = tg_state_key_limits(j->state, j->key->id),
        [TG_SCOPE_PROJECT] = &j->project->limits,
        [TG_SCOPE_ORG] = &j->state->org_limits,
    };
    const char *ids[TG_SCOPE_COUNT] = {j->key->id, j->project->id, j->key->org_id};
    int64_t now = tg_clock_unix_ms();
    for (int s = 0; s < TG_SCOPE_COUNT; s++) {
        const struct tg_level_limits *l = levels[s];
        if (l == NULL || !l->has_budget || l->budget.monthly_limit_micros <= 0) {
            continue;
        }
        int64_t limit = l->budget.monthly_limit_micros;
        if (a->ops->spend(a, (enum tg_scope)s, ids[s], now) < limit) {
            continue;
        }
        char usd[32];
        char msg[200];
        tg_price_format_usd(limit, usd, sizeof(usd));
        snprintf(msg, sizeof(msg),
                 "The %s's monthly budget of $%s is used up: no batch can start until the next "
                 "period or a higher limit.",
                 tg_scope_name((enum tg_scope)s), usd);
        tg_http_respond_error(j->req, 429, msg, "insufficient_quota", NULL, "insufficient_quota");
        return true;
    }
    return false;
}

static void
batch_create(struct job *j)
{
    json_t *body = json_loadb(j->req->body.data, j->req->body.len, 0, NULL);
    const char *fid = tg_json_str(body, "input_file_id");
    const char *endpoint = tg_json_str(body, "endpoint");
    if (fid == NULL || endpoint == NULL) {
        fail(j, 400,
             fid == NULL ? "Missing required parameter: 'input_file_id'."
                         : "Missing required parameter: 'endpoint'.",
             fid == NULL ? "input_file_id" : "endpoint", NULL);
        json_decref(body);
        return;
    }
    enum tg_api api;
    if (!tg_api_from_path(endpoint, &api)) {
        fail(j, 400,
             "This gateway relays batches of /v1/chat/completions, /v1/completions, "
             "/v1/embeddings, /v1/responses and /v1/moderations only.",
             "endpoint", NULL);
        json_decref(body);
        return;
    }
    j->id = tg_arena_strdup(&j->req->arena, fid);
    json_decref(body);
    if (budget_is_spent(j)) {
        return;
    }
    store_run(j, S_GET, "file", j->id, batch_file_owned);
}

/* The client's model for the model an output line reports: the batch's one model, else the
 * line's own name. */
static const char *
client_model(json_t *doc, const char *reported)
{
    json_t *models = json_object_get(doc, "models");
    if (json_object_size(models) == 1) {
        return json_object_iter_key(json_object_iter(models));
    }
    return reported;
}

static int
cmp_custom_id(const void *a, const void *b)
{
    const char *x = tg_json_str(*(json_t *const *)a, "custom_id");
    const char *y = tg_json_str(*(json_t *const *)b, "custom_id");
    return strcmp(x ? x : "", y ? y : "");
}

static void
copy_field(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/*
 * A completed batch's cost counts against the month's budgets at once, as a live call's does
 * (admission's spend is what refuses the next request), not only after a restart reloads spend
 * from the ledger. Two retrieves racing on the first completion could both charge: that errs
 * towards refusing early, never towards overspending.
 */
static void
charge_budgets(struct job *j, int64_t micros)
{
    const struct tg_state_env *env = tg_state_env_get();
    struct tg_admission *a = env->admission;
    if (a == NULL || micros <= 0) {
        return;
    }
    int64_t start =
        tg_period_start_ms(tg_clock_unix_ms(), j->state->config->budget_tz_offset_minutes);
    a->ops->seed_spend(a, TG_SCOPE_KEY, j->key->id, start, micros);
    a->ops->seed_spend(a, TG_SCOPE_PROJECT, j->project->id, start, micros);
    a->ops->seed_spend(a, TG_SCOPE_ORG, j->key->org_id, start, micros);
}

/* One ledger row per output line at the batch price (50% of standard, rounded up). Lines
 * are numbered in custom_id order, so two reads of the same output give the same rows and
 * the ledger keeps the first. */
static void
account_output(struct job *j, json_t *batch)
{
    const char *endpoint = tg_json_str(batch, "endpoint");
    enum tg_api api = TG_API_CHAT;
    tg_api_from_path(endpoint ? endpoint : "", &api);
    json_t *lines = json_array();
    const char *data = j->resp.data ? j->resp.data : "";
    for (const char *p = data, *end = data + j->resp.len; p < end;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t ll = eol ? (size_t)(eol - p) : (size_t)(end - p);
        json_t *v = ll ? json_loadb(p, ll, 0, NULL) : NULL;
        if (json_is_object(v)) {
            json_array_append_new(lines, v);
        } else {
            json_decref(v);
        }
        p = eol ? eol + 1 : end;
    }
    size_t n = json_array_size(lines);
    json_t **sorted = tg_xcalloc(n ? n : 1, sizeof(*sorted));
    for (size_t i = 0; i < n; i++) {
        sorted[i] = json_array_get(lines, i);
    }
    qsort(sorted, n, sizeof(*sorted), cmp_custom_id);
    const struct tg_price_table *prices = j->state->prices;
    for (size_t i = 0; i < n; i++) {
        json_t *resp = json_object_get(sorted[i], "response");
        json_t *body = json_object_get(resp, "body");
        struct tg_usage u = {0};
        if (!tg_usage_from_response(api, body, &u)) {
            continue;
        }
        const char *reported = tg_json_str(body, "model");
        const char *model = client_model(j->doc, reported);
        const struct tg_price *price = tg_price_lookup(prices, model ? model : "");
        if (price == NULL && reported != NULL) {
            price = tg_price_lookup(prices, reported);
        }
        int64_t full = tg_price_cost_micros(price, &u);
        struct tg_ledger_row row;
        memset(&row, 0, sizeof(row));
        copy_field(row.request_id, sizeof(row.request_id), j->id);
        row.attempt = (int)i + 1;
        row.time_ms = tg_clock_unix_ms();
        copy_field(row.org_id, sizeof(row.org_id), j->key->org_id);
        copy_field(row.project_id, sizeof(row.project_id), j->project->id);
        copy_field(row.key_id, sizeof(row.key_id), j->key->id);
        copy_field(row.user_id, sizeof(row.user_id), j->key->owner_user_id);
        snprintf(row.endpoint, sizeof(row.endpoint), "batch:%s", endpoint ? endpoint : "");
        copy_field(row.model_requested, sizeof(row.model_requested), model);
        copy_field(row.provider, sizeof(row.provider), j->provider->name);
        copy_field(row.deployment, sizeof(row.deployment), reported);
        row.prompt_tokens = u.prompt_tokens;
        row.cached_tokens = u.cached_tokens;
        row.completion_tokens = u.completion_tokens;
        row.reasoning_tokens = u.reasoning_tokens;
        row.cost_micros = (full + 1) / 2;
        row.status = (int)tg_json_int(resp, "status_code", 200);
        row.ttft_ms = -1;
        tg_ledger_push(j->w->ledger, &row);
        charge_budgets(j, row.cost_micros);
    }
    free(sorted);
    json_decref(lines);
}

static void
batch_answer(struct job *j)
{
    if (j->store_rc < 0) {
        tg_log_warn("batch %s: its stored copy could not be refreshed", j->id);
    }
    char *text = json_dumps(json_object_get(j->doc, "object"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    tg_http_respond(j->req, 200, "application/json", NULL, 0, text, strlen(text));
    free(text);
}

static void
output_store_done(struct job *j)
{
    /* Its output and error files now belong to the batch's project too. */
    json_t *obj = json_object_get(j->doc, "object");
    static const char *const keys[] = {"output_file_id", "error_file_id"};
    for (size_t i = 0; i < 2; i++) {
        const char *fid = tg_json_str(obj, keys[i]);
        json_t *recorded = json_object_get(j->doc, keys[i]);
        if (fid != NULL && !json_is_true(recorded)) {
            json_object_set_new(j->doc, keys[i], json_true());
            json_t *d = json_object();
            json_object_set_new(d, "provider", json_string(j->provider->name));
            json_object_set_new(d, "models", json_object());
            json_t *fo = json_pack("{s:s,s:s,s:s}", "id", fid, "object", "file", "purpose",
                                   i == 0 ? "batch_output" : "batch_error");
            json_object_set_new(d, "object", fo);
            store_put(j, "file", tg_arena_strdup(&j->req->arena, fid), d, output_store_done);
            return;
        }
    }
    json_incref(j->doc);
    store_put(j, "batch", j->id, j->doc, batch_answer);
}

static void
output_read(struct job *j)
{
    if (j->status >= 200 && j->status < 300) {
        account_output(j, json_object_get(j->doc, "object"));
        json_object_set_new(j->doc, "is_accounted", json_true());
    } else {
        tg_log_warn("batch %s: output file unreadable (status %d); accounting later", j->id,
                    j->status);
    }
    output_store_done(j);
}

static void
batch_refreshed(struct job *j)
{
    if (relay_error(j)) {
        return;
    }
    json_t *obj = resp_json(j);
    if (obj == NULL) {
        return;
    }
    json_object_set_new(j->doc, "object", obj);
    const char *status = tg_json_str(obj, "status");
    const char *out = tg_json_str(obj, "output_file_id");
    if (j->op == OP_BATCH_GET && status != NULL && strcmp(status, "completed") == 0 &&
        out != NULL && !tg_json_bool(j->doc, "is_accounted", false)) {
        char *path = tg_arena_sprintf(&j->req->arena, "/files/%s/content", out);
        upstream_run(j, "GET", path, NULL, output_read);
        return;
    }
    output_store_done(j);
}

static void
batch_refresh(struct job *j)
{
    if (!owned(j)) {
        return;
    }
    if (j->op == OP_BATCH_CANCEL) {
        char *path = tg_arena_sprintf(&j->req->arena, "/batches/%s/cancel", j->id);
        tg_buf_append_str(&j->up_body, "{}");
        upstream_run(j, "POST", path, "application/json", batch_refreshed);
    } else {
        char *path = tg_arena_sprintf(&j->req->arena, "/batches/%s", j->id);
        upstream_run(j, "GET", path, NULL, batch_refreshed);
    }
}

/* ---- routing ---------------------------------------------------------------------------- */

bool
tg_batch_path_is_ours(const char *path)
{
    return strcmp(path, "/v1/files") == 0 || strncmp(path, "/v1/files/", 10) == 0 ||
           strcmp(path, "/v1/batches") == 0 || strncmp(path, "/v1/batches/", 12) == 0;
}

/* Maps method and path to an op and the id in the path; false when nothing matches. */
static bool
match(struct job *j, bool *method_ok)
{
    struct tg_http_req *req = j->req;
    const char *path = req->path;
    bool is_get = req->method == TG_HTTP_GET || req->method == TG_HTTP_HEAD;
    bool is_post = req->method == TG_HTTP_POST;
    const char *rest = NULL;
    bool files = false;
    *method_ok = true;
    if (strcmp(path, "/v1/files") == 0 || strcmp(path, "/v1/batches") == 0) {
        files = path[4] == 'f';
        if (is_post || is_get) {
            j->op = files ? (is_post ? OP_FILE_CREATE : OP_FILE_LIST)
                          : (is_post ? OP_BATCH_CREATE : OP_BATCH_LIST);
            return true;
        }
        *method_ok = false;
        return true;
    }
    files = strncmp(path, "/v1/files/", 10) == 0;
    rest = path + (files ? 10 : 12);
    const char *slash = strchr(rest, '/');
    size_t idlen = slash ? (size_t)(slash - rest) : strlen(rest);
    if (idlen == 0) {
        return false;
    }
    j->id = tg_arena_strndup(&req->arena, rest, idlen);
    const char *tail = slash ? slash : "";
    if (files && tail[0] == '\0') {
        j->op = req->method == TG_HTTP_DELETE ? OP_FILE_DELETE : OP_FILE_GET;
        *method_ok = is_get || req->method == TG_HTTP_DELETE;
    } else if (files && strcmp(tail, "/content") == 0) {
        j->op = OP_FILE_CONTENT;
        *method_ok = is_get;
    } else if (!files && tail[0] == '\0') {
        j->op = OP_BATCH_GET;
        *method_ok = is_get;
    } else if (!files && strcmp(tail, "/cancel") == 0) {
        j->op = OP_BATCH_CANCEL;
        *method_ok = is_post;
    } else {
        return false;
    }
    return true;
}

void
tg_batch_handle(struct tg_worker *w, struct tg_http_req *req, struct tg_state *state,
                const struct tg_key_entry *key, const struct tg_project *project)
{
    struct job *j = tg_arena_alloc(&req->arena, sizeof(*j));
    memset(j, 0, sizeof(*j));
    j->w = w;
    j->req = req;
    j->state = state;
    atomic_fetch_add(&state->refs, 1);
    j->key = key;
    j->project = project;
    tg_buf_init(&j->up_body, 0);
    tg_buf_init(&j->resp, state->config->max_response_bytes);
    tg_arena_cleanup_add(&req->arena, job_cleanup, j);
    bool method_ok = true;
    if (!match(j, &method_ok) || !method_ok) {
        char msg[300];
        snprintf(msg, sizeof(msg), "Invalid URL (%s %.200s)", req->method_name, req->path);
        fail(j, method_ok ? 404 : 405, msg, NULL, NULL);
        return;
    }
    switch (j->op) {
    case OP_FILE_CREATE:
        file_create(j);
        break;
    case OP_FILE_LIST:
        store_run(j, S_LIST, "file", NULL, list_listed);
        break;
    case OP_FILE_GET:
    case OP_FILE_CONTENT:
    case OP_FILE_DELETE:
        store_run(j, S_GET, "file", j->id, file_owned);
        break;
    case OP_BATCH_CREATE:
        batch_create(j);
        break;
    case OP_BATCH_LIST:
        store_run(j, S_LIST, "batch", NULL, list_listed);
        break;
    case OP_BATCH_GET:
    case OP_BATCH_CANCEL:
        store_run(j, S_GET, "batch", j->id, batch_refresh);
        break;
    }
}
