/*
 * cli_http.c: the CLI's side of the admin API: where to connect and with which key, one
 * blocking request with libcurl's easy interface, cursor-list pagination, and error output.
 *
 * Invariants: the admin key goes only into the Authorization header; every message printed
 * passes through tg_cli_fail, which blanks the key out should an answer ever echo it; the
 * answer is read into a capped buffer, so a misbehaving server cannot exhaust memory.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "core/err.h"
#include "core/json.h"
#include "core/mem.h"

#define TG_CLI_MAX_RESPONSE_BYTES (64u << 20)
#define TG_CLI_MAX_PAGES 10000
#define TG_CLI_DEFAULT_URL "http://127.0.0.1:8080"
#define TG_CLI_DEFAULT_DATA_DIR "./tollgate-data"

/* ---- sources ----------------------------------------------------------------------------- */

static bool
is_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* Heap copy of s without surrounding white space. */
static char *
dup_trimmed(const char *s, size_t len)
{
    while (len > 0 && isspace((unsigned char)s[0])) {
        s++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)s[len - 1])) {
        len--;
    }
    return tg_xstrndup(s, len);
}

/* Reads the first line of path into *key_out. Returns 0, or -1 with *why set. */
static int
read_key_file(const char *path, char **key_out, const char **why)
{
    char line[1024];
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        *why = strerror(errno);
        return -1;
    }
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = '\0';
    char *nl = strchr(line, '\n');
    char *key = dup_trimmed(line, nl ? (size_t)(nl - line) : n);
    explicit_bzero(line, sizeof(line));
    if (key[0] == '\0') {
        free(key);
        *why = "the file is empty";
        return -1;
    }
    *key_out = key;
    return 0;
}

int
tg_cli_key_resolve(const struct tg_cli_key_sources *src, char **key_out, struct tg_buf *err)
{
    *key_out = NULL;
    if (is_set(src->opt_key)) {
        *key_out = dup_trimmed(src->opt_key, strlen(src->opt_key));
        return 0;
    }
    if (is_set(src->env_key)) {
        *key_out = dup_trimmed(src->env_key, strlen(src->env_key));
        return 0;
    }
    const char *dir = TG_CLI_DEFAULT_DATA_DIR;
    const char *dir_from = "the default data dir";
    if (is_set(src->opt_data_dir)) {
        dir = src->opt_data_dir;
        dir_from = "--data-dir";
    } else if (is_set(src->env_data_dir)) {
        dir = src->env_data_dir;
        dir_from = "$TOLLGATE_DATA_DIR";
    }
    size_t dlen = strlen(dir);
    char *path = tg_xasprintf("%s%sadmin.key", dir, dlen > 0 && dir[dlen - 1] == '/' ? "" : "/");
    const char *why = NULL;
    int rc = read_key_file(path, key_out, &why);
    if (rc < 0) {
        tg_buf_appendf(err,
                       "no admin key found; tried --key (not given), $TOLLGATE_ADMIN_KEY (not "
                       "set) and %s (%s: %s). Pass --key, set TOLLGATE_ADMIN_KEY, or point "
                       "--data-dir at the gateway's data directory.",
                       path, dir_from, why);
    }
    free(path);
    return rc < 0 ? TG_ENOTFOUND : 0;
}

char *
tg_cli_url_resolve(const char *opt_url, const char *env_url)
{
    const char *u = is_set(opt_url) ? opt_url : is_set(env_url) ? env_url : TG_CLI_DEFAULT_URL;
    char *url = tg_xstrdup(u);
    size_t len = strlen(url);
    while (len > 0 && url[len - 1] == '/') {
        url[--len] = '\0';
    }
    if (len >= 3 && strcmp(url + len - 3, "/v1") == 0) {
        len -= 3;
        url[len] = '\0';
    }
    return url;
}

void
tg_cli_url_escape(struct tg_buf *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            tg_buf_append(out, p, 1);
        } else {
            char enc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            tg_buf_append(out, enc, 3);
        }
    }
}

/* ---- output ------------------------------------------------------------------------------ */

