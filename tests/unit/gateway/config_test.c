/*
 * config_test.c: the YAML config loader (every documented key, errors with file and line,
 * secret references, provider rules, routes, prices) and the environment default.
 *
 * Each test writes its config into a fresh mkdtemp directory that the teardown removes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/err.h"
#include "gateway/config.h"
#include "policy/router.h"

#define MAX_FILES 8

struct fx {
    char dir[64];
    char files[MAX_FILES][128];
    size_t n_files;
    char err[1024];
};

static int
setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/tg-config-test-XXXXXX");
    if (mkdtemp(fx->dir) == NULL) {
        free(fx);
        return -1;
    }
    unsetenv("OPENAI_API_KEY");
    unsetenv("OPENAI_BASE_URL");
    unsetenv("TOLLGATE_LISTEN");
    unsetenv("TOLLGATE_DATA_DIR");
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *fx = *state;
    for (size_t i = 0; i < fx->n_files; i++) {
        unlink(fx->files[i]);
    }
    rmdir(fx->dir);
    free(fx);
    return 0;
}

/* Writes text to DIR/name and returns the path (valid until teardown). */
static const char *
write_file(struct fx *fx, const char *name, const char *text)
{
    assert_true(fx->n_files < MAX_FILES);
    char *path = fx->files[fx->n_files];
    char tmp[sizeof(fx->files[0])];
    snprintf(tmp, sizeof(tmp), "%s/%s", fx->dir, name);
    memcpy(path, tmp, sizeof(tmp));
    for (size_t i = 0; i < fx->n_files; i++) {
        if (strcmp(fx->files[i], path) == 0) {
            goto write; /* rewriting a file already tracked */
        }
    }
    fx->n_files++;
write:;
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static struct tg_config *
load_ok(struct fx *fx, const char *text)
{
    const char *path = write_file(fx, "tollgate.yaml", text);
    struct tg_config *c = NULL;
    fx->err[0] = '\0';
    int rc = tg_config_load(path, &c, fx->err, sizeof(fx->err));
    if (rc != 0) {
        fail_msg("load failed (%d): %s", rc, fx->err);
    }
    assert_non_null(c);
    return c;
}

/* Loads text expecting failure; the message must start with "PATH:LINE: " (line > 0) and
 * contain want. */
static void
load_err(struct fx *fx, const char *text, int line, const char *want)
{
    const char *path = write_file(fx, "tollgate.yaml", text);
    struct tg_config *c = NULL;
    fx->err[0] = '\0';
    int rc = tg_config_load(path, &c, fx->err, sizeof(fx->err));
    if (rc >= 0) {
        tg_config_free(c);
        fail_msg("loaded but expected an error containing \"%s\"", want);
    }
    assert_null(c);
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line);
    if (line > 0 && strncmp(fx->err, prefix, strlen(prefix)) != 0) {
        fail_msg("expected prefix \"%s\", got \"%s\"", prefix, fx->err);
    }
    if (strstr(fx->err, want) == NULL) {
        fail_msg("expected \"%s\" in \"%s\"", want, fx->err);
    }
    assert_null(strchr(fx->err, '\n')); /* one line */
}

static void
example_path(char *out, size_t cap)
{
    /* TG_TEST_DATA is SOURCE/tests/unit/data; __FILE__ is SOURCE/tests/unit/gateway/x.c:
     * the source root is three levels up either way. */
    const char *data = getenv("TG_TEST_DATA");
    char root[4096];
    snprintf(root, sizeof(root), "%s", data ? data : __FILE__);
    if (data == NULL) {
        *strrchr(root, '/') = '\0';
    }
    for (int i = 0; i < 3; i++) {
        char *slash = strrchr(root, '/');
        assert_non_null(slash);
        *slash = '\0';
    }
    snprintf(out, cap, "%s/config/tollgate.example.yaml", root);
}

