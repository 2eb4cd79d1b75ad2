/*
 * notify_send.c: one delivery over the network, blocking, on the notifier thread: a webhook
 * POST (libcurl HTTP) or one e-mail (libcurl SMTP).
 *
 * Each transfer has a total timeout and a progress callback that aborts it when the notifier
 * stops, so stopping the gateway never waits on a slow receiver. What a receiver answers is
 * read up to a small cap and dropped: only the status matters. Errors name the status or
 * curl's reason, never a secret (credentials and signatures stay out of every message).
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/mem.h"
#include "notify/notify_int.h"

#define MAX_REPLY_BYTES 4096

static int
on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    struct tg_notifier *n = arg;
    return atomic_load(&n->is_stopping) ? 1 : 0;
}

static size_t
on_reply(char *p, size_t size, size_t nmemb, void *arg)
{
    size_t *seen = arg;
    size_t len = size * nmemb;
    *seen += len;
    /* Returning less than len aborts: a receiver that streams forever is cut off. */
    return *seen <= MAX_REPLY_BYTES ? len : 0;
}

static void
common_opts(CURL *c, struct tg_notifier *n, uint64_t timeout_ms)
{
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms < 10000 ? timeout_ms : 10000));
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, n);
}

int
notify_send_webhook(struct tg_notifier *n, const char *url, const char *secret, size_t secret_len,
                    const char *body, int64_t now_ms, char *err, size_t err_cap)
{
    CURL *c = curl_easy_init();
    if (c == NULL) {
        snprintf(err, err_cap, "cannot make a curl handle");
        return TG_ENOMEM;
    }
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "User-Agent: tollgate-webhook/1");
    /* No "Expect: 100-continue": a small body goes in one request. */
    h = curl_slist_append(h, "Expect:");
    if (secret != NULL) {
        char sig[128];
        tg_notify_signature(secret, secret_len, now_ms / 1000, body, strlen(body), sig,
                            sizeof(sig));
        char line[160];
        snprintf(line, sizeof(line), "X-Tollgate-Signature: %s", sig);
        h = curl_slist_append(h, line);
    }
    size_t seen = 0;
    common_opts(c, n, n->o.webhook_timeout_ms);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_reply);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &seen);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && status >= 200)) {
        snprintf(err, err_cap, "%s", curl_easy_strerror(cc));
        return cc == CURLE_OPERATION_TIMEDOUT ? TG_ETIMEOUT : TG_EUPSTREAM;
    }
    if (status < 200 || status > 299) {
        snprintf(err, err_cap, "HTTP %ld", status);
        return TG_EUPSTREAM;
    }
    return 0;
}

/* ---- SMTP -------------------------------------------------------------------------------- */

struct upload {
    const char *p;
    size_t left;
};

static size_t
on_read(char *out, size_t size, size_t nmemb, void *arg)
{
    struct upload *u = arg;
    size_t n = size * nmemb < u->left ? size * nmemb : u->left;
    memcpy(out, u->p, n);
    u->p += n;
    u->left -= n;
    return n;
}

/* Resolves an optional credential reference into *out (NULL when ref is NULL). */
static int
credential(const char *ref, const char *what, char **out, char *err, size_t err_cap)
{
    *out = NULL;
    if (ref == NULL) {
        return 0;
    }
    *out = tg_config_resolve_secret(ref, what, err, err_cap);
    return *out != NULL ? 0 : TG_ECONFIG;
}

static void
wipe(char *s)
{
    if (s != NULL) {
        memset(s, 0, strlen(s));
        free(s);
    }
}

int
notify_send_email(struct tg_notifier *n, const char *to, const char *event_json, char *err,
                  size_t err_cap)
{
    const struct tg_smtp_conf *smtp = n->o.smtp;
    if (smtp == NULL || smtp->host == NULL) {
        snprintf(err, err_cap, "notifications.smtp is not configured");
        return TG_ECONFIG;
    }
    struct tg_buf msg;
    tg_buf_init(&msg, 0);
    if (tg_notify_email_render(event_json, smtp->from, to, &msg) < 0) {
        tg_buf_deinit(&msg);
        snprintf(err, err_cap, "malformed event in the outbox");
        return TG_EPARSE;
    }
    char *user = NULL;
    char *pass = NULL;
    int rc = credential(smtp->username, "notifications.smtp.username", &user, err, err_cap);
    rc = rc < 0 ? rc
                : credential(smtp->password, "notifications.smtp.password", &pass, err, err_cap);
    CURL *c = rc == 0 ? curl_easy_init() : NULL;
    if (rc == 0 && c == NULL) {
        snprintf(err, err_cap, "cannot make a curl handle");
        rc = TG_ENOMEM;
    }
    if (rc < 0) {
        wipe(user);
        wipe(pass);
        tg_buf_deinit(&msg);
        return rc;
    }
    char url[512];
    bool is_v6 = strchr(smtp->host, ':') != NULL;
    snprintf(url, sizeof(url), "%s://%s%s%s:%d", smtp->is_tls ? "smtps" : "smtp", is_v6 ? "[" : "",
             smtp->host, is_v6 ? "]" : "", smtp->port);
    char from[300];
    snprintf(from, sizeof(from), "<%s>", smtp->from);
    char rcpt_line[300];
    snprintf(rcpt_line, sizeof(rcpt_line), "<%s>", to);
    struct curl_slist *rcpt = curl_slist_append(NULL, rcpt_line);
    struct upload up = {msg.data, msg.len};
    common_opts(c, n, smtp->timeout_ms);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &up);
    if (smtp->starttls) {
        curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
    }
    if (user != NULL) {
        curl_easy_setopt(c, CURLOPT_USERNAME, user);
    }
    if (pass != NULL) {
        curl_easy_setopt(c, CURLOPT_PASSWORD, pass);
    }
    CURLcode cc = curl_easy_perform(c);
    long reply = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply);
    curl_easy_cleanup(c);
    curl_slist_free_all(rcpt);
    wipe(user);
    wipe(pass);
    tg_buf_deinit(&msg);
    if (cc != CURLE_OK) {
        snprintf(err, err_cap, "%s (SMTP reply %ld)", curl_easy_strerror(cc), reply);
        return cc == CURLE_OPERATION_TIMEDOUT ? TG_ETIMEOUT : TG_EUPSTREAM;
    }
    return 0;
}
