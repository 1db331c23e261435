/* deploy/k8s: the Kubernetes manifests, read with libyaml
 * (tests/support/yamldoc.h), against what cardgate needs in a cluster:
 *
 * - every *.yaml parses; each kind it holds is one this test knows, at its
 *   current stable apiVersion, and each kind the deployment needs is there;
 * - the Deployment's probes (/readyz, /healthz) use ports of its container,
 *   and those ports are the ones the ConfigMap's CARDGATE_LISTEN and
 *   CARDGATE_OPS_LISTEN open; it stops gracefully (preStop sleep plus
 *   CARDGATE_DRAIN_TIMEOUT_MS within terminationGracePeriodSeconds), has
 *   requests and limits, and runs locked down (non-root with a numeric user,
 *   read-only root file system, no privilege escalation, no capabilities);
 * - the migration Job runs `cardgate migrate` from the Deployment's image,
 *   as locked down;
 * - the Service, PodDisruptionBudget, HorizontalPodAutoscaler and
 *   NetworkPolicy select the Deployment's pods (or target it); the
 *   NetworkPolicy lets out only PostgreSQL, HTTPS and DNS;
 * - every Secret and ConfigMap (and key in them) a pod refers to is in the
 *   folder, the secrets reach the pods from the Secret only, the key files
 *   are where the settings say, and every CARDGATE_* name is a real setting
 *   (quoted in lib/config.c).
 *
 * The flat list does not mark where one sequence item ends and the next
 * begins (a mapping item gives only its keys). Where pairing matters it is
 * read so that it is exact: keys that every item holds once pair up in
 * order (a port's name and number), a mapping that is a value has an entry
 * of its own before its keys (a secretKeyRef's name and key follow it), and
 * one container per pod is required. A NetworkPolicy's rules are read from
 * libyaml's tree instead: an empty rule (`- {}`, which allows everything)
 * leaves no key at all in the flat list. */
#include <check.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "support.h"
#include "yamldoc.h"

#define K8S_DIR CARDGATE_SOURCE_DIR "/deploy/k8s"
#define CONFIG_SRC CARDGATE_SOURCE_DIR "/lib/config.c"
#define DOCKERFILE CARDGATE_SOURCE_DIR "/deploy/Dockerfile"
/* A Deployment's or Job's pod, and its one container. */
#define POD "spec|template|spec"
#define CTR POD "|containers|-"
#define MAX_FILES 32
#define MAX_RES 64
#define MAX_VALS 64
#define ITEM 256 /* the longest sequence item kept */

/* Every kind the folder may hold, at its current stable apiVersion; name:
 * the one other manifests refer to, NULL when one of the kind is expected.
 * A kind not listed here fails: add it with its version. */
static const struct {
    const char *kind, *api_version, *name;
} kinds[] = {
    {"Deployment", "apps/v1", "cardgate"},
    {"Service", "v1", "cardgate"},
    {"Job", "batch/v1", "cardgate-migrate"},
    {"Secret", "v1", "cardgate-secrets"},
    {"ConfigMap", "v1", "cardgate-config"},
    {"PodDisruptionBudget", "policy/v1", NULL},
    {"HorizontalPodAutoscaler", "autoscaling/v2", NULL},
    {"NetworkPolicy", "networking.k8s.io/v1", NULL},
};

/* One manifest: a document of one of the files. */
struct res {
    const struct ts_ydoc *y;
    int doc;
    const char *file; /* its name in deploy/k8s, for messages */
    const char *kind, *name;
};

static struct ts_ydoc files[MAX_FILES];
static char file_names[MAX_FILES][256];
static size_t n_files;
static struct res all[MAX_RES];
static size_t n_res;

/* ================================================ reading the manifests */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Reads one file; a file libyaml cannot parse fails the test. */
static void load_file(const char *name)
{
    char path[512], err[512] = "";
    ck_assert_uint_lt(n_files, MAX_FILES);
    snprintf(path, sizeof(path), "%s/%s", K8S_DIR, name);
    struct ts_ydoc *y = &files[n_files];
    snprintf(file_names[n_files++], sizeof(file_names[0]), "%s", name);
    ck_assert_msg(ts_ydoc_load(y, path, err, sizeof(err)) == 0, "%s", err);
    for (int d = 0; d < y->docs; d++) {
        ck_assert_uint_lt(n_res, MAX_RES);
        struct res *r = &all[n_res++];
        *r = (struct res){y, d, file_names[n_files - 1], ts_ydoc_get(y, d, "kind"),
                          ts_ydoc_get(y, d, "metadata|name")};
        ck_assert_msg(r->kind && r->name, "%s: document %d has no kind or metadata.name", name, d);
    }
}

/* Every *.yaml (and *.yml: kubectl reads those too) in deploy/k8s. */
static void setup(void)
{
    DIR *dir = opendir(K8S_DIR);
    ck_assert_msg(dir != NULL, "cannot open %s", K8S_DIR);
    for (struct dirent *de; (de = readdir(dir));)
        if (ends_with(de->d_name, ".yaml") || ends_with(de->d_name, ".yml"))
            load_file(de->d_name);
    closedir(dir);
    ck_assert_msg(n_files > 0, "no manifests in %s", K8S_DIR);
}

static void teardown(void)
{
    for (size_t i = 0; i < n_files; i++)
        ts_ydoc_free(&files[i]);
    n_files = n_res = 0;
}

