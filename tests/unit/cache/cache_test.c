/*
 * cache_test.c: the response cache: the key's canonical form, the settings and per-request
 * control, and each backend (memory LRU by bytes, file system atomic and capped, corrupt
 * files never served), invalidation by project, model, age and all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/cache.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"

static void
key_of(const char *part, const char *body, unsigned char out[TG_CACHE_KEY_BYTES])
{
    assert_int_equal(tg_cache_key(part, "/v1/chat/completions", body, strlen(body), out), 0);
}

static void
key_ignores_order_stream_and_user(void **state)
{
    (void)state;
    unsigned char a[32], b[32], c[32], d[32], e[32], f[32];
    key_of("proj_a", "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", a);
    key_of("proj_a",
           "{ \"messages\":[{\"content\":\"hi\",\"role\":\"user\"}], \"stream\":true,"
           " \"stream_options\":{\"include_usage\":true}, \"user\":\"u1\", \"model\":\"m\"}",
           b);
    assert_memory_equal(a, b, 32);
    /* temperature changes the output, so the key */
    key_of("proj_a",
           "{\"model\":\"m\",\"temperature\":0.5,\"messages\":[{\"role\":\"user\",\"content\":"
           "\"hi\"}]}",
           c);
    assert_memory_not_equal(a, c, 32);
    /* another project, another endpoint, another model: another key */
    key_of("proj_b", "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", d);
    assert_memory_not_equal(a, d, 32);
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    assert_int_equal(tg_cache_key("proj_a", "/v1/responses", body, strlen(body), e), 0);
    assert_memory_not_equal(a, e, 32);
    key_of("proj_a", "{\"model\":\"n\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", f);
    assert_memory_not_equal(a, f, 32);
    /* not an object */
    assert_int_equal(tg_cache_key("p", "/v1/x", "[1]", 3, a), TG_EPARSE);
    assert_int_equal(tg_cache_key("p", "/v1/x", "{bad", 4, a), TG_EPARSE);
}

static void
settings_are_validated(void **state)
{
    (void)state;
    struct tg_cache_settings s;
    char err[128];
    assert_int_equal(tg_cache_settings_parse(NULL, &s, err, sizeof(err)), 0);
    assert_false(s.enabled);
    assert_int_equal(s.ttl_s, 3600);
    json_t *v = json_loads("{\"enabled\":true,\"backend\":\"fs\",\"ttl_s\":60}", 0, NULL);
    assert_int_equal(tg_cache_settings_parse(v, &s, err, sizeof(err)), 0);
    assert_true(s.enabled);
    assert_int_equal(s.backend, TG_CACHE_FS);
    assert_int_equal(s.ttl_s, 60);
    json_decref(v);
    const char *bad[] = {"{\"backend\":\"redis\"}", "{\"ttl_s\":0}",        "{\"ttl_s\":\"5\"}",
                         "{\"enabled\":1}",         "{\"colour\":\"red\"}", "[]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = json_loads(bad[i], 0, NULL);
        assert_non_null(v);
        err[0] = '\0';
        assert_int_equal(tg_cache_settings_parse(v, &s, err, sizeof(err)), TG_EINVAL);
        assert_true(strlen(err) > 0);
        json_decref(v);
    }
}

static void
control_headers(void **state)
{
    (void)state;
    struct tg_cache_control c;
    tg_cache_control_parse(NULL, NULL, &c);
    assert_true(c.lookup && c.store);
    assert_int_equal(c.max_age_ms, -1);
    tg_cache_control_parse("no-cache", NULL, &c);
    assert_false(c.lookup);
    assert_true(c.store);
    tg_cache_control_parse("max-age=30, No-Store", NULL, &c);
    assert_false(c.lookup);
    assert_false(c.store);
    assert_int_equal(c.max_age_ms, 30000);
    tg_cache_control_parse("public, max-age=5", NULL, &c);
    assert_true(c.lookup && c.store);
    assert_int_equal(c.max_age_ms, 5000);
    tg_cache_control_parse("no-cache-please", NULL, &c);
    assert_true(c.lookup);
    tg_cache_control_parse(NULL, "bypass", &c);
    assert_false(c.lookup || c.store);
    tg_cache_control_parse(NULL, "refresh", &c);
    assert_false(c.lookup);
    assert_true(c.store);
}

