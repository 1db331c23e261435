/* cards: the /v1/cards resource's handlers (open, query, lookup, list,
 * update, delete). */
#ifndef CARDGATE_CARDS_H
#define CARDGATE_CARDS_H

#include "routes.h"

/* Adds the resource's routes to t (main, at start). */
void cards_register(struct route_table *t);

#endif
