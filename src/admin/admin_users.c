/* admin_users.c: users, invites and admin API keys (in progress). */
#include "admin/admin_int.h"

void
admin_invite_accept(struct admin_job *j)
{
    admin_error(j, 404, "No such invite.", NULL, NULL);
}

const struct admin_route tg_admin_routes_users[] = {
    {0, NULL, 0, NULL, NULL},
};