static void
example_file_loads_with_documented_values(void **state)
{
    struct fx *fx = *state;
    setenv("OPENAI_API_KEY", "placeholder-env-key", 1);
    char path[4200];
    example_path(path, sizeof(path));
    struct tg_config *c = NULL;
    int rc = tg_config_load(path, &c, fx->err, sizeof(fx->err));
    if (rc != 0) {
        fail_msg("%s", fx->err);
    }
    assert_string_equal(c->source, path);
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    assert_int_equal(c->workers, 0);
    assert_string_equal(c->data_dir, "./tollgate-data");
    assert_string_equal(c->log_level, "info");
    assert_int_equal(c->http.max_header_bytes, 16384);
    assert_int_equal(c->http.max_headers, 100);
    assert_int_equal(c->http.max_body_bytes, 8388608);
    assert_int_equal(c->http.header_timeout_ms, 10000);
    assert_int_equal(c->http.body_timeout_ms, 60000);
    assert_int_equal(c->http.idle_timeout_ms, 75000);
    assert_int_equal(c->http.max_connections, 10000);
    assert_int_equal(c->http.write_high_bytes, 262144);
    assert_int_equal(c->max_json_depth, 64);
    assert_int_equal(c->max_response_bytes, 67108864);
    assert_int_equal(c->max_sse_event_bytes, 1048576);
    assert_int_equal(c->upstream.connect_ms, 10000);
    assert_int_equal(c->upstream.first_byte_ms, 120000);
    assert_int_equal(c->upstream.idle_ms, 120000);
    assert_int_equal(c->upstream.total_ms, 600000);
    assert_int_equal(c->disconnect_drain_ms, 30000);
    assert_int_equal(c->shutdown_grace_ms, 30000);
    assert_int_equal(c->ledger_batch_rows, 64);
    assert_int_equal(c->ledger_flush_ms, 200);
    assert_null(c->pepper_ref);
    assert_false(c->is_mock_default);

    assert_int_equal(c->n_providers, 2);
    const struct tg_provider *p = tg_config_provider(c, "openai");
    assert_non_null(p);
    assert_string_equal(p->type, "openai");
    assert_string_equal(p->base_url, "https://api.openai.com/v1");
    assert_string_equal(p->api_key, "placeholder-env-key");
    assert_non_null(p->ops);
    assert_string_equal(p->ops->type, "openai");
    assert_int_equal(p->timeouts.first_byte_ms, 120000);
    const struct tg_provider *m = tg_config_provider(c, "mock");
    assert_non_null(m);
    assert_null(m->api_key);
    assert_string_equal(m->ops->type, "mock");
    assert_int_equal(m->mock.latency_ms, 0);
    assert_int_equal(m->mock.tokens_per_sec, 0);
    assert_int_equal(m->mock.completion_tokens, 16);
    assert_null(tg_config_provider(c, "azure-eu"));

    assert_int_equal(c->n_models, 3);
    assert_string_equal(tg_config_route(c, "gpt-4o-mini")->provider, "openai");
    assert_string_equal(tg_config_route(c, "gpt-4o-mini")->upstream_model, "gpt-4o-mini");
    assert_string_equal(tg_config_route(c, "mock-small")->provider, "mock");
    assert_string_equal(tg_config_route(c, "o3")->name, "*");

    assert_int_equal(c->n_projects, 1);
    assert_string_equal(c->projects[0].name, "development");
    assert_int_equal(c->projects[0].n_models, 2);
    assert_string_equal(c->projects[0].models[0], "gpt-4o-mini");
    assert_string_equal(c->projects[0].models[1], "mock-small");

    assert_int_equal(c->n_prices, 1);
    assert_string_equal(c->prices[0].model, "mock-small");
    assert_int_equal(c->prices[0].input_micros, 100000);
    assert_int_equal(c->prices[0].cached_input_micros, 50000);
    assert_int_equal(c->prices[0].output_micros, 400000);
    tg_config_free(c);
}

/* The config tests/e2e/lib/gateway.mjs writes, with its optional keys. */
static const char e2e_yaml[] = "# generated by tests/e2e/lib/gateway.mjs\n"
                               "listen: 127.0.0.1:41234\n"
                               "workers: 2\n"
                               "data_dir: /tmp/x/data\n"
                               "log_level: debug\n"
                               "limits:\n"
                               "  max_header_bytes: 16384\n"
                               "  max_body_bytes: 1048576\n"
                               "  header_timeout_ms: 1500\n"
                               "  body_timeout_ms: 1500\n"
                               "upstream:\n"
                               "  connect_timeout_ms: 2000\n"
                               "  first_byte_timeout_ms: 1000\n"
                               "  idle_timeout_ms: 10000\n"
                               "  total_timeout_ms: 60000\n"
                               "  disconnect_drain_ms: 10000\n"
                               "shutdown_grace_ms: 20000\n"
                               "ledger:\n"
                               "  batch_rows: 64\n"
                               "  flush_ms: 50\n"
                               "providers:\n"
                               "  - name: up\n"
                               "    type: openai\n"
                               "    base_url: http://127.0.0.1:41235/v1\n"
                               "    api_key: env:TG_TEST_UPSTREAM_KEY\n"
                               "  - name: az\n"
                               "    type: azure\n"
                               "    base_url: http://127.0.0.1:41235/\n"
                               "    api_key: env:TG_TEST_AZURE_KEY\n"
                               "    api_version: \"2024-10-21\"\n"
                               "  - name: dead\n"
                               "    type: openai\n"
                               "    base_url: http://127.0.0.1:1/v1\n"
                               "    api_key: env:TG_TEST_UPSTREAM_KEY\n"
                               "  - name: mock\n"
                               "    type: mock\n"
                               "models:\n"
                               "  - name: gpt-4o-mini\n"
                               "    provider: up\n"
                               "  - name: azure-4o\n"
                               "    provider: az\n"
                               "    upstream_model: my-deployment\n"
                               "  - name: unreachable-model\n"
                               "    provider: dead\n"
                               "  - name: mock-small\n"
                               "    provider: mock\n"
                               "  - name: \"*\"\n"
                               "    provider: up\n"
                               "projects:\n"
                               "  - name: development\n"
                               "    models: [gpt-4o-mini, mock-small]\n"
                               "prices:\n"
                               "  - model: gpt-4o-mini\n"
                               "    input: \"1.5\"\n"
                               "    cached_input: \"0.75\"\n"
                               "    output: \"6\"\n"
                               "  - model: slow-stream\n"
                               "    input: \"2\"\n"
                               "    cached_input: \"1\"\n"
                               "    output: \"8\"\n";

