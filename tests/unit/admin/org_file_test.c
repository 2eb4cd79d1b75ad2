/*
 * org_file_test.c: the organization file (admin/org_file.h): writing a model and reading it
 * back gives the same model, strings that would read as other types are quoted, scalars in
 * settings get their JSON types, the organization section (budget and rate limits) round-trips
 * and is checked as admission reads it, a project's cache, token_policy and aliases settings
 * round-trip and are checked by their own parsers, and every refusal names the line at fault.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "admin/org_file.h"
#include "core/buf.h"

/* The model without the "_line" members the reader adds to list items. */
static void
strip_lines(json_t *v)
{
    size_t i;
    json_t *item;
    const char *k;
    json_t *m;
    if (json_is_array(v)) {
        json_array_foreach(v, i, item)
        {
            strip_lines(item);
        }
    } else if (json_is_object(v)) {
        json_object_del(v, "_line");
        json_object_foreach(v, k, m)
        {
            strip_lines(m);
        }
    }
}

static char *
write_model(const json_t *model)
{
    struct tg_buf b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_org_file_write(model, &b), 0);
    char *text = tg_buf_steal(&b, NULL);
    return text;
}

static json_t *
read_ok(const char *text)
{
    char err[400] = "";
    json_t *m = tg_org_file_read(text, strlen(text), err, sizeof(err));
    if (m == NULL) {
        fail_msg("refused: %s\n%s", err, text);
    }
    strip_lines(m);
    return m;
}

/* Reads text expecting a refusal whose message contains want. */
static void
read_refused(const char *text, const char *want)
{
    char err[400] = "";
    json_t *m = tg_org_file_read(text, strlen(text), err, sizeof(err));
    if (m != NULL) {
        json_decref(m);
        fail_msg("accepted: %s", text);
    }
    if (strstr(err, want) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", err, want);
    }
}

static void
test_round_trip_keeps_every_value(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *model = json_loads(
        "{\"users\":[{\"email\":\"ada@example.com\",\"name\":\"Ada: \\\"the\\\" first\","
        "\"role\":\"owner\"},{\"email\":\"bo@example.com\",\"name\":\"yes\",\"role\":\"reader\"}],"
        "\"projects\":[{\"name\":\"007\",\"environment\":\"true\",\"archived\":false,"
        "\"settings\":{\"models\":[\"gpt-4o-mini\",\"null\",\"1.5\",\"-x\",\"caf\\u00e9\"]},"
        "\"members\":[{\"email\":\"ada@example.com\",\"role\":\"owner\"}],"
        "\"service_accounts\":[{\"name\":\"~\",\"role\":\"member\"},{\"name\":\"~\",\"role\":"
        "\"owner\"}]},"
        "{\"name\":\"p\",\"environment\":\"staging\",\"archived\":true,\"settings\":{},"
        "\"members\":[],\"service_accounts\":[]}]}",
        0, &jerr);
    assert_non_null(model);
    char *text = write_model(model);
    /* strings that would read as something else are quoted; ordinary ones stay plain */
    assert_non_null(strstr(text, "- name: \"007\"\n"));
    assert_non_null(strstr(text, "environment: \"true\"\n"));
    assert_non_null(strstr(text, "name: \"yes\"\n"));
    assert_non_null(strstr(text, "environment: staging\n"));
    assert_non_null(strstr(text, "models: [gpt-4o-mini, \"null\", \"1.5\", \"-x\", café]"));
    assert_true(strncmp(text, "version: 1\n", 11) == 0);
    json_t *back = read_ok(text);
    if (!json_equal(model, back)) {
        char *a = json_dumps(model, JSON_SORT_KEYS), *b = json_dumps(back, JSON_SORT_KEYS);
        fail_msg("differs:\n%s\n%s\n%s", a, b, text);
    }
    /* the same model writes the same text */
    char *again = write_model(back);
    assert_string_equal(text, again);
    free(again);
    free(text);
    json_decref(back);
    json_decref(model);
}

