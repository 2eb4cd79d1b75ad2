/*
 * org_file.h: the organization file (tollgate export / apply) as YAML text, with no I/O and no
 * store: writing a model as the file, and reading a file into a model, every error naming its
 * line. admin_export.c loads the model from the store and applies one; tests and fuzzers can
 * drive these two alone.
 *
 * The model is JSON: {"organization": {budget, rate_limits}, "users": [{email, name, role}],
 * "projects": [{name, environment, archived, settings, members: [{email, role}],
 * service_accounts: [{name, role}]}]}. The file:
 *
 *   version: 1
 *   organization:                      # the organization's settings (policy/limits.h), sorted
 *     budget:
 *       monthly_limit_micros: 100000000
 *     rate_limits:                     # "*": every request of the organization
 *       '*':
 *         max_requests_per_1_minute: 600
 *   users:
 *   - email: ada@example.com
 *     name: Ada
 *     role: owner                      # owner | reader
 *   projects:
 *   - name: production
 *     environment: production
 *     archived: false
 *     settings:                        # the project's settings object, keys sorted
 *       models: [gpt-4o-mini]
 *     members:                         # project role owner | member
 *     - email: ada@example.com
 *       role: owner
 *     service_accounts:                # names and roles only: keys stay in the store
 *     - name: billing-job
 *       role: member
 *
 * Scalars: a plain scalar that reads as null, true/false, an integer or a number is that JSON
 * value (inside settings); a quoted one is a string. The writer quotes every string that would
 * read otherwise (and YAML 1.1's yes/no/on/off, for other tools), so write -> read gives back
 * the same model. Names are 1 to 64 bytes, e-mails 1 to 256 (lower-cased on reading).
 * organization and settings take budget and rate_limits only as policy/limits.h's parser
 * accepts them. Keys' settings are not in the file: keys have no names that hold across
 * installs, and the file carries no key material.
 */
#ifndef TG_ADMIN_ORG_FILE_H
#define TG_ADMIN_ORG_FILE_H

#include <jansson.h>
#include <stddef.h>

#include "core/buf.h"

#define TG_ORG_NAME_MAX_BYTES 64
#define TG_ORG_EMAIL_MAX_BYTES 256

/* Appends the file for model to out: "organization" when the model has it, then "users" and
 * "projects" in the order given, object members in the order given except inside organization
 * and settings (sorted), members whose names start with "_" left out (except inside those
 * two). Returns 0, or TG_EIO when libyaml refuses. */
int tg_org_file_write(const json_t *model, struct tg_buf *out);

/*
 * Reads a file (len bytes of text) into a new model, or returns NULL and writes "line N: why"
 * into err (err_cap bytes). Sections and fields the file leaves out are absent from the model
 * (apply leaves them as they are); every list item gets a "_line" member (its line). Unknown
 * keys, wrong types, duplicates, overlong names, aliases that repeat too much and nesting
 * deeper than 32 are refused.
 */
json_t *tg_org_file_read(const char *text, size_t len, char *err, size_t err_cap);

/* The first object in list whose string member key equals value, or NULL. */
json_t *tg_org_file_find(const json_t *list, const char *key, const char *value);

#endif
