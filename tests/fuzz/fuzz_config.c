/* Fuzz target: the INI configuration file. Any bytes either load into
 * settings within their documented ranges or are refused with one line
 * that names the problem and never echoes a secret (the database URL's
 * password, the request hash secret, an API key's hash); nothing crashes
 * or leaks.
 *
 * config_load reads a path, so the input goes into a memfd read back
 * through /proc/self/fd: no temp file, nothing left behind. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"

extern char **environ;

/* The memfd every input is written to, and its path. Set once by fuzz_init,
 * then only read: a fuzz target's process-wide fixture. */
static int input_fd = -1;
static char input_path[64];

int fuzz_init(void)
{
    /* A CARDGATE_* variable would win over the file and hide it. */
    char name[256];
    for (int again = 1; again;) {
        again = 0;
        for (char **e = environ; *e; e++) {
            const char *eq = strchr(*e, '=');
            if (strncmp(*e, "CARDGATE_", 9) == 0 && eq && (size_t)(eq - *e) < sizeof name) {
                memcpy(name, *e, (size_t)(eq - *e));
                name[eq - *e] = '\0';
                unsetenv(name); /* changes environ: start over */
                again = 1;
                break;
            }
        }
    }
    input_fd = memfd_create("fuzz-config", MFD_CLOEXEC);
    if (input_fd < 0)
        return -1;
    snprintf(input_path, sizeof input_path, "/proc/self/fd/%d", input_fd);
    return 0;
}

/* 1 when needle occurs exactly once in hay. */
static int once(const char *hay, const char *needle)
{
    const char *first = strstr(hay, needle);
    return first && !strstr(first + 1, needle);
}

/* The seeds' secrets, each with the text that proves it is still in its
 * place as a value (a mutation may turn a secret's bytes into a key name,
 * which is rightly echoed). */
static void check_no_secret(const char *input, const char *err)
{
    static const struct {
        const char *marker, *in_place;
    } secrets[] = {
        {"SECRETPW", "\nurl = postgresql://cardgate:SECRETPW@"},
        {"SECRETHS", "\nrequest_hash_secret = SECRETHS"},
        {"5ec7e7", "pos:5ec7e72d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717"},
    };
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (once(input, secrets[i].marker) && strstr(input, secrets[i].in_place) &&
            strstr(err, secrets[i].marker))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ftruncate(input_fd, 0) != 0 || pwrite(input_fd, data, size, 0) != (ssize_t)size)
        abort(); /* the harness, not the target */
    char *input = malloc(size + 1);
    if (!input)
        return 0;
    memcpy(input, data, size);
    input[size] = '\0';
    struct config c;
    char err[512] = "";
    if (config_load(&c, input_path, err, sizeof err) != 0) {
        if (!err[0] || strchr(err, '\n'))
            abort(); /* one line, always */
        if (c.database_url || c.api_keys || c.alipay_gateway || c.request_hash_secret)
            abort(); /* a refused file leaves nothing behind */
        check_no_secret(input, err);
    } else {
        if (c.workers < 1 || c.workers > 256 || c.db_pool_size < 1 || c.db_pool_size > 100 ||
            c.listen_port < 1 || c.listen_port > 65535 || c.ops_port < 0 || c.ops_port > 65535 ||
            c.request_deadline_ms < 100 || c.request_deadline_ms > 600000 ||
            c.alipay_timeout_ms < 1 || c.drain_timeout_ms < 0 || c.idle_timeout_s < 1)
            abort();
        if (c.public_url && c.public_url[0] && c.public_url[strlen(c.public_url) - 1] == '/')
            abort(); /* documented: no trailing '/' */
        err[0] = '\0';
        if (config_check_serve(&c, err, sizeof err) != 0 && !err[0])
            abort();
    }
    config_free(&c);
    free(input);
    return 0;
}