/* r's entries one after another: *i from 0; NULL after the last. */
static const struct ts_yent *rnext(const struct res *r, size_t *i)
{
    for (; *i < r->y->n; (*i)++)
        if (r->y->e[*i].doc == r->doc)
            return &r->y->e[(*i)++];
    return NULL;
}

/* The value at a path (printf-style) in r, or NULL. */
static const char *rget(const struct res *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static const char *rget(const struct res *r, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    return ts_ydoc_get(r->y, r->doc, path);
}

/* Every value at path in r, in document order (a key under a sequence of
 * mappings has one per item that holds it); returns how many. */
static size_t rall(const struct res *r, const char *path, const char *out[], size_t max)
{
    size_t n = 0;
    const struct ts_yent *e;
    for (size_t i = 0; (e = rnext(r, &i));)
        if (strcmp(e->path, path) == 0) {
            ck_assert_msg(n < max, "%s: more than %zu %s", r->file, max, path);
            out[n++] = e->value;
        }
    return n;
}

/* The items of yamldoc's "[a, 'b, c']" (a flow sequence of scalars). */
static size_t flow_items(const char *flow, char out[][ITEM], size_t max)
{
    size_t n = 0;
    for (const char *p = flow; n < max && ts_ydoc_flow_next(&p, out[n], ITEM);)
        n++;
    return n;
}

/* The items of the sequence of scalars at path, in either style. */
static size_t rseq(const struct res *r, const char *path, char out[][ITEM], size_t max)
{
    const char *v = rget(r, "%s", path), *items[MAX_VALS];
    if (v && *v == '[')
        return flow_items(v, out, max);
    char sub[512];
    snprintf(sub, sizeof(sub), "%s|-", path);
    size_t n = rall(r, sub, items, MAX_VALS);
    for (size_t i = 0; i < n && i < max; i++)
        snprintf(out[i], ITEM, "%s", items[i]);
    return n < max ? n : max;
}

static int seq_has(char items[][ITEM], size_t n, const char *want)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(items[i], want) == 0)
            return 1;
    return 0;
}

/* The one manifest of kind (named name, unless NULL). */
static const struct res *the(const char *kind, const char *name)
{
    const struct res *found = NULL;
    size_t n = 0;
    for (size_t i = 0; i < n_res; i++)
        if (strcmp(all[i].kind, kind) == 0 && (!name || strcmp(all[i].name, name) == 0))
            found = &all[i], n++;
    ck_assert_msg(n == 1, "deploy/k8s holds %zu %s%s%s, not one", n, kind, name ? " named " : "",
                  name ? name : "");
    return found;
}

static const struct res *deployment(void)
{
    return the("Deployment", "cardgate");
}

static const struct res *job(void)
{
    return the("Job", "cardgate-migrate");
}

static const struct res *configmap(void)
{
    return the("ConfigMap", "cardgate-config");
}

/* s (what, in r) as a whole decimal number; asserts that it is one. */
static long num(const struct res *r, const char *s, const char *what)
{
    char *end;
    ck_assert_msg(s != NULL, "%s: %s is not set", r->file, what);
    long v = strtol(s, &end, 10);
    ck_assert_msg(*s && !*end, "%s: %s is \"%s\", not a number", r->file, what, s);
    return v;
}

/* ========================================================= pods' parts */

/* Asserts that w's pod has one container: two containers' keys would mix
 * in the flat list (both are "containers|-|..."). */
static void one_container(const struct res *w)
{
    const char *names[4];
    ck_assert_msg(rall(w, CTR "|name", names, 4) == 1, "%s: the pod must have one container",
                  w->file);
}

/* A container's ports. Every port must be named (the probes and the
 * Service use the names), which also pairs them: each item holds one name
 * and one containerPort, so the i-th of each belong together. */
struct ports {
    const char *name[MAX_VALS], *number[MAX_VALS];
    size_t n;
};

static void container_ports(const struct res *w, struct ports *p)
{
    p->n = rall(w, CTR "|ports|-|containerPort", p->number, MAX_VALS);
    size_t names = rall(w, CTR "|ports|-|name", p->name, MAX_VALS);
    ck_assert_msg(names == p->n, "%s: %zu ports but %zu names: name every port", w->file, p->n,
                  names);
}

/* 1 when port (a number or a name) is one of the container's. */
static int port_ok(const struct ports *p, const char *port)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(port, p->name[i]) == 0 || strcmp(port, p->number[i]) == 0)
            return 1;
    return 0;
}

/* A securityContext field as the container gets it: its own, else the
 * pod's. */
static const char *sec(const struct res *w, const char *field)
{
    const char *v = rget(w, CTR "|securityContext|%s", field);
    return v ? v : rget(w, POD "|securityContext|%s", field);
}

static void assert_is(const struct res *r, const char *what, const char *got, const char *want)
{
    ck_assert_msg(got && strcmp(got, want) == 0, "%s: %s is %s, not %s", r->file, what,
                  got ? got : "not set", want);
}

/* Asserts that every label of a selector (the keys under prefix in r, at
 * least one) is on w's pods with the same value. matchExpressions, which
 * this does not read, must not narrow a matchLabels. */
