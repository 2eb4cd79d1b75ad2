/*
 * admin_dashboard.c: what the dashboard asks of the admin API beyond the other resources.
 */
#include "admin/admin_int.h"

const struct admin_route tg_admin_routes_dashboard[] = {
    {0, NULL, 0, NULL, NULL},
};
