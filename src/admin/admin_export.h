/*
 * admin_export.h: the export and apply handlers of admin_export.c, whose route rows sit in
 * admin_history.c's table (tg_admin_routes_history) so the router joins them with no table of
 * their own. Both run on the thread pool like every admin handler (admin_int.h); apply runs
 * inside the router's transaction.
 */
#ifndef TG_ADMIN_ADMIN_EXPORT_H
#define TG_ADMIN_ADMIN_EXPORT_H

#include "admin/admin_int.h"

/* GET /v1/organization/export: the organization as YAML. */
void admin_export_run(struct admin_job *j);

/* POST /v1/organization/apply?dry_run=true|false: makes the store match a YAML file. */
void admin_apply_run(struct admin_job *j);

#endif