static void assert_selects(const struct res *r, const char *prefix, const struct res *w)
{
    size_t pl = strlen(prefix), n = 0;
    if (ends_with(prefix, "|matchLabels"))
        ck_assert_msg(!rget(r, "%.*s|matchExpressions", (int)(pl - 12), prefix),
                      "%s: a selector with matchExpressions", r->file);
    const struct ts_yent *e;
    for (size_t i = 0; (e = rnext(r, &i));) {
        if (strncmp(e->path, prefix, pl) != 0 || e->path[pl] != '|' ||
            strchr(e->path + pl + 1, '|'))
            continue;
        const char *label = e->path + pl + 1;
        const char *pod = rget(w, "spec|template|metadata|labels|%s", label);
        ck_assert_msg(pod && strcmp(pod, e->value) == 0,
                      "%s: %s wants %s=%s, the pods of %s have %s", r->file, prefix, label,
                      e->value, w->file, pod ? pod : "no such label");
        n++;
    }
    ck_assert_msg(n > 0, "%s: %s selects no label", r->file, prefix);
}

/* Where w's container gets env variable var: "value" (written in the
 * manifest), "secret:NAME/KEY", "valueFrom" (another source); NULL when it
 * sets none. Each env item holds one name and one value or valueFrom, so the
 * i-th name goes with the i-th of those; a valueFrom's keys follow it. */
static const char *env_source(const struct res *w, const char *var, char *out, size_t n)
{
    const char *names[MAX_VALS], *secret = NULL, *key = NULL, *how = NULL;
    size_t nn = rall(w, CTR "|env|-|name", names, MAX_VALS), want = nn, src = 0;
    for (size_t i = 0; i < nn; i++)
        if (strcmp(names[i], var) == 0)
            want = i;
    const struct ts_yent *e;
    for (size_t i = 0; (e = rnext(w, &i));) {
        if (strcmp(e->path, CTR "|env|-|value") == 0 ||
            strcmp(e->path, CTR "|env|-|valueFrom") == 0)
            if (src++ == want)
                how = strrchr(e->path, '|') + 1;
        if (src == want + 1 && strcmp(e->path, CTR "|env|-|valueFrom|secretKeyRef|name") == 0)
            secret = e->value;
        if (src == want + 1 && strcmp(e->path, CTR "|env|-|valueFrom|secretKeyRef|key") == 0)
            key = e->value;
    }
    ck_assert_msg(src == nn, "%s: an env entry without value or valueFrom", w->file);
    if (secret && key)
        snprintf(out, n, "secret:%s/%s", secret, key);
    else
        snprintf(out, n, "%s", how ? how : "");
    return want < nn ? out : NULL;
}

/* ================================================ the kinds and versions */

START_TEST(test_kinds_and_versions)
{
    for (size_t i = 0; i < n_res; i++) {
        const struct res *r = &all[i];
        size_t k = 0;
        while (k < sizeof(kinds) / sizeof(kinds[0]) && strcmp(kinds[k].kind, r->kind) != 0)
            k++;
        ck_assert_msg(k < sizeof(kinds) / sizeof(kinds[0]),
                      "%s: kind %s is not one this test knows", r->file, r->kind);
        assert_is(r, "apiVersion", rget(r, "apiVersion"), kinds[k].api_version);
        /* No namespace: `kubectl apply -n NS` puts everything where wanted. */
        ck_assert_msg(!rget(r, "metadata|namespace"), "%s: metadata.namespace is set", r->file);
    }
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
        the(kinds[k].kind, kinds[k].name);
}
END_TEST

/* Each file starts with a comment saying what it is and what to change. */
START_TEST(test_files_start_with_a_comment)
{
    for (size_t i = 0; i < n_files; i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%.255s", K8S_DIR, file_names[i]);
        char *text = ts_read_file(path, NULL);
        ck_assert_ptr_nonnull(text);
        int comment = text[0] == '#';
        free(text);
        ck_assert_msg(comment, "%s does not start with a comment", file_names[i]);
    }
}
END_TEST

/* ============================================================ the probes */

/* The port of an address:port setting in the ConfigMap, or NULL. */
static const char *listen_port(const char *setting)
{
    const char *v = rget(configmap(), "data|%s", setting);
    const char *colon = v ? strrchr(v, ':') : NULL;
    return colon ? colon + 1 : NULL;
}

/* Each container port is one cardgate listens on, and each listener's
 * port is a container port (the ops one serves /metrics and the probes). */
static void assert_ports_listened(const struct res *d, const struct ports *p)
{
    const char *listen[] = {listen_port("CARDGATE_LISTEN"), listen_port("CARDGATE_OPS_LISTEN")};
    for (size_t i = 0; i < 2; i++)
        ck_assert_msg(listen[i] && port_ok(p, listen[i]),
                      "%s: CARDGATE_%sLISTEN's port (%s) is not a container port", d->file,
                      i ? "OPS_" : "", listen[i] ? listen[i] : "not set in the ConfigMap");
    for (size_t i = 0; i < p->n; i++)
        ck_assert_msg(strcmp(p->number[i], listen[0]) == 0 || strcmp(p->number[i], listen[1]) == 0,
                      "%s: nothing listens on container port %s", d->file, p->number[i]);
}

static void assert_probe(const struct res *d, const struct ports *p, const char *probe,
                         const char *path)
{
    char what[128];
    snprintf(what, sizeof(what), "%s.httpGet.path", probe);
    assert_is(d, what, rget(d, CTR "|%s|httpGet|path", probe), path);
    const char *port = rget(d, CTR "|%s|httpGet|port", probe);
    ck_assert_msg(port && port_ok(p, port), "%s: %s's port %s is not a container port", d->file,
                  probe, port ? port : "(not set)");
}