static void
make_entry(struct tg_cache_entry *e, const char *project, const char *model, const char *body)
{
    memset(e, 0, sizeof(*e));
    e->status = 200;
    snprintf(e->content_type, sizeof(e->content_type), "application/json");
    snprintf(e->project_id, sizeof(e->project_id), "%s", project);
    snprintf(e->model, sizeof(e->model), "%s", model);
    e->prompt_tokens = 7;
    e->completion_tokens = 3;
    e->cost_micros = 1234;
    e->created_ms = tg_clock_unix_ms();
    e->body = (char *)body;
    e->body_len = strlen(body);
}

static void
fill_key(unsigned char k[32], int i)
{
    memset(k, 0, 32);
    k[0] = (unsigned char)i;
    k[31] = (unsigned char)(i * 7);
}

/* Round trip, expiry, and invalidation: the same for every backend. */
static void
exercise_backend(struct tg_cache *c)
{
    unsigned char k1[32], k2[32], k3[32];
    fill_key(k1, 1);
    fill_key(k2, 2);
    fill_key(k3, 3);
    struct tg_cache_entry e, got;
    assert_int_equal(tg_cache_get(c, k1, &got), TG_ENOTFOUND);

    make_entry(&e, "proj_a", "gpt-a", "{\"id\":\"x\",\"n\":\"one\\ntwo\"}");
    e.is_stream = true;
    assert_int_equal(tg_cache_put(c, k1, &e, 60000), 0);
    assert_int_equal(tg_cache_get(c, k1, &got), 0);
    assert_int_equal(got.status, 200);
    assert_true(got.is_stream);
    assert_string_equal(got.content_type, "application/json");
    assert_string_equal(got.project_id, "proj_a");
    assert_string_equal(got.model, "gpt-a");
    assert_int_equal(got.prompt_tokens, 7);
    assert_int_equal(got.completion_tokens, 3);
    assert_int_equal(got.cost_micros, 1234);
    assert_int_equal(got.body_len, e.body_len);
    assert_memory_equal(got.body, e.body, e.body_len);
    assert_true(got.expires_ms > got.created_ms);
    tg_cache_entry_deinit(&got);

    /* replace */
    make_entry(&e, "proj_a", "gpt-a", "{\"second\":true}");
    assert_int_equal(tg_cache_put(c, k1, &e, 60000), 0);
    assert_int_equal(tg_cache_get(c, k1, &got), 0);
    assert_string_equal(got.body, "{\"second\":true}");
    tg_cache_entry_deinit(&got);

    /* expiry: move the clock past the ttl */
    make_entry(&e, "proj_b", "gpt-b", "{\"b\":1}");
    assert_int_equal(tg_cache_put(c, k2, &e, 1000), 0);
    assert_int_equal(tg_cache_get(c, k2, &got), 0);
    tg_cache_entry_deinit(&got);
    tg_clock_set_test_offset_ms(2000);
    assert_int_equal(tg_cache_get(c, k2, &got), TG_ENOTFOUND);
    tg_clock_set_test_offset_ms(0);

    /* invalidation: by project, by model, by age, all; an empty filter removes nothing */
    make_entry(&e, "proj_b", "gpt-b", "{\"b\":2}");
    assert_int_equal(tg_cache_put(c, k2, &e, 0), 0);
    make_entry(&e, "proj_b", "gpt-c", "{\"c\":3}");
    e.created_ms -= 10000;
    assert_int_equal(tg_cache_put(c, k3, &e, 0), 0);
    size_t n = 99;
    struct tg_cache_filter f = {0};
    assert_int_equal(tg_cache_invalidate(c, &f, &n), 0);
    assert_int_equal(n, 0);
    f.older_than_ms = 5000;
    assert_int_equal(tg_cache_invalidate(c, &f, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(tg_cache_get(c, k3, &got), TG_ENOTFOUND);
    assert_int_equal(tg_cache_get(c, k2, &got), 0);
    tg_cache_entry_deinit(&got);
    f = (struct tg_cache_filter){.project_id = "proj_b", .model = "gpt-x"};
    assert_int_equal(tg_cache_invalidate(c, &f, &n), 0);
    assert_int_equal(n, 0);
    f = (struct tg_cache_filter){.project_id = "proj_b"};
    assert_int_equal(tg_cache_invalidate(c, &f, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(tg_cache_get(c, k1, &got), 0); /* proj_a untouched */
    tg_cache_entry_deinit(&got);
    f = (struct tg_cache_filter){.model = "gpt-a"};
    assert_int_equal(tg_cache_invalidate(c, &f, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(tg_cache_get(c, k1, &got), TG_ENOTFOUND);
    assert_int_equal(tg_cache_put(c, k1, &e, 0), 0);
    assert_int_equal(tg_cache_put(c, k2, &e, 0), 0);
    f = (struct tg_cache_filter){.all = true};
    assert_int_equal(tg_cache_invalidate(c, &f, &n), 0);
    assert_int_equal(n, 2);
    struct tg_cache_stats st;
    tg_cache_stats(c, &st);
    assert_int_equal(st.n_entries, 0);
    assert_int_equal(st.bytes, 0);
    assert_true(st.hits >= 5);
    assert_true(st.misses >= 4);
}

static void
memory_backend(void **state)
{
    (void)state;
    struct tg_cache *c = tg_cache_memory_new(1 << 20);
    exercise_backend(c);
    tg_cache_free(c);
}

static void
memory_lru_evicts_by_bytes(void **state)
{
    (void)state;
    char body[1001];
    memset(body, 'x', 1000);
    body[1000] = '\0';
    struct tg_cache_entry e;
    make_entry(&e, "p", "m", body);
    /* room for about three entries of ~1 KB */
    struct tg_cache *c = tg_cache_memory_new(3 * 1600);
    unsigned char k[4][32];
    for (int i = 0; i < 4; i++) {
        fill_key(k[i], i + 10);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tg_cache_put(c, k[i], &e, 0), 0);
    }
    /* touch 0 so 1 becomes the least recently used */
    struct tg_cache_entry got;
    assert_int_equal(tg_cache_get(c, k[0], &got), 0);
    tg_cache_entry_deinit(&got);
    assert_int_equal(tg_cache_put(c, k[3], &e, 0), 0);
    assert_int_equal(tg_cache_get(c, k[1], &got), TG_ENOTFOUND);
    for (int i = 0; i < 4; i++) {
        if (i == 1) {
            continue;
        }
        assert_int_equal(tg_cache_get(c, k[i], &got), 0);
        tg_cache_entry_deinit(&got);
    }
    struct tg_cache_stats st;
    tg_cache_stats(c, &st);
    assert_true(st.bytes <= st.max_bytes);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.n_entries, 3);
    /* an entry larger than the whole cache is refused, nothing evicted for it */
    char *big = calloc(1, 8001);
    memset(big, 'y', 8000);
    make_entry(&e, "p", "m", big);
    assert_int_equal(tg_cache_put(c, k[1], &e, 0), TG_ETOOBIG);
    tg_cache_stats(c, &st);
    assert_int_equal(st.n_entries, 3);
    free(big);
    /* many keys: the table grows and every entry stays reachable */
    tg_cache_free(c);
    c = tg_cache_memory_new(1 << 24);
    make_entry(&e, "p", "m", "{}");
    for (int i = 0; i < 500; i++) {
        unsigned char kk[32] = {0};
        memcpy(kk, &i, sizeof(i));
        kk[20] = 1;
        assert_int_equal(tg_cache_put(c, kk, &e, 0), 0);
    }
    for (int i = 0; i < 500; i++) {
        unsigned char kk[32] = {0};
        memcpy(kk, &i, sizeof(i));
        kk[20] = 1;
        assert_int_equal(tg_cache_get(c, kk, &got), 0);
        tg_cache_entry_deinit(&got);
    }
    tg_cache_free(c);
}

static char *
temp_dir(void)
{
    char tmpl[] = "/tmp/tg-cache-test-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return strdup(tmpl);
}

static void
remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            char p[512];
            snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
            unlink(p);
        }
    }
    closedir(d);
    rmdir(dir);
}

static size_t
count_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n;
}