/* Plain scalars get JSON types: a model name that reads as a number is not a string, so it
 * is refused unless quoted. */
static void
test_plain_scalars_are_typed(void **state)
{
    (void)state;
    read_refused("projects:\n- name: p\n  settings:\n    models: [a, 1.5]\n",
                 "line 4: settings.models must be a list of model names");
    read_refused("projects:\n- name: p\n  settings:\n    models: [true]\n", "settings.models");
    json_t *m = read_ok("projects:\n- name: p\n  settings:\n    models: [\"1.5\", 'true', yes]\n");
    json_t *models = json_object_get(
        json_object_get(json_array_get(json_object_get(m, "projects"), 0), "settings"), "models");
    assert_int_equal(json_array_size(models), 3);
    assert_string_equal(json_string_value(json_array_get(models, 0)), "1.5");
    assert_string_equal(json_string_value(json_array_get(models, 1)), "true");
    assert_string_equal(json_string_value(json_array_get(models, 2)), "yes");
    json_decref(m);
}

static void
test_left_out_sections_stay_absent(void **state)
{
    (void)state;
    json_t *m = read_ok("projects:\n- name: p\n  settings:\n    models: [a]\n");
    assert_null(json_object_get(m, "users"));
    json_t *p = json_array_get(json_object_get(m, "projects"), 0);
    assert_null(json_object_get(p, "members"));
    assert_null(json_object_get(p, "environment"));
    assert_null(json_object_get(p, "archived"));
    json_decref(m);
    m = read_ok("users:\n- email: Ada@Example.COM\n  role: owner\n");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(m, "users"), 0), "email")),
        "ada@example.com");
    json_decref(m);
}

static void
test_refusals_name_the_line(void **state)
{
    (void)state;
    read_refused("version: 1\nusers: []\nteams: []\n", "line 3: unknown key \"teams\"");
    read_refused("projects:\n- name: a\n  colour: red\n", "line 3: unknown key \"colour\"");
    read_refused("projects:\n- name: a\n  settings:\n    modles: [x]\n", "line 4");
    read_refused("projects:\n- name: a\n  settings:\n    models: x\n", "line 4: settings.models");
    read_refused("projects:\n- name: a\n  archived: maybe\n", "line 3: project.archived");
    read_refused("projects:\n- name: a\n- name: a\n", "line 3: projects lists name \"a\" twice");
    read_refused("projects:\n- name: a\n  name: b\n", "appears twice");
    read_refused("users:\n- email: nobody\n  role: owner\n", "line 2: user.email");
    read_refused("users:\n- email: a@b\n  role: admin\n",
                 "line 3: user.role must be owner or reader");
    read_refused("users:\n- email: a@b\n", "needs a role");
    read_refused("projects: {}\n", "must be a list");
    read_refused("version: 2\n", "version 1");
    read_refused("users: [\n", "line");
    read_refused("", "empty");
    read_refused("- a\n", "mapping");
    char long_name[200];
    snprintf(long_name, sizeof(long_name), "projects:\n- name: %065d\n", 0);
    read_refused(long_name, "1 to 64 bytes");
}

/* The organization section: its budget and rate limits (the all-models "*" entry included)
 * survive write -> read -> write, are sorted, and come before users. */