START_TEST(test_probes_and_ports)
{
    const struct res *d = deployment();
    struct ports p;
    one_container(d);
    container_ports(d, &p);
    ck_assert_msg(p.n > 0, "%s: the container has no ports", d->file);
    assert_ports_listened(d, &p);
    assert_probe(d, &p, "readinessProbe", "/readyz");
    assert_probe(d, &p, "livenessProbe", "/healthz");
    /* Prometheus, told by annotation, scrapes the ops listener. */
    const char *scrape = rget(d, "spec|template|metadata|annotations|prometheus.io/port");
    ck_assert_msg(!scrape || strcmp(scrape, listen_port("CARDGATE_OPS_LISTEN")) == 0,
                  "%s: prometheus.io/port %s is not CARDGATE_OPS_LISTEN's", d->file, scrape);
}
END_TEST

/* ====================================================== stopping gently */

/* The preStop hook's sleep in seconds: lifecycle.preStop.sleep, or an exec
 * command that runs `sleep N`. */
static long prestop_sleep(const struct res *d)
{
    const char *s = rget(d, CTR "|lifecycle|preStop|sleep|seconds");
    if (s)
        return num(d, s, "lifecycle.preStop.sleep.seconds");
    char argv[16][ITEM];
    size_t n = rseq(d, CTR "|lifecycle|preStop|exec|command", argv, 16);
    for (size_t i = 0; i < n; i++) {
        const char *at = strstr(argv[i], "sleep");
        if (!at)
            continue;
        at = at[5] || i + 1 == n ? at + 5 : argv[i + 1]; /* "sleep 5", or "sleep", "5" */
        char *end;
        long secs = strtol(at, &end, 10);
        ck_assert_msg(end > at && secs > 0, "%s: preStop sleeps \"%s\"", d->file, argv[i]);
        return secs;
    }
    ck_abort_msg("%s: no preStop hook that sleeps: SIGTERM would come while the pod still gets "
                 "new connections",
                 d->file);
    return 0;
}

/* The kubelet kills the pod after terminationGracePeriodSeconds, counted
 * from the preStop hook: the sleep and cardgate's drain must fit. */
START_TEST(test_graceful_stop)
{
    const struct res *d = deployment();
    char buf[256];
    long sleep_s = prestop_sleep(d);
    long grace =
        num(d, rget(d, POD "|terminationGracePeriodSeconds"), "terminationGracePeriodSeconds");
    long drain_ms = num(configmap(), rget(configmap(), "data|CARDGATE_DRAIN_TIMEOUT_MS"),
                        "CARDGATE_DRAIN_TIMEOUT_MS");
    ck_assert_msg(!env_source(d, "CARDGATE_DRAIN_TIMEOUT_MS", buf, sizeof(buf)),
                  "%s: env overrides the ConfigMap's CARDGATE_DRAIN_TIMEOUT_MS", d->file);
    ck_assert_msg(grace > (drain_ms + 999) / 1000 + sleep_s,
                  "%s: terminationGracePeriodSeconds %ld is not above the preStop sleep (%ld s) "
                  "plus CARDGATE_DRAIN_TIMEOUT_MS (%ld ms)",
                  d->file, grace, sleep_s, drain_ms);
}
END_TEST

/* ============================================ resources and locking down */

static void assert_resources(const struct res *w)
{
    static const char *const need[] = {"requests|cpu", "requests|memory", "limits|cpu",
                                       "limits|memory"};
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
        const char *v = rget(w, CTR "|resources|%s", need[i]);
        ck_assert_msg(v && *v, "%s: resources %s is not set", w->file, need[i]);
    }
}

START_TEST(test_resources)
{
    assert_resources(deployment());
    assert_resources(job());
}
END_TEST

static void assert_locked_down(const struct res *w)
{
    char drop[8][ITEM];
    one_container(w);
    assert_is(w, "runAsNonRoot", sec(w, "runAsNonRoot"), "true");
    /* The image's USER is a name: the kubelet can only check a number. */
    ck_assert_msg(num(w, sec(w, "runAsUser"), "runAsUser") > 0, "%s: runAsUser is 0", w->file);
    assert_is(w, "readOnlyRootFilesystem", rget(w, CTR "|securityContext|readOnlyRootFilesystem"),
              "true");
    assert_is(w, "allowPrivilegeEscalation",
              rget(w, CTR "|securityContext|allowPrivilegeEscalation"), "false");
    size_t n = rseq(w, CTR "|securityContext|capabilities|drop", drop, 8);
    ck_assert_msg(seq_has(drop, n, "ALL"), "%s: capabilities.drop has no ALL", w->file);
    assert_is(w, "seccompProfile.type", sec(w, "seccompProfile|type"), "RuntimeDefault");
    /* cardgate never calls the Kubernetes API: no token in its pods. */
    assert_is(w, "automountServiceAccountToken", rget(w, POD "|automountServiceAccountToken"),
              "false");
}

START_TEST(test_locked_down)
{
    assert_locked_down(deployment());
    assert_locked_down(job());
}
END_TEST

/* ====================================================== the migration */