static void
e2e_config_loads(void **state)
{
    struct fx *fx = *state;
    setenv("TG_TEST_UPSTREAM_KEY", "up-key", 1);
    setenv("TG_TEST_AZURE_KEY", "az-key", 1);
    struct tg_config *c = load_ok(fx, e2e_yaml);
    assert_int_equal(c->listen_port, 41234);
    assert_int_equal(c->workers, 2);
    assert_string_equal(c->log_level, "debug");
    assert_int_equal(c->http.max_body_bytes, 1048576);
    assert_int_equal(c->http.header_timeout_ms, 1500);
    assert_int_equal(c->http.max_headers, 100); /* not given: default */
    assert_int_equal(c->upstream.first_byte_ms, 1000);
    assert_int_equal(c->disconnect_drain_ms, 10000);
    assert_int_equal(c->shutdown_grace_ms, 20000);
    assert_int_equal(c->ledger_batch_rows, 64);
    assert_int_equal(c->ledger_flush_ms, 50);
    const struct tg_provider *az = tg_config_provider(c, "az");
    assert_string_equal(az->api_version, "2024-10-21");
    assert_string_equal(az->base_url, "http://127.0.0.1:41235"); /* trailing '/' dropped */
    assert_string_equal(az->api_key, "az-key");
    assert_string_equal(az->ops->type, "azure");
    /* Providers without timeouts: inherit upstream.* */
    assert_int_equal(az->timeouts.connect_ms, 2000);
    assert_int_equal(az->timeouts.first_byte_ms, 1000);
    assert_string_equal(tg_config_provider(c, "up")->api_key, "up-key");
    assert_string_equal(tg_config_route(c, "azure-4o")->upstream_model, "my-deployment");
    assert_string_equal(tg_config_route(c, "unreachable-model")->provider, "dead");
    assert_int_equal(c->prices[0].input_micros, 1500000);
    assert_int_equal(c->prices[0].cached_input_micros, 750000);
    assert_int_equal(c->prices[0].output_micros, 6000000);
    tg_config_free(c);
    unsetenv("TG_TEST_UPSTREAM_KEY");
    unsetenv("TG_TEST_AZURE_KEY");
}

static void
secrets_resolve_from_env_and_file(void **state)
{
    struct fx *fx = *state;
    write_file(fx, "key1", "file-secret-1\n");
    write_file(fx, "key2", "file-secret-2\r\n\n");
    setenv("TG_TEST_KEY_A", "env-secret-a", 1);
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "providers:\n"
             "  - {name: a, type: openai, api_key: env:TG_TEST_KEY_A}\n"
             "  - {name: b, type: openai-compatible, base_url: 'http://h/v1',\n"
             "     api_key: 'file:%s/key1'}\n"
             "  - name: c\n"
             "    type: openai\n"
             "    api_key: file:%s/key2\n"
             "  - {name: d, type: openai-compatible, base_url: https://x}\n",
             fx->dir, fx->dir);
    struct tg_config *c = load_ok(fx, yaml);
    assert_string_equal(tg_config_provider(c, "a")->api_key, "env-secret-a");
    assert_string_equal(tg_config_provider(c, "b")->api_key, "file-secret-1");
    assert_string_equal(tg_config_provider(c, "c")->api_key, "file-secret-2");
    assert_null(tg_config_provider(c, "d")->api_key); /* openai-compatible: key optional */
    assert_int_equal(c->n_models, 0);
    tg_config_free(c);

    /* The public resolver, directly. */
    char err[400];
    char *s = tg_config_resolve_secret("env:TG_TEST_KEY_A", "x", err, sizeof(err));
    assert_string_equal(s, "env-secret-a");
    free(s);
    assert_null(tg_config_resolve_secret(NULL, "x", err, sizeof(err)));
    assert_null(tg_config_resolve_secret("", "x", err, sizeof(err)));
    assert_null(tg_config_resolve_secret("env:", "x", err, sizeof(err)));
    assert_null(tg_config_resolve_secret("file:", "x", err, sizeof(err)));
    setenv("TG_TEST_EMPTY", "", 1);
    assert_null(tg_config_resolve_secret("env:TG_TEST_EMPTY", "x", err, sizeof(err)));
    assert_non_null(strstr(err, "empty"));
    unsetenv("TG_TEST_EMPTY");
    unsetenv("TG_TEST_KEY_A");
}

static void
inline_secret_is_refused_without_echo(void **state)
{
    struct fx *fx = *state;
    const char *secret = "placeholder-inline-secret-value";
    char yaml[512];
    snprintf(yaml, sizeof(yaml),
             "providers:\n"
             "  - name: openai\n"
             "    type: openai\n"
             "    api_key: %s\n",
             secret);
    load_err(fx, yaml, 4,
             "providers[0].api_key (provider 'openai'): inline secrets are refused; put the key "
             "in an environment variable and write `api_key: env:OPENAI_API_KEY`, or in a file "
             "and write `api_key: file:/path`");
    assert_null(strstr(fx->err, secret));

    /* The fix-it names the key even when the provider's name has dots. */
    snprintf(yaml, sizeof(yaml),
             "providers:\n  - name: openai.eu\n    type: openai\n    api_key: %s\n", secret);
    load_err(fx, yaml, 4, "write `api_key: env:OPENAI_API_KEY`, or in a file and write `api_key:");
    assert_null(strstr(fx->err, secret));

    /* A key pasted after env: is not a variable name: refused, not echoed either. */
    snprintf(yaml, sizeof(yaml),
             "providers:\n  - name: openai\n    type: openai\n    api_key: env:%s\n", secret);
    load_err(fx, yaml, 4, "`env:` must be followed by an environment variable name");
    assert_null(strstr(fx->err, secret));

    /* keys.pepper follows the same rule. */
    load_err(fx, "keys:\n  pepper: hunter2hunter2\n", 2,
             "keys.pepper: inline secrets are refused; put the key in an environment variable "
             "and write `pepper: env:TOLLGATE_PEPPER`");
    assert_null(strstr(fx->err, "hunter2"));
    struct tg_config *c = load_ok(fx, "keys:\n  pepper: env:TOLLGATE_PEPPER\n");
    assert_string_equal(c->pepper_ref, "env:TOLLGATE_PEPPER"); /* resolved later by serve */
    tg_config_free(c);

    char err[400];
    assert_null(tg_config_resolve_secret(secret, "keys.pepper", err, sizeof(err)));
    assert_null(strstr(err, secret));
    assert_non_null(strstr(err, "inline secrets are refused"));
}

