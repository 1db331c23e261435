/* signup: GET /callbacks/card-activation, a member's own sign-up (the
 * page Alipay sends the member's browser to after its form). */
#ifndef CARDGATE_SIGNUP_H
#define CARDGATE_SIGNUP_H

#include "routes.h"

/* Adds the callback's route to t (main, at start). */
void signup_register(struct route_table *t);

#endif
