/* templates: the /v1/templates resource's handlers (create, query, modify,
 * the sign-up form, and the settings of members' own sign-up). */
#ifndef CARDGATE_TEMPLATES_H
#define CARDGATE_TEMPLATES_H

#include "routes.h"

/* Adds the resource's routes to t (main, at start). */
void templates_register(struct route_table *t);

#endif
