/*
 * access_log.c: the access log's queue and writer thread.
 *
 * The queue is a ring of fixed slots allocated at start (queue_cap of them), each a copy of
 * one settled request's ledger row and quality fields, plus its bodies when the project logs
 * them (heap copies made before the lock is taken). A push holds the mutex for one copy; the
 * writer takes a batch of slots under the mutex and formats and writes them without it, so a
 * slow disk only fills the ring, and a full ring (or one whose bodies reach their own bound)
 * drops lines (counted) instead of stalling a loop thread or growing memory. Stop wakes the writer,
 * which empties the ring before it ends. Only the writer touches the file descriptor once started,
 * so a reopen (rotation) is a flag it acts on.
 */
#include "gateway/access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/thread.h"

#define BATCH 64

struct entry {
    struct tg_ledger_row row;
    int64_t upstream_ms;
    char finish_reason[32];
    bool is_cache_checked;
    bool has_bodies;
    char *request_body; /* heap copies, cut at TG_ACCESS_LOG_MAX_BODY_BYTES; NULL when none */
    size_t request_len;
    bool is_request_cut;
    char *response_body;
    size_t response_len;
    bool is_response_cut;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct entry *ring;
    size_t cap, head, n; /* n slots used, from head on */
    size_t body_bytes;   /* the queued lines' bodies */
    bool is_stopping;
    int fd; /* the writer's alone while it runs */
    bool is_stdout;
    char *path;
    pthread_t thread;
} q = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .fd = -1};

static atomic_bool is_on;
static atomic_bool is_reopen_wanted;
static atomic_uint_least64_t n_dropped;

static int
open_log(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/* ---- the line ----------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 when it is not one. */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < len; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }
    return len;
}

/* Appends len bytes at s as a JSON string: quotes, backslashes and control characters
 * escaped, UTF-8 kept, any other byte written as U+FFFD (the line stays valid JSON whatever
 * a client or provider sent). */
static int
quote(struct tg_buf *out, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    int rc = tg_buf_append(out, "\"", 1);
    size_t run = 0; /* bytes from i - run to i that need no escaping */
    size_t i = 0;
    while (rc == 0 && i < len) {
        unsigned char c = p[i];
        size_t n = 1;
        const char *esc = NULL;
        char u[8];
        if (c >= 0x80) {
            n = utf8_len(p + i, len - i);
            if (n == 0) {
                esc = "\\ufffd";
                n = 1;
            }
        } else if (c == '"') {
            esc = "\\\"";
        } else if (c == '\\') {
            esc = "\\\\";
        } else if (c == '\n') {
            esc = "\\n";
        } else if (c == '\r') {
            esc = "\\r";
        } else if (c == '\t') {
            esc = "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(u, sizeof(u), "\\u%04x", c);
            esc = u;
        }
        if (esc == NULL) {
            run += n;
            i += n;
            continue;
        }
        rc = tg_buf_append(out, s + i - run, run);
        rc = rc < 0 ? rc : tg_buf_append_str(out, esc);
        run = 0;
        i += n;
    }
    rc = rc < 0 ? rc : tg_buf_append(out, s + len - run, run);
    return rc < 0 ? rc : tg_buf_append(out, "\"", 1);
}

/* A string member: null when s is empty. */
static int
member(struct tg_buf *out, const char *name, const char *s)
{
    int rc = tg_buf_appendf(out, ",\"%s\":", name);
    if (rc < 0) {
        return rc;
    }
    return s == NULL || s[0] == '\0' ? tg_buf_append_str(out, "null") : quote(out, s, strlen(s));
}

/* A count member: null when v < 0 (not measured). */
static int
number(struct tg_buf *out, const char *name, int64_t v)
{
    return v < 0 ? tg_buf_appendf(out, ",\"%s\":null", name)
                 : tg_buf_appendf(out, ",\"%s\":%lld", name, (long long)v);
}