static void
fs_backend(void **state)
{
    (void)state;
    char *dir = temp_dir();
    struct tg_cache *c = NULL;
    assert_int_equal(tg_cache_fs_new(dir, 1 << 20, &c), 0);
    exercise_backend(c);
    tg_cache_free(c);
    remove_tree(dir);
    free(dir);
}

static void
fs_survives_restart_and_ignores_corruption(void **state)
{
    (void)state;
    char *dir = temp_dir();
    struct tg_cache *c = NULL;
    assert_int_equal(tg_cache_fs_new(dir, 1 << 20, &c), 0);
    unsigned char k[32], k2[32];
    fill_key(k, 5);
    fill_key(k2, 6);
    struct tg_cache_entry e, got;
    make_entry(&e, "p", "m", "data: {\"a\":1}\n\ndata: [DONE]\n\n");
    assert_int_equal(tg_cache_put(c, k, &e, 0), 0);
    assert_int_equal(tg_cache_put(c, k2, &e, 0), 0);
    tg_cache_free(c);

    /* a temporary file left by a crash mid-write is cleaned at start */
    char p[512];
    snprintf(p, sizeof(p), "%s/.tmp-deadbeef-partial", dir);
    FILE *fp = fopen(p, "w");
    fputs("TGC1 {", fp);
    fclose(fp);
    assert_int_equal(tg_cache_fs_new(dir, 1 << 20, &c), 0);
    assert_int_equal(access(p, F_OK), -1);
    struct tg_cache_stats st;
    tg_cache_stats(c, &st);
    assert_int_equal(st.n_entries, 2);
    assert_int_equal(tg_cache_get(c, k, &got), 0);
    assert_string_equal(got.body, e.body);
    tg_cache_entry_deinit(&got);

    /* truncate one file and flip a body byte in the other: both are misses, and removed */
    char hex[65];
    for (int i = 0; i < 32; i++) {
        sprintf(hex + 2 * i, "%02x", k[i]);
    }
    snprintf(p, sizeof(p), "%s/%s", dir, hex);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(truncate(p, sb.st_size - 3), 0);
    assert_int_equal(tg_cache_get(c, k, &got), TG_ENOTFOUND);
    assert_int_equal(access(p, F_OK), -1);
    for (int i = 0; i < 32; i++) {
        sprintf(hex + 2 * i, "%02x", k2[i]);
    }
    snprintf(p, sizeof(p), "%s/%s", dir, hex);
    fp = fopen(p, "r+");
    assert_int_equal(fseek(fp, -5, SEEK_END), 0);
    fputc('Z', fp);
    fclose(fp);
    assert_int_equal(tg_cache_get(c, k2, &got), TG_ENOTFOUND);
    assert_int_equal(access(p, F_OK), -1);
    tg_cache_stats(c, &st);
    assert_int_equal(st.n_entries, 0);
    assert_int_equal(count_files(dir), 0);
    tg_cache_free(c);
    remove_tree(dir);
    free(dir);
}

