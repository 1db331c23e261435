/* ops: /healthz, /readyz and /metrics. */
#ifndef CARDGATE_OPS_H
#define CARDGATE_OPS_H

#include "routes.h"

/* Adds the operations routes to t (main, at start). */
void ops_register(struct route_table *t);

#endif