/* "2026-11-29T21:04:05.123Z" */
static int
rfc3339(struct tg_buf *out, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char when[32];
    if (ms < 0 || gmtime_r(&t, &tm) == NULL ||
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        return tg_buf_append_str(out, "null");
    }
    return tg_buf_appendf(out, "\"%s.%03dZ\"", when, (int)(ms % 1000));
}

static int
body(struct tg_buf *out, const char *name, const char *s, size_t len, bool is_cut)
{
    int rc = tg_buf_appendf(out, ",\"%s\":", name);
    rc = rc < 0 ? rc : quote(out, s != NULL ? s : "", s != NULL ? len : 0);
    if (rc == 0 && is_cut) {
        rc = tg_buf_appendf(out, ",\"%s_truncated\":true", name);
    }
    return rc;
}

static int
format_entry(struct tg_buf *out, const struct entry *e)
{
    const struct tg_ledger_row *r = &e->row;
    int rc = tg_buf_append_str(out, "{\"time\":");
    rc = rc < 0 ? rc : rfc3339(out, r->time_ms);
    rc = rc < 0 ? rc : member(out, "request_id", r->request_id);
    rc = rc < 0 ? rc : member(out, "key_id", r->key_id);
    rc = rc < 0 ? rc : member(out, "org_id", r->org_id);
    rc = rc < 0 ? rc : member(out, "project_id", r->project_id);
    rc = rc < 0 ? rc : member(out, "user_id", r->user_id);
    rc = rc < 0 ? rc : member(out, "endpoint", r->endpoint);
    rc = rc < 0 ? rc : member(out, "model", r->model_requested);
    rc = rc < 0 ? rc : member(out, "provider", r->provider);
    rc = rc < 0 ? rc : member(out, "deployment", r->deployment);
    rc = rc < 0 ? rc
                : tg_buf_appendf(out, ",\"status\":%d,\"stream\":%s", r->status,
                                 r->is_stream ? "true" : "false");
    rc = rc < 0 ? rc : number(out, "prompt_tokens", r->prompt_tokens);
    rc = rc < 0 ? rc : number(out, "cached_tokens", r->cached_tokens);
    rc = rc < 0 ? rc : number(out, "completion_tokens", r->completion_tokens);
    rc = rc < 0 ? rc : number(out, "reasoning_tokens", r->reasoning_tokens);
    rc = rc < 0 ? rc : tg_buf_appendf(out, ",\"cost_micros\":%lld", (long long)r->cost_micros);
    rc = rc < 0 ? rc : number(out, "latency_ms", r->latency_ms);
    rc = rc < 0 ? rc : number(out, "ttft_ms", r->ttft_ms);
    rc = rc < 0 ? rc : number(out, "upstream_ms", e->upstream_ms);
    /* A hit reads "cache" in the provider column; a miss consulted the cache and went on. */
    const char *cache = strcmp(r->provider, "cache") == 0 ? ",\"cache\":\"hit\""
                        : e->is_cache_checked             ? ",\"cache\":\"miss\""
                                                          : ",\"cache\":null";
    rc = rc < 0 ? rc : tg_buf_append_str(out, cache);
    rc = rc < 0 ? rc : member(out, "error", r->error);
    rc = rc < 0 ? rc
                : tg_buf_appendf(out, ",\"usage_estimated\":%s",
                                 r->is_usage_estimated ? "true" : "false");
    rc = rc < 0 ? rc : member(out, "finish_reason", e->finish_reason);
    if (e->has_bodies) {
        rc = rc < 0 ? rc
                    : body(out, "request_body", e->request_body, e->request_len, e->is_request_cut);
        rc = rc < 0 ? rc
                    : body(out, "response_body", e->response_body, e->response_len,
                           e->is_response_cut);
    }
    return rc < 0 ? rc : tg_buf_append_str(out, "}\n");
}