static void
missing_env_var_and_unreadable_file_name_the_provider(void **state)
{
    struct fx *fx = *state;
    unsetenv("TG_TEST_NOT_SET");
    load_err(fx,
             "providers:\n  - name: primary\n    type: openai\n"
             "    api_key: env:TG_TEST_NOT_SET\n",
             4,
             "providers[0].api_key (provider 'primary'): environment variable TG_TEST_NOT_SET "
             "is not set");
    char yaml[512];
    snprintf(yaml, sizeof(yaml),
             "providers:\n  - name: second\n    type: openai\n"
             "    api_key: file:%s/no-such-file\n",
             fx->dir);
    load_err(fx, yaml, 4, "providers[0].api_key (provider 'second'): cannot open ");
    assert_non_null(strstr(fx->err, "no-such-file"));
    /* Several providers, none usable: still refused, and it says so. */
    load_err(fx,
             "providers:\n  - name: a\n    type: openai\n    api_key: env:TG_TEST_NOT_SET\n"
             "  - name: b\n    type: openai\n    api_key: env:TG_TEST_NOT_SET\n",
             4, "no other provider is usable either");

    /* A key file with a line break inside would split an HTTP header. */
    write_file(fx, "twolines", "abc\ndef\n");
    snprintf(yaml, sizeof(yaml),
             "providers:\n  - name: x\n    type: openai\n    api_key: file:%s/twolines\n", fx->dir);
    load_err(fx, yaml, 4, "control character");
    assert_null(strstr(fx->err, "abc"));
}

/* A provider whose key does not resolve, next to one that can serve: the config loads, the
 * provider says why it is unavailable (naming the variable or file, never a value), and
 * the routers never pick its deployments. An inline secret is still a config error. */
static void
missing_key_marks_provider_unavailable(void **state)
{
    struct fx *fx = *state;
    unsetenv("TG_TEST_NOT_SET");
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "providers:\n"
             "  - name: m\n    type: mock\n"
             "  - name: azure-eu\n    type: openai\n    api_key: env:TG_TEST_NOT_SET\n"
             "  - name: filed\n    type: openai\n    api_key: file:%s/no-such-file\n"
             "models:\n"
             "  - name: gpt-4o\n    deployments:\n"
             "      - {provider: azure-eu, upstream_model: gpt-4o, weight: 1000}\n"
             "      - {provider: m, upstream_model: gpt-4o, weight: 1}\n"
             "  - name: only-azure\n    provider: azure-eu\n",
             fx->dir);
    struct tg_config *c = load_ok(fx, yaml);
    const struct tg_provider *p = tg_config_provider(c, "azure-eu");
    assert_non_null(p);
    assert_null(p->api_key);
    assert_string_equal(p->unavailable, "environment variable TG_TEST_NOT_SET is not set");
    p = tg_config_provider(c, "filed");
    assert_non_null(p);
    assert_non_null(strstr(p->unavailable, "cannot open "));
    assert_non_null(strstr(p->unavailable, "no-such-file"));
    assert_null(tg_config_provider(c, "m")->unavailable);

    const struct tg_model_route *r = tg_config_route(c, "gpt-4o");
    assert_non_null(r);
    assert_non_null(r->router);
    assert_string_equal(tg_router_unavailable(r->router, 0),
                        "provider 'azure-eu': environment variable TG_TEST_NOT_SET is not set");
    assert_null(tg_router_unavailable(r->router, 1));
    for (uint64_t k = 0; k < 20; k++) {
        int i = tg_router_pick(r->router, 0, 1, k * 977);
        assert_int_equal(i, 1); /* weight 1000 does not matter: it is never picked */
        tg_router_record(r->router, i, TG_ROUTE_OK, 1, 0, 1);
    }
    r = tg_config_route(c, "only-azure");
    assert_non_null(r);
    assert_int_equal(tg_router_pick(r->router, 0, 1, 0), -1);
    tg_config_free(c);

    /* An inline secret stays a config error even when another provider could serve. */
    load_err(fx,
             "providers:\n  - name: m\n    type: mock\n"
             "  - name: x\n    type: openai\n    api_key: placeholder-inline-123\n",
             6, "inline secrets are refused");
    assert_null(strstr(fx->err, "placeholder-inline"));
}

