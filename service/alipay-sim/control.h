/* control: the simulator's control interface under /_sim (JSON in and
 * out), for tests, the demo and benchmarks: fault rules, call counters, the
 * opened cards with their dynamic codes, templates, reset and health. The
 * routes are listed in service/alipay-sim/README.md. */
#ifndef ALIPAY_SIM_CONTROL_H
#define ALIPAY_SIM_CONTROL_H

#include <event2/http.h>

#include "sim.h"

/* Answers one request whose path is /_sim or starts with /_sim/. */
void control_handle(struct sim *s, struct evhttp_request *req, const char *path);

#endif