static void
fs_cap_evicts_oldest(void **state)
{
    (void)state;
    char *dir = temp_dir();
    struct tg_cache *c = NULL;
    char body[1001];
    memset(body, 'x', 1000);
    body[1000] = '\0';
    struct tg_cache_entry e, got;
    make_entry(&e, "p", "m", body);
    /* each file is the body plus a header of a few hundred bytes: three fit, four do not */
    assert_int_equal(tg_cache_fs_new(dir, 3 * 1500, &c), 0);
    unsigned char k[4][32];
    for (int i = 0; i < 4; i++) {
        fill_key(k[i], i + 40);
        assert_int_equal(tg_cache_put(c, k[i], &e, 0), 0);
        /* distinct modification times, oldest first */
        char hex[65], p[512];
        for (int j = 0; j < 32; j++) {
            sprintf(hex + 2 * j, "%02x", k[i][j]);
        }
        snprintf(p, sizeof(p), "%s/%s", dir, hex);
        struct timespec ts[2] = {{.tv_sec = 1000000 + i}, {.tv_sec = 1000000 + i}};
        assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    }
    struct tg_cache_stats st;
    tg_cache_stats(c, &st);
    assert_true(st.bytes <= st.max_bytes);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(count_files(dir), 3);
    assert_int_equal(tg_cache_get(c, k[0], &got), TG_ENOTFOUND);
    for (int i = 1; i < 4; i++) {
        assert_int_equal(tg_cache_get(c, k[i], &got), 0);
        tg_cache_entry_deinit(&got);
    }
    tg_cache_free(c);
    remove_tree(dir);
    free(dir);
}