static void
unknown_key_reports_line(void **state)
{
    struct fx *fx = *state;
    load_err(fx, "listen: 127.0.0.1:8080\nlimits:\n  max_body_bytes: 5\n  foo: 1\n", 4,
             "unknown key 'foo' in limits (expected one of: max_header_bytes,");
    load_err(fx, "\n\nlisten: 127.0.0.1:8080\nlisen: 1\n", 4, "unknown key 'lisen' (expected");
    load_err(fx, "providers:\n  - name: a\n    type: mock\n    tipe: x\n", 4,
             "unknown key 'tipe' in providers[0]");
    load_err(fx,
             "providers:\n  - name: a\n    type: openai\n    api_key: env:X\n"
             "    timeouts: {connect_ms: 5, first_byte: 1}\n",
             5, "unknown key 'first_byte' in providers[0].timeouts");
    /* The same key twice in one mapping. */
    load_err(fx, "workers: 1\nworkers: 2\n", 2, "duplicate key 'workers'");
}

static void
wrong_types_and_ranges(void **state)
{
    struct fx *fx = *state;
    load_err(fx, "limits:\n  max_body_bytes: lots\n", 2,
             "limits.max_body_bytes: expected a non-negative integer");
    load_err(fx, "limits:\n  max_body_bytes: -1\n", 2,
             "limits.max_body_bytes: expected a non-negative integer");
    load_err(fx, "limits:\n  max_body_bytes: 1.5\n", 2, "expected a non-negative integer");
    load_err(fx, "limits:\n  max_body_bytes: [1]\n", 2, "expected a non-negative integer");
    load_err(fx, "limits:\n  max_body_bytes:\n", 2, "expected a non-negative integer");
    load_err(fx, "limits:\n  max_header_bytes: 10\n", 2,
             "limits.max_header_bytes: 10 is out of range (1024 to 1048576)");
    load_err(fx, "workers: 99999999999999999999999\n", 1, "workers: ");
    load_err(fx, "upstream:\n  total_timeout_ms: 0\n", 2, "out of range");
    load_err(fx, "limits: 5\n", 1, "limits: expected a mapping");
    load_err(fx, "providers: {a: 1}\n", 1, "providers: expected a list");
    load_err(fx, "log_level: loud\n", 1, "log_level: expected one of debug, info, warn, error");
    load_err(fx, "data_dir: ''\n", 1, "data_dir: expected a non-empty string");
    load_err(fx, "- a\n- b\n", 1, "the top level must be a mapping");
    load_err(fx, "limits:\n  max_body_bytes: [1\n", 3, "YAML syntax error");
    load_err(fx, "a: &x 1\nworkers: *x\n", 2, "aliases");
    load_err(fx, "projects:\n  - name: p\n    models: []\n", 3, "an empty list");

    /* Quoted integers are accepted; zero where zero means something. */
    struct tg_config *c =
        load_ok(fx, "workers: \"3\"\nshutdown_grace_ms: 0\nupstream: {disconnect_drain_ms: 0}\n");
    assert_int_equal(c->workers, 3);
    assert_int_equal(c->shutdown_grace_ms, 0);
    assert_int_equal(c->disconnect_drain_ms, 0);
    tg_config_free(c);
}

static void
listen_forms(void **state)
{
    struct fx *fx = *state;
    static const struct {
        const char *yaml;
        const char *host;
        int port;
    } ok[] = {
        {"listen: 0.0.0.0:80\n", "0.0.0.0", 80},
        {"listen: \"[::1]:8080\"\n", "::1", 8080},
        {"listen: '[::]:1'\n", "::", 1},
        {"listen: :9090\n", "0.0.0.0", 9090},
        {"listen: localhost:65535\n", "127.0.0.1", 65535},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct tg_config *c = load_ok(fx, ok[i].yaml);
        assert_string_equal(c->listen_host, ok[i].host);
        assert_int_equal(c->listen_port, ok[i].port);
        tg_config_free(c);
    }
    static const char *bad[] = {
        "listen: 8080\n",           "listen: '127.0.0.1:'\n",
        "listen: 127.0.0.1:0\n",    "listen: 127.0.0.1:65536\n",
        "listen: example.com:80\n", "listen: \"::1:80\"\n",
        "listen: \"[::1]80\"\n",    "listen: 1.2.3.4:8x\n",
        "listen: [1, 2]\n",         "listen: \"[1.2.3.4]:80\"\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        load_err(fx, bad[i], 1, "listen: ");
    }
}

