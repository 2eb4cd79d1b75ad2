/*
 * cache_fs.c: the file-system cache backend, one file per key in a directory.
 *
 * A file is "TGC1 " + one line of compact JSON (the entry's fields, the body length and the
 * body's SHA-256) + "\n" + the body. Writes go to a temporary file in the same directory and
 * are renamed over the final name, so a reader sees the old entry or the new one, never half
 * of one. A file that fails any check (magic, header, length, checksum: a crash, a full disk,
 * someone's editor) is a miss and is removed, never served. The byte cap is kept by a
 * running total (read once at start from the directory) and, when a put passes it, by
 * removing the least recently written files first. Calls block on disk: callers run them on
 * the thread pool, never on a loop thread.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/cache.h"
#include "cache/cache_int.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "core/mem.h"

#define MAGIC "TGC1 "
#define MAGIC_LEN 5
#define TMP_PREFIX ".tmp-"
#define NAME_CAP (TG_CACHE_KEY_BYTES * 2 + 1)

struct fs_cache {
    struct tg_cache base;
    pthread_mutex_t lock; /* guards st and eviction; files themselves are replaced atomically */
    char *dir;
    struct tg_cache_stats st;
};

static char *
path_of(const struct fs_cache *f, const char *name)
{
    return tg_xasprintf("%s/%s", f->dir, name);
}

static bool
is_entry_name(const char *name)
{
    if (strlen(name) != TG_CACHE_KEY_BYTES * 2) {
        return false;
    }
    for (const char *p = name; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
            return false;
        }
    }
    return true;
}

/* Reads the whole file at path (at most cap bytes) into b. */
static int
read_file(const char *path, size_t cap, struct tg_buf *b)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? TG_ENOTFOUND : TG_EIO;
    }
    int rc = 0;
    char chunk[16384];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            rc = TG_EIO;
            break;
        }
        if (n == 0) {
            break;
        }
        if (b->len + (size_t)n > cap || tg_buf_append(b, chunk, (size_t)n) != 0) {
            rc = TG_ETOOBIG;
            break;
        }
    }
    close(fd);
    return rc;
}

static void
copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* Decodes a file's bytes into *out (body copied). Returns 0 or TG_EPARSE. */
static int
decode(const char *data, size_t len, struct tg_cache_entry *out)
{
    if (len < MAGIC_LEN || memcmp(data, MAGIC, MAGIC_LEN) != 0) {
        return TG_EPARSE;
    }
    const char *nl = memchr(data, '\n', len);
    if (!nl) {
        return TG_EPARSE;
    }
    json_error_t jerr;
    json_t *h = json_loadb(data + MAGIC_LEN, (size_t)(nl - data) - MAGIC_LEN, 0, &jerr);
    if (!h || !json_is_object(h)) {
        json_decref(h);
        return TG_EPARSE;
    }
    int rc = TG_EPARSE;
    const char *body = nl + 1;
    size_t body_len = len - (size_t)(body - data);
    const char *sum = tg_json_str(h, "body_sha256");
    unsigned char want[TG_SHA256_BYTES], got[TG_SHA256_BYTES];
    if (tg_json_int(h, "body_len", -1) != (int64_t)body_len || !sum || strlen(sum) != 64 ||
        tg_hex_decode(want, sum, sizeof(want)) != 0) {
        goto out;
    }
    tg_sha256(body, body_len, got);
    if (memcmp(want, got, sizeof(got)) != 0) {
        goto out;
    }
    memset(out, 0, sizeof(*out));
    out->status = (int)tg_json_int(h, "status", 0);
    out->is_stream = tg_json_bool(h, "is_stream", false);
    copy_str(out->content_type, sizeof(out->content_type), tg_json_str(h, "content_type"));
    copy_str(out->project_id, sizeof(out->project_id), tg_json_str(h, "project_id"));
    copy_str(out->model, sizeof(out->model), tg_json_str(h, "model"));
    out->prompt_tokens = tg_json_int(h, "prompt_tokens", 0);
    out->cached_tokens = tg_json_int(h, "cached_tokens", 0);
    out->completion_tokens = tg_json_int(h, "completion_tokens", 0);
    out->reasoning_tokens = tg_json_int(h, "reasoning_tokens", 0);
    out->cost_micros = tg_json_int(h, "cost_micros", 0);
    out->created_ms = tg_json_int(h, "created_ms", 0);
    out->expires_ms = tg_json_int(h, "expires_ms", 0);
    out->body = malloc(body_len + 1);
    if (!out->body) {
        rc = TG_ENOMEM;
        goto out;
    }
    memcpy(out->body, body, body_len);
    out->body[body_len] = '\0';
    out->body_len = body_len;
    rc = 0;
out:
    json_decref(h);
    return rc;
}