static void
test_organization_round_trip(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *model = json_loads(
        "{\"organization\":{\"rate_limits\":{\"*\":{\"max_requests_per_1_minute\":600},"
        "\"gpt-4o-mini\":{\"max_tokens_per_1_day\":1000000,\"max_requests_per_1_minute\":60}},"
        "\"budget\":{\"monthly_limit_micros\":100000000,\"thresholds_pct\":[50,80,100],"
        "\"on_exceed\":\"lower_max_tokens\",\"notify_emails\":[\"ops@example.com\"],"
        "\"webhook_secret\":\"env:HOOK\",\"auto_increase\":{\"at_pct\":90,\"by_micros\":5,"
        "\"max_micros\":200000000}}},"
        "\"users\":[{\"email\":\"ada@example.com\",\"name\":\"Ada\",\"role\":\"owner\"}],"
        "\"projects\":[]}",
        0, &jerr);
    assert_non_null(model);
    char *text = write_model(model);
    const char *want = "version: 1\n"
                       "organization:\n"
                       "  budget:\n"
                       "    auto_increase:\n"
                       "      at_pct: 90\n"
                       "      by_micros: 5\n"
                       "      max_micros: 200000000\n"
                       "    monthly_limit_micros: 100000000\n"
                       "    notify_emails: [ops@example.com]\n"
                       "    on_exceed: lower_max_tokens\n"
                       "    thresholds_pct: [50, 80, 100]\n"
                       "    webhook_secret: env:HOOK\n"
                       "  rate_limits:\n"
                       "    '*':\n"
                       "      max_requests_per_1_minute: 600\n"
                       "    gpt-4o-mini:\n"
                       "      max_requests_per_1_minute: 60\n"
                       "      max_tokens_per_1_day: 1000000\n"
                       "users:\n";
    if (strncmp(text, want, strlen(want)) != 0) {
        fail_msg("written:\n%s", text);
    }
    json_t *back = read_ok(text);
    if (!json_equal(model, back)) {
        char *a = json_dumps(model, JSON_SORT_KEYS), *b = json_dumps(back, JSON_SORT_KEYS);
        fail_msg("differs:\n%s\n%s\n%s", a, b, text);
    }
    char *again = write_model(back);
    assert_string_equal(text, again);
    free(again);
    free(text);
    json_decref(back);

    /* an organization without settings is an empty section, read back as one (apply then
     * removes the budget and limits); a model without the section writes none */
    json_object_set_new(model, "organization", json_object());
    text = write_model(model);
    assert_non_null(strstr(text, "\norganization: {}\nusers:\n"));
    back = read_ok(text);
    assert_int_equal(json_object_size(json_object_get(back, "organization")), 0);
    assert_true(json_is_object(json_object_get(back, "organization")));
    free(text);
    json_decref(back);
    json_object_del(model, "organization");
    text = write_model(model);
    assert_null(strstr(text, "organization"));
    back = read_ok(text);
    assert_null(json_object_get(back, "organization"));
    free(text);
    json_decref(back);
    json_decref(model);
}

/* The organization section is checked as admission reads it, each refusal naming its line;
 * key settings have no place in the file. */
static void
test_organization_refusals_name_the_line(void **state)
{
    (void)state;
    read_refused("organization:\n  budget:\n    monthly_limit_micros: -5\n",
                 "line 3: organization.budget.monthly_limit_micros");
    read_refused("organization:\n  budget:\n    thresholds_pct: [100, 50]\n",
                 "line 3: organization.budget.thresholds_pct");
    read_refused("organization:\n  budget:\n    webhook_secret: hunter2\n",
                 "line 3: organization.budget.webhook_secret");
    read_refused("organization:\n  budget:\n    monthly_usd: 5\n", "monthly_usd");
    read_refused("organization:\n  budget: 5\n", "line 2: organization.budget");
    read_refused("organization:\n  rate_limits:\n    gpt-4o:\n      max_rpm: 5\n",
                 "line 4: unknown key \"max_rpm\" in organization.rate_limits.gpt-4o");
    read_refused("organization:\n  rate_limits:\n    gpt-4o:\n      max_requests_per_1_day: -1\n",
                 "line 4: organization.rate_limits.gpt-4o.max_requests_per_1_day");
    read_refused("organization:\n  rate_limits:\n    gpt-4o: {}\n", "line 3: ");
    read_refused("organization:\n  rate_limits: [a]\n", "line 2: organization.rate_limits");
    read_refused("organization:\n  key_settings: {}\n", "line 2: unknown key \"key_settings\"");
    read_refused("organization:\n  models: [a]\n", "line 2: unknown key \"models\"");
    read_refused("organization: []\n", "line 1: organization must be a mapping");
    read_refused("organization: {}\norganization: {}\n", "line 2: key \"organization\"");
    json_t *m = read_ok("organization:\n  budget:\n    monthly_limit_micros: 0\n");
    assert_int_equal(
        json_integer_value(json_object_get(
            json_object_get(json_object_get(m, "organization"), "budget"), "monthly_limit_micros")),
        0);
    assert_null(json_object_get(m, "users"));
    json_decref(m);
}