/* Fills e from o, the bodies borrowed (not copied). */
static void
entry_of(struct entry *e, const struct tg_observation *o)
{
    memset(e, 0, sizeof(*e));
    e->row = *o->row;
    e->upstream_ms = o->upstream_ms;
    snprintf(e->finish_reason, sizeof(e->finish_reason), "%s",
             o->finish_reason != NULL ? o->finish_reason : "");
    e->is_cache_checked = o->is_cache_checked;
    e->has_bodies = o->request_body != NULL || o->response_body != NULL;
    e->request_body = (char *)o->request_body;
    e->request_len = o->request_len;
    e->response_body = (char *)o->response_body;
    e->response_len = o->response_len;
    if (e->request_len > TG_ACCESS_LOG_MAX_BODY_BYTES) {
        e->request_len = TG_ACCESS_LOG_MAX_BODY_BYTES;
        e->is_request_cut = true;
    }
    if (e->response_len > TG_ACCESS_LOG_MAX_BODY_BYTES) {
        e->response_len = TG_ACCESS_LOG_MAX_BODY_BYTES;
        e->is_response_cut = true;
    }
}

int
tg_access_log_format(struct tg_buf *out, const struct tg_observation *o)
{
    struct entry e;
    entry_of(&e, o);
    return format_entry(out, &e);
}

/* ---- the queue and the writer -------------------------------------------------------------- */

static char *
copy_bytes(const char *s, size_t len)
{
    if (s == NULL) {
        return NULL;
    }
    char *c = tg_xmalloc(len + 1);
    memcpy(c, s, len);
    c[len] = '\0';
    return c;
}

void
tg_access_log_push(const struct tg_observation *o)
{
    if (!atomic_load_explicit(&is_on, memory_order_acquire)) {
        return;
    }
    struct entry e;
    entry_of(&e, o);
    /* The bodies die with the request: copy them before taking the lock. */
    e.request_body = copy_bytes(e.request_body, e.request_len);
    e.response_body = copy_bytes(e.response_body, e.response_len);
    size_t bytes = (e.request_body ? e.request_len : 0) + (e.response_body ? e.response_len : 0);
    pthread_mutex_lock(&q.lock);
    bool is_kept = q.n < q.cap && !q.is_stopping &&
                   q.body_bytes + bytes <= TG_ACCESS_LOG_MAX_QUEUED_BODY_BYTES;
    if (is_kept) {
        q.ring[(q.head + q.n) % q.cap] = e;
        q.n++;
        q.body_bytes += bytes;
        pthread_cond_signal(&q.wake);
    }
    pthread_mutex_unlock(&q.lock);
    if (!is_kept) {
        uint64_t n = atomic_fetch_add(&n_dropped, 1) + 1;
        if ((n & (n - 1)) == 0) { /* 1, 2, 4, ...: said, without flooding the log */
            tg_log_warn("access log: the queue is full; %llu line(s) dropped so far",
                        (unsigned long long)n);
        }
        free(e.request_body);
        free(e.response_body);
    }
}

uint64_t
tg_access_log_dropped(void)
{
    return atomic_load(&n_dropped);
}

/* Writes all of b to the log; a failure is logged once per streak, and the lines lost. */
static void
write_all(const struct tg_buf *b)
{
    static bool is_failing;
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(q.fd, b->data + off, b->len - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            if (!is_failing) {
                tg_log_error("access log: write failed: %s", strerror(errno));
            }
            is_failing = true;
            return;
        }
        off += (size_t)w;
    }
    is_failing = false;
}

/* On the writer thread: the file at the path now (rotation renamed the old one). On failure
 * the old file is kept, so no line is lost to a rotation that went wrong. */
static void
reopen(void)
{
    int fd = open_log(q.path);
    if (fd < 0) {
        tg_log_error("access log: cannot reopen %s: %s; still writing to the old file", q.path,
                     strerror(errno));
        return;
    }
    close(q.fd);
    q.fd = fd;
    tg_log_info("access log: reopened %s", q.path);
}