static void
provider_types_and_rules(void **state)
{
    struct fx *fx = *state;
    setenv("TG_TEST_K", "k", 1);
    load_err(fx, "providers:\n  - name: x\n    type: anthropic\n", 3,
             "providers[0].type: unknown provider type 'anthropic'");
    load_err(fx, "providers:\n  - name: x\n", 2, "providers[0]: name and type are required");
    load_err(fx,
             "providers:\n  - name: az\n    type: azure\n    base_url: https://r.example\n"
             "    api_key: env:TG_TEST_K\n",
             2, "type azure requires api_version");
    load_err(fx,
             "providers:\n  - name: az\n    type: azure\n    api_version: 2024-10-21\n"
             "    api_key: env:TG_TEST_K\n",
             2, "type azure requires base_url");
    load_err(fx, "providers:\n  - name: o\n    type: openai\n", 2, "type openai requires api_key");
    load_err(fx, "providers:\n  - name: c\n    type: openai-compatible\n", 2,
             "type openai-compatible requires base_url");
    load_err(fx, "providers:\n  - name: m\n    type: mock\n    base_url: http://x\n", 4,
             "type mock takes no base_url");
    load_err(fx, "providers:\n  - name: m\n    type: mock\n    api_key: env:TG_TEST_K\n", 4,
             "type mock takes no api_key");
    load_err(fx,
             "providers:\n  - name: o\n    type: openai\n    api_key: env:TG_TEST_K\n"
             "    api_version: '1'\n",
             5, "only type azure takes one");
    load_err(fx,
             "providers:\n  - name: o\n    type: openai\n    api_key: env:TG_TEST_K\n"
             "    base_url: ftp://x\n",
             5, "expected an http:// or https:// URL");
    load_err(fx, "providers:\n  - {name: a, type: mock}\n  - {name: a, type: mock}\n", 3,
             "provider name 'a' is used twice");

    /* Per-field timeout overrides over upstream.*, even when upstream comes later. */
    struct tg_config *c = load_ok(fx, "providers:\n"
                                      "  - name: o\n"
                                      "    type: openai\n"
                                      "    api_key: env:TG_TEST_K\n"
                                      "    timeouts: { first_byte_ms: 60000 }\n"
                                      "  - name: m\n"
                                      "    type: mock\n"
                                      "    mock: {latency_ms: 5, tokens_per_sec: 100, "
                                      "completion_tokens: 3}\n"
                                      "upstream:\n"
                                      "  connect_timeout_ms: 1234\n");
    const struct tg_provider *o = tg_config_provider(c, "o");
    assert_string_equal(o->base_url, "https://api.openai.com/v1"); /* default for openai */
    assert_int_equal(o->timeouts.first_byte_ms, 60000);
    assert_int_equal(o->timeouts.connect_ms, 1234);
    assert_int_equal(o->timeouts.total_ms, 600000);
    const struct tg_provider *m = tg_config_provider(c, "m");
    assert_int_equal(m->mock.latency_ms, 5);
    assert_int_equal(m->mock.tokens_per_sec, 100);
    assert_int_equal(m->mock.completion_tokens, 3);
    assert_int_equal(m->timeouts.connect_ms, 1234);
    tg_config_free(c);
    unsetenv("TG_TEST_K");
}

static void
models_projects_and_duplicates(void **state)
{
    struct fx *fx = *state;
    load_err(fx,
             "providers:\n  - {name: m, type: mock}\nmodels:\n  - name: a\n    provider: nope\n", 5,
             "models[0].provider: no provider is named 'nope'");
    load_err(fx,
             "providers:\n  - {name: m, type: mock}\nmodels:\n  - {name: a, provider: m}\n"
             "  - {name: a, provider: m}\n",
             5, "models[1]: model name 'a' is used twice");
    load_err(fx, "providers:\n  - {name: m, type: mock}\nmodels:\n  - {name: a}\n", 4,
             "models[0]: name and provider are required");
    load_err(fx,
             "providers:\n  - {name: m, type: mock}\nmodels:\n"
             "  - {name: '*', provider: m, upstream_model: x}\n",
             4, "the \"*\" route");
    load_err(fx, "projects:\n  - name: p\n  - name: p\n", 3, "project name 'p' is used twice");
    load_err(fx, "projects:\n  - models: [a]\n", 2, "projects[0]: name is required");
    load_err(fx, "models:\n  - {name: a, provider: openai}\n", 2, "add a providers: list");

    /* Project lists may name models only a "*" route serves. */
    struct tg_config *c = load_ok(fx, "providers:\n  - {name: m, type: mock}\n"
                                      "models:\n  - {name: a, provider: m}\n"
                                      "projects:\n  - {name: p, models: [a, not-listed]}\n"
                                      "  - name: q\n");
    assert_int_equal(c->n_projects, 2);
    assert_string_equal(c->projects[0].models[1], "not-listed");
    assert_int_equal(c->projects[1].n_models, 0);
    assert_null(c->projects[1].models);
    tg_config_free(c);
}

static void
prices_are_exact(void **state)
{
    struct fx *fx = *state;
    struct tg_config *c = load_ok(fx, "prices:\n"
                                      "  - model: a\n"
                                      "    input: \"0.000001\"\n"
                                      "    output: 0.15\n"
                                      "  - {model: b, input: 2, cached_input: '1.234567', "
                                      "output: '9223372036854.775807'}\n");
    assert_int_equal(c->n_prices, 2);
    assert_string_equal(c->prices[0].model, "a");
    assert_int_equal(c->prices[0].input_micros, 1);
    assert_int_equal(c->prices[0].cached_input_micros, 1); /* defaults to input */
    assert_int_equal(c->prices[0].output_micros, 150000);  /* plain 0.15, not a float */
    assert_int_equal(c->prices[1].input_micros, 2000000);
    assert_int_equal(c->prices[1].cached_input_micros, 1234567);
    assert_int_equal(c->prices[1].output_micros, INT64_MAX);
    tg_config_free(c);
    load_err(fx, "prices:\n  - {model: a, input: 0.1234567, output: 1}\n", 2,
             "prices[0].input: expected USD per 1M tokens");
    load_err(fx, "prices:\n  - {model: a, input: '-1', output: 1}\n", 2, "prices[0].input");
    load_err(fx, "prices:\n  - {model: a, input: 1e3, output: 1}\n", 2, "prices[0].input");
    load_err(fx, "prices:\n  - {model: a, input: 1}\n", 2, "model, input and output are required");
    load_err(fx,
             "prices:\n  - {model: a, input: 1, output: 1}\n  - {model: a, input: 1, output: 1}\n",
             3, "prices for 'a' are given twice");
}