/* A billion-laughs file: aliases that repeat a node exponentially stop at the node cap. */
static void
test_alias_bomb_is_refused(void **state)
{
    (void)state;
    const char *text = "projects:\n- name: p\n  settings:\n    models: [\n"
                       "      &a [x, x, x, x, x, x, x, x, x, x],\n"
                       "      &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a],\n"
                       "      &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b],\n"
                       "      &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c],\n"
                       "      &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d],\n"
                       "      [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]]\n";
    read_refused(text, "repeats too much");
    char deep[400] = "projects:\n- name: p\n  settings:\n    models: ";
    for (int i = 0; i < 40; i++) {
        strcat(deep, "[");
    }
    for (int i = 0; i < 40; i++) {
        strcat(deep, "]");
    }
    strcat(deep, "\n");
    read_refused(deep, "nests too deeply");
}

/* cache, token_policy and aliases are settings a file may carry: written and read back
 * unchanged (forced_params keeps its JSON values' types), and refused, naming the line, when
 * their parsers refuse them. */
static void
test_cache_policy_aliases_round_trip(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *model = json_loads(
        "{\"users\":[],\"projects\":[{\"name\":\"p\",\"members\":[],\"service_accounts\":[],"
        "\"settings\":{"
        "\"cache\":{\"enabled\":true,\"backend\":\"fs\",\"ttl_s\":600},"
        "\"token_policy\":{\"default_max_tokens\":256,\"max_tokens\":1024,"
        "\"on_max_tokens\":\"refuse\",\"max_n\":2,\"default_stop\":[\"END\",\"true\"],"
        "\"max_prompt_bytes\":100000,\"forbidden_params\":[\"logit_bias\"],"
        "\"forced_params\":{\"temperature\":0.5,\"store\":false,\"user\":\"42\"}},"
        "\"aliases\":{\"fast\":{\"tier\":\"small\"},\"default\":{\"model\":\"gpt-4o-mini\"}}}}]}",
        0, &jerr);
    assert_non_null(model);
    char *text = write_model(model);
    json_t *back = read_ok(text);
    if (!json_equal(model, back)) {
        char *a = json_dumps(model, JSON_SORT_KEYS), *b = json_dumps(back, JSON_SORT_KEYS);
        fail_msg("differs:\n%s\n%s\n%s", a, b, text);
    }
    free(text);
    json_decref(back);
    json_decref(model);

    read_refused("projects:\n- name: p\n  settings:\n    cache: {enabled: true, ttl_s: -1}\n",
                 "line 4: settings.cache: ");
    read_refused("projects:\n- name: p\n  settings:\n    cache: {backend: tape}\n",
                 "settings.cache");
    read_refused("projects:\n- name: p\n  settings:\n    token_policy: {max_n: 0}\n",
                 "line 4: settings.token_policy.max_n");
    read_refused("projects:\n- name: p\n  settings:\n    models: [a]\n"
                 "    token_policy: {on_max_tokens: maybe}\n",
                 "line 5: settings.token_policy");
    read_refused("projects:\n- name: p\n  settings:\n    aliases: {fast: {color: red}}\n",
                 "line 4: settings.aliases");
    read_refused("projects:\n- name: p\n  settings:\n    aliases: [fast]\n", "settings.aliases");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_keeps_every_value),
        cmocka_unit_test(test_plain_scalars_are_typed),
        cmocka_unit_test(test_left_out_sections_stay_absent),
        cmocka_unit_test(test_refusals_name_the_line),
        cmocka_unit_test(test_organization_round_trip),
        cmocka_unit_test(test_organization_refusals_name_the_line),
        cmocka_unit_test(test_alias_bomb_is_refused),
        cmocka_unit_test(test_cache_policy_aliases_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