void
tg_access_log_reopen(void)
{
    if (atomic_load(&is_on) && !q.is_stdout) {
        atomic_store(&is_reopen_wanted, true);
    }
}

static void *
writer(void *arg)
{
    (void)arg;
    tg_thread_set_name("tg-access-log");
    struct entry *batch = tg_xcalloc(BATCH, sizeof(*batch));
    struct tg_buf b;
    tg_buf_init(&b, 0);
    for (;;) {
        pthread_mutex_lock(&q.lock);
        while (q.n == 0 && !q.is_stopping) {
            pthread_cond_wait(&q.wake, &q.lock);
        }
        size_t n = q.n < BATCH ? q.n : BATCH;
        for (size_t i = 0; i < n; i++) {
            batch[i] = q.ring[q.head];
            q.head = (q.head + 1) % q.cap;
            q.body_bytes -= (batch[i].request_body ? batch[i].request_len : 0) +
                            (batch[i].response_body ? batch[i].response_len : 0);
        }
        q.n -= n;
        bool is_done = n == 0; /* stopping, and nothing left */
        pthread_mutex_unlock(&q.lock);
        if (is_done) {
            break;
        }
        if (atomic_exchange(&is_reopen_wanted, false)) {
            reopen();
        }
        tg_buf_reset(&b);
        for (size_t i = 0; i < n; i++) {
            if (format_entry(&b, &batch[i]) < 0) {
                tg_log_error("access log: out of memory formatting a line; dropped");
            }
            free(batch[i].request_body);
            free(batch[i].response_body);
        }
        write_all(&b);
    }
    tg_buf_deinit(&b);
    free(batch);
    return NULL;
}

int
tg_access_log_start(const char *path, size_t queue_cap)
{
    if (path == NULL || atomic_load(&is_on)) {
        return 0;
    }
    q.is_stdout = strcmp(path, "-") == 0;
    q.fd =
        q.is_stdout ? STDOUT_FILENO : open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (q.fd < 0) {
        int e = errno;
        tg_log_error("access log: cannot open %s: %s", path, strerror(e));
        return e == ENOENT ? TG_ENOTFOUND : TG_EIO;
    }
    q.path = tg_xstrdup(path);
    q.cap = queue_cap > 0 ? queue_cap : 8192;
    q.ring = tg_xcalloc(q.cap, sizeof(*q.ring));
    q.head = q.n = 0;
    q.body_bytes = 0;
    q.is_stopping = false;
    if (pthread_create(&q.thread, NULL, writer, NULL) != 0) {
        tg_log_error("access log: cannot start the writer thread");
        free(q.ring);
        q.ring = NULL;
        free(q.path);
        q.path = NULL;
        if (!q.is_stdout) {
            close(q.fd);
        }
        q.fd = -1;
        return TG_EIO;
    }
    atomic_store_explicit(&is_on, true, memory_order_release);
    tg_log_info("access log: writing to %s (queue of %zu lines)",
                q.is_stdout ? "standard output" : path, q.cap);
    return 0;
}

void
tg_access_log_stop(void)
{
    if (!atomic_load(&is_on)) {
        return;
    }
    pthread_mutex_lock(&q.lock);
    q.is_stopping = true;
    pthread_cond_signal(&q.wake);
    pthread_mutex_unlock(&q.lock);
    pthread_join(q.thread, NULL);
    atomic_store(&is_on, false);
    if (!q.is_stdout) {
        if (fsync(q.fd) != 0 && errno != EINVAL) {
            tg_log_warn("access log: fsync failed: %s", strerror(errno));
        }
        close(q.fd);
    }
    q.fd = -1;
    free(q.ring);
    q.ring = NULL;
    q.cap = 0;
    free(q.path);
    q.path = NULL;
}