/* The Job's command line: command (else the image's entrypoint) and args. */
static size_t job_argv(const struct res *j, char argv[][ITEM], size_t max)
{
    size_t n = rseq(j, CTR "|command", argv, max);
    if (n == 0) {
        char *docker = ts_read_file(DOCKERFILE, NULL);
        ck_assert_ptr_nonnull(docker);
        int ours = strstr(docker, "ENTRYPOINT [\"/usr/local/bin/cardgate\"]") != NULL;
        free(docker);
        ck_assert_msg(ours, "the Job sets no command, and the image's entrypoint is not cardgate");
        snprintf(argv[n++], ITEM, "/usr/local/bin/cardgate");
    }
    return n + rseq(j, CTR "|args", argv + n, max - n);
}

START_TEST(test_migration_job)
{
    const struct res *d = deployment(), *j = job();
    char argv[16][ITEM], how[256];
    one_container(j);
    const char *image = rget(j, CTR "|image");
    ck_assert_msg(image, "%s: no image", j->file);
    assert_is(d, "the image (the Job's)", rget(d, CTR "|image"), image);
    size_t n = job_argv(j, argv, 16);
    const char *base = strrchr(argv[0], '/');
    ck_assert_msg(strcmp(base ? base + 1 : argv[0], "cardgate") == 0, "%s runs %s", j->file,
                  argv[0]);
    ck_assert_msg(n == 2 && strcmp(argv[1], "migrate") == 0, "%s: does not run `cardgate migrate`",
                  j->file);
    const char *restart = rget(j, POD "|restartPolicy");
    ck_assert_msg(restart && (!strcmp(restart, "Never") || !strcmp(restart, "OnFailure")),
                  "%s: restartPolicy is %s", j->file, restart ? restart : "not set");
    ck_assert_int_ge(num(j, rget(j, "spec|backoffLimit"), "backoffLimit"), 1);
    ck_assert_int_ge(num(j, rget(j, "spec|ttlSecondsAfterFinished"), "ttlSecondsAfterFinished"), 1);
    const char *db = env_source(j, "CARDGATE_DATABASE_URL", how, sizeof(how));
    ck_assert_msg(db && strncmp(db, "secret:", 7) == 0,
                  "%s: CARDGATE_DATABASE_URL does not come from a secretKeyRef", j->file);
}
END_TEST

/* ============================================ Service, PDB, autoscaling */

START_TEST(test_service)
{
    const struct res *d = deployment(), *s = the("Service", "cardgate");
    const char *targets[MAX_VALS], *type = rget(s, "spec|type");
    struct ports p;
    container_ports(d, &p);
    assert_selects(d, "spec|selector|matchLabels", d);
    assert_selects(s, "spec|selector", d);
    ck_assert_msg(!type || strcmp(type, "ClusterIP") == 0, "%s: type %s", s->file, type);
    size_t n = rall(s, "spec|ports|-|targetPort", targets, MAX_VALS);
    ck_assert_msg(n > 0, "%s: no targetPort", s->file);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(port_ok(&p, targets[i]), "%s: targetPort %s is not a container port", s->file,
                      targets[i]);
}
END_TEST

/* The HPA owns the Deployment's replica count, at least two pods. */
static long assert_hpa(const struct res *h, const struct res *d)
{
    const char *metrics[MAX_VALS];
    assert_is(h, "scaleTargetRef.apiVersion", rget(h, "spec|scaleTargetRef|apiVersion"),
              rget(d, "apiVersion"));
    assert_is(h, "scaleTargetRef.kind", rget(h, "spec|scaleTargetRef|kind"), "Deployment");
    assert_is(h, "scaleTargetRef.name", rget(h, "spec|scaleTargetRef|name"), d->name);
    long min = num(h, rget(h, "spec|minReplicas"), "minReplicas");
    ck_assert_msg(min >= 2, "%s: minReplicas %ld: one pod is no redundancy", h->file, min);
    ck_assert_int_ge(num(h, rget(h, "spec|maxReplicas"), "maxReplicas"), min);
    size_t n = rall(h, "spec|metrics|-|resource|name", metrics, MAX_VALS), cpu = 0;
    for (size_t i = 0; i < n; i++)
        cpu |= strcmp(metrics[i], "cpu") == 0;
    ck_assert_msg(cpu, "%s: does not scale on cpu", h->file);
    /* With replicas set, every `kubectl apply` first scales back to it. */
    ck_assert_msg(!rget(d, "spec|replicas"), "%s: sets replicas, which the HPA owns", d->file);
    return min;
}

/* The PDB must leave a drain something to evict: with minAvailable as high
 * as the fewest pods, or maxUnavailable 0, it waits forever. */
static void assert_pdb(const struct res *b, const struct res *d, long min_pods)
{
    const char *min = rget(b, "spec|minAvailable"), *max = rget(b, "spec|maxUnavailable");
    assert_selects(b, "spec|selector|matchLabels", d);
    ck_assert_msg(!min != !max, "%s: set one of minAvailable and maxUnavailable", b->file);
    if (min && !strchr(min, '%'))
        ck_assert_msg(num(b, min, "minAvailable") < min_pods,
                      "%s: minAvailable %s is not below the HPA's minReplicas", b->file, min);
    if (max)
        ck_assert_msg(atol(max) > 0, "%s: maxUnavailable %s", b->file, max);
}