/* Encodes e (with its expiry) into b. */
static int
encode(const struct tg_cache_entry *e, int64_t expires_ms, struct tg_buf *b)
{
    unsigned char sum[TG_SHA256_BYTES];
    char hex[TG_SHA256_BYTES * 2 + 1];
    tg_sha256(e->body ? e->body : "", e->body_len, sum);
    tg_hex_encode(hex, sum, sizeof(sum));
    json_t *h =
        json_pack("{s:i, s:b, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}",
                  "status", e->status, "is_stream", e->is_stream, "content_type", e->content_type,
                  "project_id", e->project_id, "model", e->model, "prompt_tokens",
                  (json_int_t)e->prompt_tokens, "cached_tokens", (json_int_t)e->cached_tokens,
                  "completion_tokens", (json_int_t)e->completion_tokens, "reasoning_tokens",
                  (json_int_t)e->reasoning_tokens, "cost_micros", (json_int_t)e->cost_micros,
                  "created_ms", (json_int_t)e->created_ms, "expires_ms", (json_int_t)expires_ms,
                  "body_len", (json_int_t)e->body_len, "body_sha256", hex);
    if (!h) {
        return TG_EINVAL; /* a field that is not UTF-8 */
    }
    int rc = tg_buf_append(b, MAGIC, MAGIC_LEN);
    if (rc == 0) {
        rc = tg_json_dump_buf(h, b); /* compact: newlines inside strings are escaped */
    }
    json_decref(h);
    if (rc == 0) {
        rc = tg_buf_append(b, "\n", 1);
    }
    if (rc == 0 && e->body_len) {
        rc = tg_buf_append(b, e->body, e->body_len);
    }
    return rc;
}

/* Removes dir/name, taking its size off the total. Caller holds the lock. */
static void
remove_locked(struct fs_cache *f, const char *name)
{
    char *p = path_of(f, name);
    struct stat sb;
    if (stat(p, &sb) == 0 && unlink(p) == 0) {
        f->st.bytes -= (size_t)sb.st_size < f->st.bytes ? (size_t)sb.st_size : f->st.bytes;
        if (f->st.n_entries > 0) {
            f->st.n_entries--;
        }
    }
    free(p);
}

static int
fs_get(struct tg_cache *c, const unsigned char key[TG_CACHE_KEY_BYTES], struct tg_cache_entry *out)
{
    struct fs_cache *f = (struct fs_cache *)c;
    char name[NAME_CAP];
    tg_hex_encode(name, key, TG_CACHE_KEY_BYTES);
    char *p = path_of(f, name);
    struct tg_buf b;
    tg_buf_init(&b, 0);
    int rc = read_file(p, f->st.max_bytes, &b);
    bool bad = false;
    if (rc == 0) {
        rc = decode(b.data ? b.data : "", b.len, out);
        if (rc == TG_EPARSE) {
            tg_log(TG_LOG_WARN, "cache: ignoring a corrupt entry %s", name);
            bad = true;
        } else if (rc == 0 && out->expires_ms > 0 && tg_clock_unix_ms() >= out->expires_ms) {
            tg_cache_entry_deinit(out);
            bad = true;
        }
    } else if (rc == TG_ETOOBIG) {
        bad = true;
    }
    tg_buf_deinit(&b);
    free(p);
    pthread_mutex_lock(&f->lock);
    if (bad) {
        remove_locked(f, name);
        rc = TG_ENOTFOUND;
    }
    if (rc == 0) {
        f->st.hits++;
    } else {
        f->st.misses++;
    }
    pthread_mutex_unlock(&f->lock);
    return rc == 0 || rc == TG_ENOTFOUND || rc == TG_ENOMEM ? rc : TG_EIO;
}

struct aged {
    char name[NAME_CAP];
    struct timespec mtime;
};

static int
by_age(const void *a, const void *b)
{
    const struct aged *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec) {
        return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
    }
    if (x->mtime.tv_nsec != y->mtime.tv_nsec) {
        return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
    }
    return strcmp(x->name, y->name);
}

/* Removes the oldest entries until the total is at most max_bytes, keeping keep (the entry
 * just written). Caller holds the lock. */
static void
evict_locked(struct fs_cache *f, const char *keep)
{
    DIR *d = opendir(f->dir);
    if (!d) {
        return;
    }
    struct aged *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!is_entry_name(de->d_name) || strcmp(de->d_name, keep) == 0) {
            continue;
        }
        char *p = path_of(f, de->d_name);
        struct stat sb;
        if (stat(p, &sb) == 0) {
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                v = tg_xrealloc(v, cap * sizeof(*v));
            }
            memcpy(v[n].name, de->d_name, NAME_CAP);
            v[n].mtime = sb.st_mtim;
            n++;
        }
        free(p);
    }
    closedir(d);
    qsort(v, n, sizeof(*v), by_age);
    for (size_t i = 0; i < n && f->st.bytes > f->st.max_bytes; i++) {
        remove_locked(f, v[i].name);
        f->st.evictions++;
    }
    free(v);
}