void
tg_cli_fail(struct tg_cli *cli, const char *fmt, ...)
{
    struct tg_buf msg;
    va_list ap;
    tg_buf_init(&msg, 0);
    va_start(ap, fmt);
    tg_buf_vappendf(&msg, fmt, ap);
    va_end(ap);
    fputs("tollgate: ", cli->err);
    size_t klen = cli->key ? strlen(cli->key) : 0;
    for (size_t i = 0; i < msg.len; i++) {
        unsigned char c = (unsigned char)msg.data[i];
        if (klen > 0 && strncmp(msg.data + i, cli->key, klen) == 0) {
            fputs("[admin key]", cli->err);
            i += klen - 1;
        } else {
            fputc(c < 0x20 || c == 0x7f ? ' ' : c, cli->err);
        }
    }
    fputc('\n', cli->err);
    tg_buf_deinit(&msg);
}

void
tg_cli_json_print(struct tg_cli *cli, const json_t *v)
{
    json_dumpf(v, cli->out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', cli->out);
}

/* ---- one request ------------------------------------------------------------------------- */

static size_t
write_cb(char *p, size_t size, size_t n, void *arg)
{
    return tg_buf_append(arg, p, size * n) == 0 ? size * n : 0;
}

/* Reports a non-2xx answer, with the API's error message when the body has one. */
static void
fail_status(struct tg_cli *cli, long status, const json_t *body, const struct tg_buf *raw,
            const char *method, const char *path)
{
    const char *msg = tg_json_str(json_object_get(body, "error"), "message");
    if (msg != NULL) {
        tg_cli_fail(cli, "%ld %s", status, msg);
    } else if (raw->len > 0) {
        tg_cli_fail(cli, "%ld from %s %s: %.200s", status, method, path, raw->data);
    } else {
        tg_cli_fail(cli, "%ld from %s %s (no error message)", status, method, path);
    }
}

static CURL *
easy_new(struct tg_cli *cli, const char *url, struct curl_slist *hdrs, struct tg_buf *resp,
         char *errbuf)
{
    CURL *h = curl_easy_init();
    if (h == NULL) {
        return NULL;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "tollgate-cli");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 300000L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    return h;
}

/* One exchange: the answer's body in resp (capped) and its status in *status. Returns 0, or a
 * negative code after reporting a transport failure. Without an admin key (invite
 * acceptance) no Authorization header is sent. */
static int
perform(struct tg_cli *cli, const char *method, const char *path, const char *body,
        struct tg_buf *resp, long *status)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    int rc = 0;
    char *url = tg_xasprintf("%s%s", cli->url, path);
    char *auth = cli->key ? tg_xasprintf("Authorization: Bearer %s", cli->key) : NULL;
    if (auth != NULL) {
        hdrs = curl_slist_append(hdrs, auth);
    }
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (body != NULL) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        hdrs = curl_slist_append(hdrs, "Expect:");
    }
    CURL *h = easy_new(cli, url, hdrs, resp, errbuf);
    if (h == NULL || hdrs == NULL) {
        tg_cli_fail(cli, "could not set up an HTTP request");
        rc = TG_ENOMEM;
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    CURLcode cc = curl_easy_perform(h);
    if (cc == CURLE_WRITE_ERROR) {
        tg_cli_fail(cli, "the answer to %s %s is larger than %u MiB", method, path,
                    TG_CLI_MAX_RESPONSE_BYTES >> 20);
        rc = TG_ETOOBIG;
        goto out;
    }
    if (cc != CURLE_OK) {
        tg_cli_fail(cli, "cannot reach %s: %s%s", cli->url,
                    errbuf[0] ? errbuf : curl_easy_strerror(cc),
                    cc == CURLE_COULDNT_CONNECT
                        ? " (is `tollgate serve` running there? see --url / TOLLGATE_URL)"
                        : "");
        rc = TG_ECONNECT;
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
out:
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    if (auth != NULL) {
        explicit_bzero(auth, strlen(auth));
    }
    free(auth);
    free(url);
    return rc;
}

int
tg_cli_request(struct tg_cli *cli, const char *method, const char *path, const char *body,
               json_t **out)
{
    struct tg_buf resp;
    json_t *v = NULL;
    long status = 0;
    *out = NULL;
    tg_buf_init(&resp, TG_CLI_MAX_RESPONSE_BYTES);
    int rc = perform(cli, method, path, body, &resp, &status);
    if (rc < 0) {
        goto out;
    }
    v = json_loadb(resp.data ? resp.data : "", resp.len, 0, NULL);
    if (status < 200 || status > 299) {
        fail_status(cli, status, v, &resp, method, path);
        rc = TG_EUPSTREAM;
    } else if (v == NULL) {
        tg_cli_fail(cli, "the answer to %s %s is not JSON", method, path);
        rc = TG_EPARSE;
    } else {
        *out = v;
        v = NULL;
    }
out:
    json_decref(v);
    tg_buf_deinit(&resp);
    return rc;
}

int
tg_cli_request_text(struct tg_cli *cli, const char *method, const char *path, const char *body,
                    struct tg_buf *out)
{
    struct tg_buf resp;
    long status = 0;
    tg_buf_init(&resp, TG_CLI_MAX_RESPONSE_BYTES);
    int rc = perform(cli, method, path, body, &resp, &status);
    if (rc == 0 && (status < 200 || status > 299)) {
        /* Errors are JSON whatever the route answers when it succeeds. */
        json_t *v = json_loadb(resp.data ? resp.data : "", resp.len, 0, NULL);
        fail_status(cli, status, v, &resp, method, path);
        json_decref(v);
        rc = TG_EUPSTREAM;
    } else if (rc == 0) {
        tg_buf_append(out, resp.data ? resp.data : "", resp.len);
    }
    tg_buf_deinit(&resp);
    return rc;
}

char *
tg_cli_path(const char *fmt, ...)
{
    struct tg_buf b;
    va_list ap;
    tg_buf_init(&b, 0);
    tg_buf_append_str(&b, "/v1/organization/");
    va_start(ap, fmt);
    for (const char *p = fmt; *p != '\0'; p++) {
        if (p[0] == '%' && p[1] == 's') {
            tg_cli_url_escape(&b, va_arg(ap, const char *));
            p++;
        } else {
            tg_buf_append(&b, p, 1);
        }
    }
    va_end(ap);
    return tg_buf_steal(&b, NULL);
}

/* ---- cursor lists ------------------------------------------------------------------------- */

/* Appends page's data to *all (taking page), or makes page *all. Returns 0 or TG_EPARSE. */
static int
merge_page(struct tg_cli *cli, const char *path, json_t **all, json_t *page)
{
    json_t *data = json_object_get(page, "data");
    if (!json_is_array(data)) {
        tg_cli_fail(cli, "the answer to GET %s has no \"data\" list", path);
        json_decref(page);
        return TG_EPARSE;
    }
    if (*all == NULL) {
        *all = page;
        return 0;
    }
    json_array_extend(json_object_get(*all, "data"), data);
    json_decref(page);
    return 0;
}

int
tg_cli_list_fetch(struct tg_cli *cli, const char *path, json_t **out)
{
    return tg_cli_list_fetch_max(cli, path, 0, out);
}

/* Items in the merged list so far. */
static size_t
n_items(const json_t *all)
{
    return all != NULL ? json_array_size(json_object_get(all, "data")) : 0;
}

int
tg_cli_list_fetch_max(struct tg_cli *cli, const char *path, size_t max_items, json_t **out)
{
    json_t *all = NULL;
    char *after = NULL;
    struct tg_buf p;
    int rc = 0;
    bool has_more = false;
    tg_buf_init(&p, 0);
    for (int n = 0; n < TG_CLI_MAX_PAGES; n++) {
        json_t *page = NULL;
        size_t want = 100;
        if (max_items > 0 && max_items - n_items(all) < want) {
            want = max_items - n_items(all);
        }
        tg_buf_reset(&p);
        tg_buf_appendf(&p, "%s%climit=%zu", path, strchr(path, '?') ? '&' : '?', want);
        if (after != NULL) {
            tg_buf_append_str(&p, "&after=");
            tg_cli_url_escape(&p, after);
        }
        rc = tg_cli_request(cli, "GET", p.data, NULL, &page);
        if (rc < 0) {
            goto out;
        }
        has_more = json_is_true(json_object_get(page, "has_more"));
        const char *last = tg_json_str(page, "last_id");
        char *next =
            last && last[0] && (!after || strcmp(last, after) != 0) ? tg_xstrdup(last) : NULL;
        rc = merge_page(cli, path, &all, page);
        free(after);
        after = next;
        if (rc < 0 || !has_more || (max_items > 0 && n_items(all) >= max_items)) {
            goto out;
        }
        if (after == NULL) {
            tg_cli_fail(cli, "the answer to GET %s says has_more but gives no new last_id", path);
            rc = TG_EPARSE;
            goto out;
        }
    }
    tg_cli_fail(cli, "GET %s: more than %d pages", path, TG_CLI_MAX_PAGES);
    rc = TG_ETOOBIG;
out:
    if (rc == 0 && all != NULL) {
        /* A server that ignored the smaller limit still yields at most max_items. */
        json_t *data = json_object_get(all, "data");
        while (max_items > 0 && json_array_size(data) > max_items) {
            json_array_remove(data, json_array_size(data) - 1);
            has_more = true;
        }
        json_object_set_new(all, "has_more", json_boolean(has_more && max_items > 0));
        const char *last_id = tg_json_str(json_array_get(data, json_array_size(data) - 1), "id");
        if (last_id != NULL || after != NULL) {
            json_object_set_new(all, "last_id", json_string(last_id ? last_id : after));
        }
    }
    if (rc < 0) {
        json_decref(all);
        all = NULL;
    }
    free(after);
    tg_buf_deinit(&p);
    *out = all;
    return rc;
}

/* ---- reports ----------------------------------------------------------------------------- */

/* GETs every page of r (next_page cursors) into one page object in *out. */
static int
report_fetch(struct tg_cli *cli, const struct tg_cli_report *r, json_t **out)
{
    struct tg_buf path;
    json_t *all = NULL;
    char *page = NULL;
    int rc = 0;
    tg_buf_init(&path, 0);
    for (int n = 0; n < TG_CLI_MAX_PAGES; n++) {
        json_t *ans = NULL;
        tg_buf_reset(&path);
        r->path(r->q, page, false, &path);
        rc = tg_cli_request(cli, "GET", path.data, NULL, &ans);
        if (rc < 0) {
            goto out;
        }
        json_t *data = json_object_get(ans, "data");
        const char *next = tg_json_str(ans, "next_page");
        bool is_last = !json_is_true(json_object_get(ans, "has_more")) || next == NULL ||
                       (page != NULL && strcmp(next, page) == 0);
        free(page);
        page = is_last ? NULL : tg_xstrdup(next);
        if (!json_is_array(data)) {
            tg_cli_fail(cli, "the %s answer has no \"data\" list", r->what);
            json_decref(ans);
            rc = TG_EPARSE;
            goto out;
        }
        if (all == NULL) {
            all = ans;
        } else {
            json_array_extend(json_object_get(all, "data"), data);
            json_decref(ans);
        }
        if (page == NULL) {
            json_object_set_new(all, "has_more", json_false());
            json_object_set_new(all, "next_page", json_null());
            goto out;
        }
    }
    tg_cli_fail(cli, "the %s answer has more than %d pages", r->what, TG_CLI_MAX_PAGES);
    rc = TG_ETOOBIG;
out:
    free(page);
    tg_buf_deinit(&path);
    if (rc < 0) {
        json_decref(all);
        all = NULL;
    }
    *out = all;
    return rc;
}

int
tg_cli_report_run(struct tg_cli *cli, const struct tg_cli_report *r)
{
    struct tg_buf b;
    json_t *all = NULL;
    json_t *projects = NULL;
    int rc = 1;
    tg_buf_init(&b, 0);
    if (cli->args->opt[TG_CLI_OPT_CSV] != NULL) {
        /* One CSV answer covers the whole window: no pages to follow. */
        struct tg_buf csv;
        r->path(r->q, NULL, true, &b);
        tg_buf_init(&csv, 0);
        if (tg_cli_request_text(cli, "GET", b.data, NULL, &csv) == 0) {
            fwrite(csv.data, 1, csv.len, cli->out);
            rc = 0;
        }
        tg_buf_deinit(&csv);
        goto out;
    }
    if (report_fetch(cli, r, &all) < 0) {
        goto out;
    }
    if (cli->is_json) {
        tg_cli_json_print(cli, all);
        rc = 0;
        goto out;
    }
    /* Project ids mean little to a reader: show names when grouping by project. */
    if (r->by_project && tg_cli_list_fetch(cli, "/v1/organization/projects", &projects) < 0) {
        goto out;
    }
    if (r->table(all, r->q, projects, &b) < 0) {
        tg_cli_fail(cli, "the %s answer does not have the expected shape", r->what);
        goto out;
    }
    fputs(b.data, cli->out);
    rc = 0;
out:
    json_decref(all);
    json_decref(projects);
    tg_buf_deinit(&b);
    return rc;
}