START_TEST(test_disruption_and_scaling)
{
    const struct res *d = deployment();
    long min_pods = assert_hpa(the("HorizontalPodAutoscaler", NULL), d);
    assert_pdb(the("PodDisruptionBudget", NULL), d, min_pods);
}
END_TEST

/* ==================================================== the NetworkPolicy */

/* Document r->doc of r's file as libyaml's own tree; returns its root. */
static yaml_node_t *tree_load(yaml_document_t *y, const struct res *r)
{
    char path[512];
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/%s", K8S_DIR, r->file);
    char *text = ts_read_file(path, &len);
    ck_assert_ptr_nonnull(text);
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    for (int d = 0;; d++) {
        ck_assert_msg(yaml_parser_load(&p, y), "%s: %s", r->file, p.problem);
        if (d == r->doc)
            break;
        yaml_document_delete(y);
    }
    yaml_parser_delete(&p);
    free(text);
    return yaml_document_get_root_node(y);
}

/* The value of key in mapping m, or NULL. */
static yaml_node_t *tree_get(yaml_document_t *y, yaml_node_t *m, const char *key)
{
    if (!m || m->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(y, p->key);
        if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0)
            return yaml_document_get_node(y, p->value);
    }
    return NULL;
}

static const char *tree_str(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* What the rules of a policy may open, and what they opened. */
struct rule_check {
    const char *which; /* "ingress" or "egress" */
    int (*allowed)(const struct rule_check *c, const char *port);
    const struct ports *ports; /* ingress: the container's */
    int seen_5432, seen_443, seen_udp_53;
};

/* One rule: it must list ports (a rule without, or a port item without a
 * port, opens every port), each one the check allows, and no ranges. */
static void check_rule(yaml_document_t *y, yaml_node_t *rule, const struct res *np,
                       struct rule_check *c)
{
    yaml_node_t *ports = tree_get(y, rule, "ports");
    ck_assert_msg(ports && ports->type == YAML_SEQUENCE_NODE &&
                      ports->data.sequence.items.top > ports->data.sequence.items.start,
                  "%s: an %s rule lists no ports: it opens them all", np->file, c->which);
    for (yaml_node_item_t *i = ports->data.sequence.items.start; i < ports->data.sequence.items.top;
         i++) {
        yaml_node_t *item = yaml_document_get_node(y, *i);
        const char *port = tree_str(tree_get(y, item, "port"));
        const char *proto = tree_str(tree_get(y, item, "protocol"));
        ck_assert_msg(port && c->allowed(c, port), "%s: %s to port %s", np->file, c->which,
                      port ? port : "(any)");
        ck_assert_msg(!tree_get(y, item, "endPort"), "%s: an %s port range", np->file, c->which);
        c->seen_5432 |= strcmp(port, "5432") == 0;
        c->seen_443 |= strcmp(port, "443") == 0;
        c->seen_udp_53 |= strcmp(port, "53") == 0 && proto && strcmp(proto, "UDP") == 0;
    }
}

static void check_rules(const struct res *np, struct rule_check *c)
{
    yaml_document_t y;
    yaml_node_t *rules = tree_get(&y, tree_get(&y, tree_load(&y, np), "spec"), c->which);
    if (rules) {
        ck_assert_msg(rules->type == YAML_SEQUENCE_NODE, "%s: %s", np->file, c->which);
        for (yaml_node_item_t *i = rules->data.sequence.items.start;
             i < rules->data.sequence.items.top; i++)
            check_rule(&y, yaml_document_get_node(&y, *i), np, c);
    }
    yaml_document_delete(&y);
}

/* Out: PostgreSQL, the gateway's HTTPS and DNS; nothing else. */
static int egress_allowed(const struct rule_check *c, const char *port)
{
    return !strcmp(port, "5432") || !strcmp(port, "443") || !strcmp(port, "53");
}

/* In: only ports cardgate listens on. */
static int ingress_allowed(const struct rule_check *c, const char *port)
{
    return port_ok(c->ports, port);
}

/* Policies add up: every one in the folder is held to the same ports. */
START_TEST(test_network_policy)
{
    const struct res *d = deployment();
    struct ports p;
    struct rule_check in = {"ingress", ingress_allowed, &p, 0, 0, 0};
    struct rule_check out = {"egress", egress_allowed, NULL, 0, 0, 0};
    char types[4][ITEM];
    container_ports(d, &p);
    for (size_t i = 0; i < n_res; i++) {
        const struct res *np = &all[i];
        if (strcmp(np->kind, "NetworkPolicy") != 0)
            continue;
        assert_selects(np, "spec|podSelector|matchLabels", d);
        size_t n = rseq(np, "spec|policyTypes", types, 4);
        ck_assert_msg(seq_has(types, n, "Ingress") && seq_has(types, n, "Egress"),
                      "%s: policyTypes must list Ingress and Egress", np->file);
        check_rules(np, &in);
        check_rules(np, &out);
    }
    ck_assert_msg(out.seen_5432 && out.seen_443 && out.seen_udp_53,
                  "the NetworkPolicy must let out PostgreSQL (5432), HTTPS (443) and DNS (UDP 53)");
}
END_TEST

/* ================================================ Secret and ConfigMap */

/* 1 when the Secret or ConfigMap named name holds key. */
static int has_key(const char *kind, const char *name, const char *key)
{
    const struct res *r = the(kind, name);
    return rget(r, "data|%s", key) || rget(r, "stringData|%s", key) ||
           rget(r, "binaryData|%s", key);
}

/* A reference to a Secret or ConfigMap: a secretKeyRef, a configMapRef, a
 * secret volume... Its keys follow its own entry in the flat list. */
struct ref {
    const char *kind, *at, *name;
    const char *keys[16];
    size_t n_keys;
};

/* The kind a mapping named leaf refers to, or NULL. */
static const char *ref_kind(const char *leaf)
{
    static const char *const secret[] = {"secretKeyRef", "secretRef", "secret"};
    static const char *const config[] = {"configMapKeyRef", "configMapRef", "configMap"};
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(leaf, secret[i]) == 0)
            return "Secret";
        if (strcmp(leaf, config[i]) == 0)
            return "ConfigMap";
    }
    return NULL;
}