/* Writes data to a temporary file in the directory and renames it to name. */
static int
write_atomic(struct fs_cache *f, const char *name, const struct tg_buf *b)
{
    char tmp_name[NAME_CAP + 32];
    char rnd[17];
    tg_id_new(rnd, sizeof(rnd), "", 16);
    snprintf(tmp_name, sizeof(tmp_name), TMP_PREFIX "%s-%s", rnd, name);
    char *tmp = path_of(f, tmp_name);
    char *dst = path_of(f, name);
    int rc = TG_EIO;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        goto out;
    }
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(fd, b->data + off, b->len - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            break;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0 || off != b->len) {
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, dst) != 0) {
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    free(tmp);
    free(dst);
    return rc;
}

static int
fs_put(struct tg_cache *c, const unsigned char key[TG_CACHE_KEY_BYTES],
       const struct tg_cache_entry *e, int64_t ttl_ms)
{
    struct fs_cache *f = (struct fs_cache *)c;
    char name[NAME_CAP];
    tg_hex_encode(name, key, TG_CACHE_KEY_BYTES);
    struct tg_buf b;
    tg_buf_init(&b, f->st.max_bytes);
    int64_t expires = ttl_ms > 0 ? tg_clock_unix_ms() + ttl_ms : 0;
    int rc = encode(e, expires, &b);
    if (rc != 0) {
        goto out;
    }
    pthread_mutex_lock(&f->lock);
    /* Take the replaced file off the total before the rename makes it disappear. */
    char *p = path_of(f, name);
    struct stat sb;
    bool replaced = stat(p, &sb) == 0;
    free(p);
    rc = write_atomic(f, name, &b);
    if (rc == 0) {
        if (replaced) {
            f->st.bytes -= (size_t)sb.st_size < f->st.bytes ? (size_t)sb.st_size : f->st.bytes;
        } else {
            f->st.n_entries++;
        }
        f->st.bytes += b.len;
        f->st.puts++;
        if (f->st.bytes > f->st.max_bytes) {
            evict_locked(f, name);
        }
    }
    pthread_mutex_unlock(&f->lock);
out:
    tg_buf_deinit(&b);
    return rc;
}

static int
fs_invalidate(struct tg_cache *c, const struct tg_cache_filter *flt, size_t *n_removed)
{
    struct fs_cache *f = (struct fs_cache *)c;
    size_t removed = 0;
    int64_t now = tg_clock_unix_ms();
    pthread_mutex_lock(&f->lock);
    DIR *d = opendir(f->dir);
    if (!d) {
        pthread_mutex_unlock(&f->lock);
        return TG_EIO;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!is_entry_name(de->d_name)) {
            continue;
        }
        bool match = flt->all;
        if (!match) {
            char *p = path_of(f, de->d_name);
            struct tg_buf b;
            tg_buf_init(&b, 0);
            struct tg_cache_entry e;
            if (read_file(p, f->st.max_bytes, &b) != 0 ||
                decode(b.data ? b.data : "", b.len, &e) != 0) {
                match = true; /* unreadable: it would never be served anyway */
            } else {
                match = tg_cache_filter_match(flt, e.project_id, e.model, e.created_ms, now);
                tg_cache_entry_deinit(&e);
            }
            tg_buf_deinit(&b);
            free(p);
        }
        if (match) {
            remove_locked(f, de->d_name);
            removed++;
        }
    }
    closedir(d);
    pthread_mutex_unlock(&f->lock);
    if (n_removed) {
        *n_removed = removed;
    }
    return 0;
}

static void
fs_stats(struct tg_cache *c, struct tg_cache_stats *out)
{
    struct fs_cache *f = (struct fs_cache *)c;
    pthread_mutex_lock(&f->lock);
    *out = f->st;
    pthread_mutex_unlock(&f->lock);
}

static void
fs_free(struct tg_cache *c)
{
    struct fs_cache *f = (struct fs_cache *)c;
    pthread_mutex_destroy(&f->lock);
    free(f->dir);
    free(f);
}

static const struct tg_cache_ops fs_ops = {
    .name = "fs",
    .get = fs_get,
    .put = fs_put,
    .invalidate = fs_invalidate,
    .stats = fs_stats,
    .free = fs_free,
};

int
tg_cache_fs_new(const char *dir, size_t max_bytes, struct tg_cache **out)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        tg_log(TG_LOG_ERROR, "cache: cannot create %s: %s", dir, strerror(errno));
        return TG_EIO;
    }
    DIR *d = opendir(dir);
    if (!d) {
        tg_log(TG_LOG_ERROR, "cache: cannot read %s: %s", dir, strerror(errno));
        return TG_EIO;
    }
    struct fs_cache *f = tg_xcalloc(1, sizeof(*f));
    f->base.ops = &fs_ops;
    pthread_mutex_init(&f->lock, NULL);
    f->dir = tg_xstrdup(dir);
    f->st.max_bytes = max_bytes;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *p = path_of(f, de->d_name);
        struct stat sb;
        if (strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0) {
            unlink(p); /* left by a crash mid-write: never renamed, never valid */
        } else if (is_entry_name(de->d_name) && stat(p, &sb) == 0) {
            f->st.bytes += (size_t)sb.st_size;
            f->st.n_entries++;
        }
        free(p);
    }
    closedir(d);
    *out = &f->base;
    return 0;
}
