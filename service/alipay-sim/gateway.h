/* gateway: the HTTP side of the simulated gateway endpoint (any path ending
 * in gateway.do). It decodes the parameters from the URL query and the form
 * body, counts the call (and, for card.update/.delete, keeps it "in flight"
 * for its card until the answer is sent, dropped or cut by shutdown),
 * applies the first matching fault rule (delaying the answer on a timer
 * when the rule says so) and sends what sim.c answers. */
#ifndef ALIPAY_SIM_GATEWAY_H
#define ALIPAY_SIM_GATEWAY_H

#include <event2/http.h>

#include "sim.h"

/* Handles one request to the gateway endpoint. Answers it now, or keeps it
 * in s->pending until its delay is over. */
void gateway_handle(struct sim *s, struct evhttp_request *req);

/* Answers every delayed request with 503 and frees them; call before
 * evhttp_free (which frees the connections the requests live on). */
void gateway_shutdown(struct sim *s);

#endif