/* Adds e to the reference it belongs to (or starts one); returns n. */
static size_t add_ref(struct ref *refs, size_t n, const struct ts_yent *e)
{
    const char *leaf = strrchr(e->path, '|');
    leaf = leaf ? leaf + 1 : e->path;
    if (ref_kind(leaf) && !*e->value) {
        ck_assert_uint_lt(n, MAX_VALS);
        refs[n] = (struct ref){ref_kind(leaf), e->path, NULL, {NULL}, 0};
        return n + 1;
    }
    size_t al = n ? strlen(refs[n - 1].at) : 0;
    if (!n || strncmp(e->path, refs[n - 1].at, al) != 0 || e->path[al] != '|')
        return n;
    const char *rest = e->path + al + 1;
    struct ref *r = &refs[n - 1];
    if (!strcmp(rest, "name") || !strcmp(rest, "secretName"))
        r->name = e->value;
    else if ((!strcmp(rest, "key") || !strcmp(rest, "items|-|key")) && r->n_keys < 16)
        r->keys[r->n_keys++] = e->value;
    return n;
}

/* Every Secret and ConfigMap w refers to is in the folder, with every key
 * it reads. */
static void assert_refs_exist(const struct res *w)
{
    struct ref refs[MAX_VALS];
    size_t n = 0;
    const struct ts_yent *e;
    for (size_t i = 0; (e = rnext(w, &i));)
        n = add_ref(refs, n, e);
    ck_assert_msg(n > 0, "%s: refers to no Secret or ConfigMap", w->file);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(refs[i].name, "%s: %s names no %s", w->file, refs[i].at, refs[i].kind);
        the(refs[i].kind, refs[i].name);
        for (size_t k = 0; k < refs[i].n_keys; k++)
            ck_assert_msg(has_key(refs[i].kind, refs[i].name, refs[i].keys[k]),
                          "%s: %s %s has no key %s", w->file, refs[i].kind, refs[i].name,
                          refs[i].keys[k]);
    }
}

START_TEST(test_references_exist)
{
    assert_refs_exist(deployment());
    assert_refs_exist(job());
}
END_TEST

/* The secrets come from the Secret, never from the manifests' text or the
 * ConfigMap (which anyone who may read the namespace's ConfigMaps reads). */
START_TEST(test_secrets_from_the_secret)
{
    static const struct {
        const char *name;
        int required;
    } secret[] = {{"CARDGATE_DATABASE_URL", 1},
                  {"CARDGATE_API_KEYS", 1},
                  {"CARDGATE_REQUEST_HASH_SECRET", 0}};
    const struct res *d = deployment(), *cm = configmap();
    char how[256];
    for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++) {
        ck_assert_msg(!rget(cm, "data|%s", secret[i].name), "%s: holds %s", cm->file,
                      secret[i].name);
        const char *src = env_source(d, secret[i].name, how, sizeof(how));
        if (!src && !secret[i].required)
            continue;
        ck_assert_msg(src && strncmp(src, "secret:", 7) == 0,
                      "%s: %s does not come from a secretKeyRef", d->file, secret[i].name);
    }
}
END_TEST

/* The volumes of w's pod: each item holds one name and one source (a
 * secret, an emptyDir...), paired in order; a secret's keys follow it. */
struct volumes {
    const char *name[MAX_VALS], *source[MAX_VALS], *secret[MAX_VALS];
    const char *files[MAX_VALS][16]; /* a secret's items' paths */
    size_t n_files[MAX_VALS], n_names, n;
};

static void pod_volumes(const struct res *w, struct volumes *v)
{
    static const char prefix[] = POD "|volumes|-|";
    const struct ts_yent *e;
    memset(v, 0, sizeof(*v));
    for (size_t i = 0; (e = rnext(w, &i));) {
        if (strncmp(e->path, prefix, sizeof(prefix) - 1) != 0)
            continue;
        const char *rest = e->path + sizeof(prefix) - 1;
        if (strcmp(rest, "name") == 0 && v->n_names < MAX_VALS)
            v->name[v->n_names++] = e->value;
        else if (!strchr(rest, '|') && v->n < MAX_VALS)
            v->source[v->n++] = rest;
        else if (v->n && strcmp(rest, "secret|secretName") == 0)
            v->secret[v->n - 1] = e->value;
        else if (v->n && strcmp(rest, "secret|items|-|path") == 0 && v->n_files[v->n - 1] < 16)
            v->files[v->n - 1][v->n_files[v->n - 1]++] = e->value;
    }
    ck_assert_msg(v->n_names == v->n, "%s: %zu volume names for %zu volumes", w->file, v->n_names,
                  v->n);
}