static void
from_env_with_and_without_openai_key(void **state)
{
    struct fx *fx = *state;
    struct tg_config *c = NULL;
    assert_int_equal(tg_config_from_env(&c, fx->err, sizeof(fx->err)), 0);
    assert_true(c->is_mock_default);
    assert_string_equal(c->source, "environment");
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    assert_string_equal(c->data_dir, "./tollgate-data");
    assert_int_equal(c->n_providers, 1);
    assert_string_equal(c->providers[0].type, "mock");
    assert_non_null(c->providers[0].ops);
    assert_string_equal(tg_config_route(c, "anything")->provider, "mock");
    assert_string_equal(tg_config_route(c, "mock-small")->name, "mock-small");
    tg_config_free(c);

    setenv("OPENAI_API_KEY", "placeholder-from-env", 1);
    setenv("TOLLGATE_LISTEN", "[::1]:9999", 1);
    setenv("TOLLGATE_DATA_DIR", "/var/lib/tg", 1);
    c = NULL;
    assert_int_equal(tg_config_from_env(&c, fx->err, sizeof(fx->err)), 0);
    assert_false(c->is_mock_default);
    assert_string_equal(c->listen_host, "::1");
    assert_int_equal(c->listen_port, 9999);
    assert_string_equal(c->data_dir, "/var/lib/tg");
    const struct tg_provider *p = tg_config_provider(c, "openai");
    assert_non_null(p);
    assert_string_equal(p->base_url, "https://api.openai.com/v1");
    assert_string_equal(p->api_key, "placeholder-from-env");
    assert_string_equal(p->ops->type, "openai");
    assert_int_equal(c->n_models, 1);
    const struct tg_model_route *r = tg_config_route(c, "gpt-4o");
    assert_string_equal(r->name, "*");
    assert_string_equal(r->provider, "openai");
    tg_config_free(c);

    setenv("OPENAI_BASE_URL", "http://127.0.0.1:1234/v1/", 1);
    c = NULL;
    assert_int_equal(tg_config_from_env(&c, fx->err, sizeof(fx->err)), 0);
    assert_string_equal(c->providers[0].base_url, "http://127.0.0.1:1234/v1");
    tg_config_free(c);

    setenv("TOLLGATE_LISTEN", "nowhere", 1);
    c = NULL;
    assert_true(tg_config_from_env(&c, fx->err, sizeof(fx->err)) < 0);
    assert_null(c);
    assert_non_null(strstr(fx->err, "TOLLGATE_LISTEN"));

    /* A config without providers: takes the environment's providers and routes. */
    unsetenv("TOLLGATE_LISTEN");
    c = load_ok(fx, "listen: 127.0.0.1:7000\n");
    assert_int_equal(c->listen_port, 7000);
    assert_string_equal(tg_config_route(c, "x")->provider, "openai");
    assert_string_equal(c->providers[0].base_url, "http://127.0.0.1:1234/v1");
    tg_config_free(c);
    unsetenv("OPENAI_API_KEY");
    unsetenv("OPENAI_BASE_URL");
    unsetenv("TOLLGATE_DATA_DIR");
}

static void
route_exact_then_star(void **state)
{
    struct fx *fx = *state;
    struct tg_config *c = load_ok(fx, "providers:\n  - {name: m, type: mock}\n"
                                      "  - {name: n, type: mock}\n"
                                      "models:\n"
                                      "  - {name: '*', provider: n}\n"
                                      "  - {name: a, provider: m, upstream_model: a-up}\n");
    const struct tg_model_route *r = tg_config_route(c, "a");
    assert_string_equal(r->name, "a");
    assert_string_equal(r->upstream_model, "a-up");
    r = tg_config_route(c, "b");
    assert_string_equal(r->name, "*"); /* "*" listed first, still only a fallback */
    assert_string_equal(r->provider, "n");
    assert_null(tg_config_route(c, NULL));
    assert_null(tg_config_provider(c, "zzz"));
    assert_null(tg_config_provider(c, NULL));
    tg_config_free(c);

    c = load_ok(fx, "providers:\n  - {name: m, type: mock}\nmodels:\n  - {name: a, provider: m}\n");
    assert_non_null(tg_config_route(c, "a"));
    assert_null(tg_config_route(c, "b"));
    assert_null(tg_config_route(c, "a-2024"));
    tg_config_free(c);
}

static void
empty_and_missing_files(void **state)
{
    struct fx *fx = *state;
    struct tg_config *c = load_ok(fx, "# only a comment\n");
    assert_int_equal(c->listen_port, 8080);
    assert_true(c->is_mock_default); /* no providers: the environment's (mock) */
    tg_config_free(c);
    c = load_ok(fx, "limits:\nupstream:\n# nothing under them: defaults\n");
    assert_int_equal(c->http.max_body_bytes, 8388608);
    tg_config_free(c);

    char path[128];
    snprintf(path, sizeof(path), "%s/absent.yaml", fx->dir);
    c = NULL;
    assert_int_equal(tg_config_load(path, &c, fx->err, sizeof(fx->err)), TG_EIO);
    assert_null(c);
    assert_non_null(strstr(fx->err, "absent.yaml"));
    load_err(fx, "a: 1\n---\nb: 2\n", 2, "one YAML document");
}

