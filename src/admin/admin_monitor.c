/*
 * admin_monitor.c: alert rules, alerts, model health, quality signals and notifications.
 */
#include "admin/admin_int.h"

const struct admin_route tg_admin_routes_monitor[] = {
    {0, NULL, 0, NULL, NULL},
};