static void
json_answer_as_stream(void **state)
{
    (void)state;
    const char *body = "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":5,"
                       "\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                       "\"assistant\",\"content\":\"hello\"},\"finish_reason\":\"stop\"}],"
                       "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,"
                       "\"total_tokens\":4}}";
    struct tg_buf out;
    tg_buf_init(&out, 0);
    assert_int_equal(tg_cache_chat_json_to_sse(body, strlen(body), &out), 0);
    /* content delta, finish chunk, usage chunk, [DONE] */
    assert_non_null(strstr(out.data, "\"object\":\"chat.completion.chunk\""));
    assert_non_null(strstr(out.data, "\"delta\":{\"role\":\"assistant\",\"content\":\"hello\"}"));
    assert_non_null(strstr(out.data, "\"finish_reason\":\"stop\""));
    assert_non_null(strstr(out.data, "\"choices\":[],"));
    assert_non_null(strstr(out.data, "\"prompt_tokens\":3"));
    size_t n = 0;
    for (const char *p = out.data; (p = strstr(p, "data: ")) != NULL; p++) {
        n++;
    }
    assert_int_equal(n, 4);
    assert_int_equal(strcmp(out.data + out.len - 14, "data: [DONE]\n\n"), 0);
    tg_buf_reset(&out);
    assert_int_equal(tg_cache_chat_json_to_sse("{\"object\":\"list\"}", 17, &out), TG_EPARSE);
    tg_buf_deinit(&out);

    struct tg_cache_settings cs;
    tg_cache_settings_of_project("{\"models\":[\"a\"],\"cache\":{\"enabled\":true,\"ttl_s\":9}}",
                                 &cs);
    assert_true(cs.enabled);
    assert_int_equal(cs.ttl_s, 9);
    tg_cache_settings_of_project("{\"cache\":{\"enabled\":\"yes\"}}", &cs);
    assert_false(cs.enabled);
    tg_cache_settings_of_project("{}", &cs);
    assert_false(cs.enabled);
    assert_non_null(tg_cache_shared_memory());
    assert_ptr_equal(tg_cache_shared_memory(), tg_cache_shared_memory());
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_ignores_order_stream_and_user),
        cmocka_unit_test(settings_are_validated),
        cmocka_unit_test(control_headers),
        cmocka_unit_test(memory_backend),
        cmocka_unit_test(memory_lru_evicts_by_bytes),
        cmocka_unit_test(fs_backend),
        cmocka_unit_test(fs_survives_restart_and_ignores_corruption),
        cmocka_unit_test(fs_cap_evicts_oldest),
        cmocka_unit_test(json_answer_as_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