/* The volume w mounts at dir, read-only; asserts there is one. Every mount
 * says readOnly, so that name, mountPath and readOnly pair in order. */
static const char *readonly_mount(const struct res *w, const char *dir)
{
    const char *names[MAX_VALS], *paths[MAX_VALS], *ro[MAX_VALS];
    size_t n = rall(w, CTR "|volumeMounts|-|name", names, MAX_VALS);
    ck_assert_msg(rall(w, CTR "|volumeMounts|-|mountPath", paths, MAX_VALS) == n &&
                      rall(w, CTR "|volumeMounts|-|readOnly", ro, MAX_VALS) == n,
                  "%s: every volumeMount needs name, mountPath and readOnly", w->file);
    for (size_t i = 0; i < n; i++)
        if (strcmp(paths[i], dir) == 0) {
            assert_is(w, "the key files' mount readOnly", ro[i], "true");
            return names[i];
        }
    ck_abort_msg("%s: nothing is mounted at %s", w->file, dir);
    return NULL;
}

/* Asserts that file (a key file setting's value) is a file of a secret
 * volume mounted read-only in w. */
static void assert_key_file(const struct res *w, const struct volumes *v, const char *file)
{
    const char *slash = strrchr(file, '/');
    char dir[256];
    ck_assert_msg(slash && slash > file, "%s: key file %s", w->file, file);
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash - file), file);
    const char *vol = readonly_mount(w, dir);
    for (size_t i = 0; i < v->n; i++) {
        if (strcmp(v->name[i], vol) != 0)
            continue;
        ck_assert_msg(v->secret[i], "%s: volume %s is not a Secret", w->file, vol);
        int found = v->n_files[i] == 0 && has_key("Secret", v->secret[i], slash + 1);
        for (size_t k = 0; k < v->n_files[i]; k++)
            found |= strcmp(v->files[i][k], slash + 1) == 0;
        ck_assert_msg(found, "%s: volume %s has no file %s", w->file, vol, slash + 1);
        return;
    }
    ck_abort_msg("%s: no volume %s", w->file, vol);
}

START_TEST(test_key_files_mounted)
{
    static const char *const keys[] = {"CARDGATE_ALIPAY_PRIVATE_KEY_FILE",
                                       "CARDGATE_ALIPAY_PUBLIC_KEY_FILE"};
    const struct res *d = deployment();
    struct volumes *v = malloc(sizeof(*v));
    ck_assert_ptr_nonnull(v);
    pod_volumes(d, v);
    for (size_t i = 0; i < 2; i++) {
        const char *file = rget(configmap(), "data|%s", keys[i]);
        ck_assert_msg(file, "the ConfigMap does not set %s", keys[i]);
        assert_key_file(d, v, file);
    }
    free(v);
}
END_TEST

/* =========================================================== settings */

/* Asserts that name, when it looks like a setting, is one config.c reads
 * (its settings table quotes each); returns 1 when it was one. */
static int check_setting(const char *src, const struct res *r, const char *name, size_t len)
{
    char quoted[128];
    if (len < 10 || strncmp(name, "CARDGATE_", 9) != 0 || len + 3 > sizeof(quoted))
        return 0;
    if (strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") < len)
        return 0;
    snprintf(quoted, sizeof(quoted), "\"%.*s\"", (int)len, name);
    ck_assert_msg(strstr(src, quoted) != NULL, "%s: %.*s is not a cardgate setting", r->file,
                  (int)len, name);
    return 1;
}

/* Every CARDGATE_* key (the ConfigMap's) and value (env names) in r. */
static size_t check_settings(const char *src, const struct res *r)
{
    size_t n = 0;
    const struct ts_yent *e;
    for (size_t i = 0; (e = rnext(r, &i));) {
        for (const char *p = e->path; *p; p += *p == '|') {
            size_t len = strcspn(p, "|");
            n += (size_t)check_setting(src, r, p, len);
            p += len;
        }
        n += (size_t)check_setting(src, r, e->value, strlen(e->value));
    }
    return n;
}

START_TEST(test_settings_are_real)
{
    char *src = ts_read_file(CONFIG_SRC, NULL);
    ck_assert_msg(src != NULL, "cannot read %s", CONFIG_SRC);
    size_t n = 0;
    for (size_t i = 0; i < n_res; i++)
        n += check_settings(src, &all[i]);
    free(src);
    ck_assert_msg(n > 0, "no CARDGATE_* setting in deploy/k8s");
}
END_TEST

static Suite *k8s_suite(void)
{
    Suite *s = suite_create("k8s");
    TCase *tc = tcase_create("manifests");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_kinds_and_versions);
    tcase_add_test(tc, test_files_start_with_a_comment);
    tcase_add_test(tc, test_probes_and_ports);
    tcase_add_test(tc, test_graceful_stop);
    tcase_add_test(tc, test_resources);
    tcase_add_test(tc, test_locked_down);
    tcase_add_test(tc, test_migration_job);
    tcase_add_test(tc, test_service);
    tcase_add_test(tc, test_disruption_and_scaling);
    tcase_add_test(tc, test_network_policy);
    tcase_add_test(tc, test_references_exist);
    tcase_add_test(tc, test_secrets_from_the_secret);
    tcase_add_test(tc, test_key_files_mounted);
    tcase_add_test(tc, test_settings_are_real);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ts_run_suite(k8s_suite());
}