/* budgets.*: the first org budget in exact micro-dollars, the month's zone signed. */
static void
budgets_keys(void **state)
{
    struct fx *fx = *state;
    struct tg_config *c = load_ok(fx, "listen: 127.0.0.1:9000\n");
    assert_int_equal(c->default_org_budget_micros, 100000000);
    assert_int_equal(c->budget_tz_offset_minutes, 0);
    tg_config_free(c);
    c = load_ok(fx, "budgets:\n  default_org_monthly_usd: \"12.345678\"\n"
                    "  timezone_offset_minutes: -300\n");
    assert_int_equal(c->default_org_budget_micros, 12345678);
    assert_int_equal(c->budget_tz_offset_minutes, -300);
    tg_config_free(c);
    c = load_ok(fx, "budgets:\n  default_org_monthly_usd: 0\n  timezone_offset_minutes: +840\n");
    assert_int_equal(c->default_org_budget_micros, 0);
    assert_int_equal(c->budget_tz_offset_minutes, 840);
    tg_config_free(c);
    load_err(fx, "budgets:\n  default_org_monthly_usd: -1\n", 2, "default_org_monthly_usd");
    load_err(fx, "budgets:\n  default_org_monthly_usd: 1.0000001\n", 2, "six decimals");
    load_err(fx, "budgets:\n  default_org_monthly_usd: 1000000.000001\n", 2, "1000000");
    load_err(fx, "budgets:\n  timezone_offset_minutes: 841\n", 2, "-840 to 840");
    load_err(fx, "budgets:\n  timezone_offset_minutes: 1h\n", 2, "timezone_offset_minutes");
    load_err(fx, "budgets:\n  timezone_offset_minutes: --5\n", 2, "timezone_offset_minutes");
    load_err(fx, "budgets:\n  currency: eur\n", 2, "currency");
}

/* metrics.bearer_token is resolved at load (a reference only, and one that must resolve);
 * access_log is off by default, takes a path or "-" and a bounded queue. */
static void
metrics_and_access_log_keys(void **state)
{
    struct fx *fx = *state;
    struct tg_config *c = load_ok(fx, "listen: 127.0.0.1:9000\n");
    assert_null(c->metrics_token);
    assert_null(c->access_log_path);
    assert_int_equal(c->access_log_queue, 8192);
    tg_config_free(c);
    setenv("TG_TEST_METRICS_TOKEN", "scrape-placeholder", 1);
    c = load_ok(fx, "metrics:\n  bearer_token: env:TG_TEST_METRICS_TOKEN\n"
                    "access_log:\n  path: \"-\"\n  queue: 100\n");
    assert_string_equal(c->metrics_token, "scrape-placeholder");
    assert_string_equal(c->access_log_path, "-");
    assert_int_equal(c->access_log_queue, 100);
    tg_config_free(c);
    write_file(fx, "tok", "from-file\n");
    char text[600];
    snprintf(text, sizeof(text), "metrics:\n  bearer_token: file:%s/tok\n", fx->dir);
    c = load_ok(fx, text);
    assert_string_equal(c->metrics_token, "from-file");
    tg_config_free(c);
    load_err(fx, "metrics:\n  bearer_token: plain-text-token\n", 2, "bearer_token");
    load_err(fx, "access_log:\n  queue: 1\n", 2, "queue");
    load_err(fx, "access_log:\n  path: \"\"\n", 2, "path");
    load_err(fx, "access_log:\n  format: json\n", 2, "format");
    /* A reference that does not resolve stops the load, naming the key and the variable. */
    unsetenv("TG_TEST_METRICS_TOKEN");
    const char *path =
        write_file(fx, "tollgate.yaml", "metrics:\n  bearer_token: env:TG_TEST_METRICS_TOKEN\n");
    c = NULL;
    assert_true(tg_config_load(path, &c, fx->err, sizeof(fx->err)) < 0);
    assert_null(c);
    assert_non_null(strstr(fx->err, "metrics.bearer_token"));
    assert_non_null(strstr(fx->err, "TG_TEST_METRICS_TOKEN"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(example_file_loads_with_documented_values, setup, teardown),
        cmocka_unit_test_setup_teardown(e2e_config_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(secrets_resolve_from_env_and_file, setup, teardown),
        cmocka_unit_test_setup_teardown(inline_secret_is_refused_without_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_env_var_and_unreadable_file_name_the_provider,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(missing_key_marks_provider_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_key_reports_line, setup, teardown),
        cmocka_unit_test_setup_teardown(wrong_types_and_ranges, setup, teardown),
        cmocka_unit_test_setup_teardown(listen_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(provider_types_and_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(models_projects_and_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(prices_are_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(from_env_with_and_without_openai_key, setup, teardown),
        cmocka_unit_test_setup_teardown(route_exact_then_star, setup, teardown),
        cmocka_unit_test_setup_teardown(empty_and_missing_files, setup, teardown),
        cmocka_unit_test_setup_teardown(budgets_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(metrics_and_access_log_keys, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
