/* config: defaults, INI file, environment precedence, bad values, API keys.
 * Each test runs in its own forked process (CK_FORK), so setenv is local. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "support.h"

/* SHA-256 of the literal keys, computed outside the code under test:
 *   printf %s pos-secret-key-1 | sha256sum
 *   printf %s crm-secret-key-2 | sha256sum */
#define POS_KEY "pos-secret-key-1"
#define POS_HASH "9174b9ed18406531bdde768d7d20b772ddb2d3d7742b90dac7cec55fd03b7bf1"
#define CRM_KEY "crm-secret-key-2"
#define CRM_HASH "c698089131819a5ea702eec6a10a1fffec0d370b6b16e4d46b7ced321252609a"
#define CRM_HASH_UPPER "C698089131819A5EA702EEC6A10A1FFFEC0D370B6B16E4D46B7CED321252609A"

/* The variables from the spec and the team's extras (config.h). */
static const char *const all_vars[] = {
    "CARDGATE_LISTEN",
    "CARDGATE_WORKERS",
    "CARDGATE_DATABASE_URL",
    "CARDGATE_API_KEYS",
    "CARDGATE_ALIPAY_GATEWAY",
    "CARDGATE_ALIPAY_APP_ID",
    "CARDGATE_ALIPAY_PRIVATE_KEY_FILE",
    "CARDGATE_ALIPAY_PUBLIC_KEY_FILE",
    "CARDGATE_ALIPAY_SIGN_TYPE",
    "CARDGATE_ALIPAY_TIMEOUT_MS",
    "CARDGATE_ALIPAY_CA_FILE",
    "CARDGATE_LOG_LEVEL",
    "CARDGATE_LOG_FORMAT",
    "CARDGATE_DRAIN_TIMEOUT_MS",
    "CARDGATE_DB_POOL_SIZE",
    "CARDGATE_LOCK_MARGIN_MS",
    "CARDGATE_IDLE_TIMEOUT_S",
    "CARDGATE_PUBLIC_URL",
    "CARDGATE_ALIPAY_ALLOW_HTTP",
    "CARDGATE_OPS_LISTEN",
    "CARDGATE_ALIPAY_KEY_GRACE_S",
    "CARDGATE_REQUEST_DEADLINE_MS",
    "CARDGATE_ALIPAY_APP_CERT_FILE",
    "CARDGATE_ALIPAY_CERT_FILE",
    "CARDGATE_ALIPAY_ROOT_CERT_FILE",
    "CARDGATE_ALIPAY_ENCRYPT_KEY",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof all_vars / sizeof all_vars[0]; i++)
        unsetenv(all_vars[i]);
}

/* Writes text to a new temporary file; returns its path (caller frees and
 * unlinks). */
static char *write_ini(const char *text)
{
    char *path = strdup("/tmp/cardgate-config-XXXXXX");
    ck_assert_ptr_nonnull(path);
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    size_t len = strlen(text);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static void drop_ini(char *path)
{
    unlink(path);
    free(path);
}

/* The whole file, NUL-terminated; the caller frees. */
static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    do {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    fclose(f);
    buf[len] = '\0';
    return buf;
}

static int expected_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

START_TEST(test_defaults)
{
    struct config c;
    char err[512] = "";
    clear_env();
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), 0);
    ck_assert_str_eq(c.listen_host, "0.0.0.0");
    ck_assert_int_eq(c.listen_port, 8080);
    ck_assert_int_eq(c.workers, expected_workers());
    ck_assert_ptr_null(c.database_url);
    ck_assert_uint_eq(c.n_api_keys, 0);
    ck_assert_str_eq(c.alipay_gateway, "https://openapi.alipay.com/gateway.do");
    ck_assert_ptr_null(c.alipay_app_id);
    ck_assert_ptr_null(c.alipay_private_key_file);
    ck_assert_ptr_null(c.alipay_public_key_file);
    ck_assert_ptr_null(c.alipay_ca_file);
    ck_assert_ptr_null(c.public_url); /* members' sign-up is off */
    ck_assert_int_eq(c.ops_port, 0);  /* no ops listener */
    ck_assert_int_eq(c.alipay_key_grace_s, 86400);
    ck_assert_int_eq(c.request_deadline_ms, 30000);
    ck_assert_int_eq(c.alipay_sign_type, ALIPAY_SIGN_RSA2);
    ck_assert_int_eq(c.alipay_timeout_ms, 15000);
    ck_assert_int_eq(c.log_level, LOG_INFO);
    ck_assert_int_eq(c.log_json, 1);
    ck_assert_int_eq(c.drain_timeout_ms, 20000);
    /* 4 per worker, 32 in all. */
    ck_assert_int_eq(c.db_pool_size,
                     expected_workers() * 4 > 32
                         ? (32 / expected_workers() > 0 ? 32 / expected_workers() : 1)
                         : 4);
    ck_assert_int_eq(c.lock_margin_ms, 5000);
    ck_assert_int_eq(c.sweep_interval_ms, 5000);
    ck_assert_int_eq(c.idle_timeout_s, 30);
    /* No key configured: nobody gets in. */
    ck_assert_ptr_null(config_api_key_lookup(&c, POS_KEY, strlen(POS_KEY)));
    config_free(&c);
    config_free(&c); /* harmless twice */
}
END_TEST

static const char full_ini[] = "; every key\n"
                               "[server]\n"
                               "listen = 127.0.0.1:9090\n"
                               "workers = 3\n"
                               "drain_timeout_ms = 2500\n"
                               "idle_timeout_s = 7\n"
                               "lock_margin_ms = 1234\n"
                               "sweep_interval_ms = 250\n"
                               "\n"
                               "[database]\n"
                               "url = postgresql://cg@localhost/cardgate\n"
                               "pool_size = 2\n"
                               "[auth]\n"
                               "api_keys = pos:" POS_HASH "\n"
                               "[alipay]\n"
                               "gateway = http://127.0.0.1:20001/gateway.do\n"
                               "allow_http = 1\n"
                               "app_id = 2021000000000001\n"
                               "private_key_file = /keys/app.pem\n"
                               "public_key_file = /keys/alipay.pem\n"
                               "sign_type = RSA\n"
                               "timeout_ms = 900\n"
                               "ca_file = /etc/ca.pem\n"
                               "# hash comments too\n"
                               "[log]\n"
                               "level = debug\n"
                               "format = text\n";

START_TEST(test_file_values)
{
    struct config c;
    char err[512] = "";
    clear_env();
    char *path = write_ini(full_ini);
    ck_assert_msg(config_load(&c, path, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(c.listen_host, "127.0.0.1");
    ck_assert_int_eq(c.listen_port, 9090);
    ck_assert_int_eq(c.workers, 3);
    ck_assert_int_eq(c.drain_timeout_ms, 2500);
    ck_assert_int_eq(c.idle_timeout_s, 7);
    ck_assert_int_eq(c.lock_margin_ms, 1234);
    ck_assert_int_eq(c.sweep_interval_ms, 250);
    ck_assert_str_eq(c.database_url, "postgresql://cg@localhost/cardgate");
    ck_assert_int_eq(c.db_pool_size, 2);
    ck_assert_uint_eq(c.n_api_keys, 1);
    ck_assert_str_eq(c.api_keys[0].name, "pos");
    ck_assert_str_eq(c.alipay_gateway, "http://127.0.0.1:20001/gateway.do");
    ck_assert_str_eq(c.alipay_app_id, "2021000000000001");
    ck_assert_str_eq(c.alipay_private_key_file, "/keys/app.pem");
    ck_assert_str_eq(c.alipay_public_key_file, "/keys/alipay.pem");
    ck_assert_int_eq(c.alipay_sign_type, ALIPAY_SIGN_RSA);
    ck_assert_int_eq(c.alipay_timeout_ms, 900);
    ck_assert_str_eq(c.alipay_ca_file, "/etc/ca.pem");
    ck_assert_int_eq(c.alipay_allow_http, 1);
    ck_assert_int_eq(c.log_level, LOG_DEBUG);
    ck_assert_int_eq(c.log_json, 0);
    ck_assert_int_eq(config_check_serve(&c, err, sizeof err), 0);
    config_free(&c);
    drop_ini(path);
}
END_TEST

START_TEST(test_env_wins_over_file)
{
    struct config c;
    char err[512] = "";
    clear_env();
    char *path = write_ini(full_ini);
    setenv("CARDGATE_WORKERS", "5", 1);
    setenv("CARDGATE_LISTEN", "[::1]:8443", 1);
    setenv("CARDGATE_ALIPAY_APP_ID", "2021999999999999", 1);
    setenv("CARDGATE_API_KEYS", "crm:" CRM_HASH, 1);
    setenv("CARDGATE_LOG_FORMAT", "json", 1);
    setenv("CARDGATE_DB_POOL_SIZE", "9", 1);
    setenv("CARDGATE_LOCK_MARGIN_MS", "0", 1);
    setenv("CARDGATE_ALIPAY_SIGN_TYPE", "", 1); /* empty: not set, the file's RSA stays */
    ck_assert_msg(config_load(&c, path, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.workers, 5);
    ck_assert_str_eq(c.listen_host, "::1");
    ck_assert_int_eq(c.listen_port, 8443);
    ck_assert_str_eq(c.alipay_app_id, "2021999999999999");
    /* The variable replaces the file's list, it does not add to it. */
    ck_assert_uint_eq(c.n_api_keys, 1);
    ck_assert_str_eq(c.api_keys[0].name, "crm");
    ck_assert_ptr_null(config_api_key_lookup(&c, POS_KEY, strlen(POS_KEY)));
    ck_assert_int_eq(c.log_json, 1);
    ck_assert_int_eq(c.db_pool_size, 9);
    ck_assert_int_eq(c.lock_margin_ms, 0);
    ck_assert_int_eq(c.alipay_sign_type, ALIPAY_SIGN_RSA);
    /* Untouched by the environment: the file's values. */
    ck_assert_int_eq(c.alipay_timeout_ms, 900);
    ck_assert_str_eq(c.alipay_private_key_file, "/keys/app.pem");
    config_free(&c);
    drop_ini(path);
}
END_TEST

START_TEST(test_env_only)
{
    struct config c;
    char err[512] = "";
    clear_env();
    setenv("CARDGATE_LISTEN", ":8081", 1);
    setenv("CARDGATE_DATABASE_URL", "host=/tmp dbname=cg", 1);
    setenv("CARDGATE_ALIPAY_GATEWAY", "HTTPS://sim.example/gateway.do", 1);
    setenv("CARDGATE_LOG_LEVEL", "warning", 1);
    setenv("CARDGATE_ALIPAY_TIMEOUT_MS", "600000", 1);
    setenv("CARDGATE_WORKERS", "256", 1);
    /* CARDGATE_DB_POOL_SIZE not set: one each at 256 workers, not 1024. */
    setenv("CARDGATE_PUBLIC_URL", "https://cards.example.com/pos//", 1);
    setenv("CARDGATE_OPS_LISTEN", "127.0.0.1:9090", 1);
    ck_assert_msg(config_load(&c, NULL, err, sizeof err) == 0, "%s", err);
    /* Paths are appended to it: no trailing '/'. */
    ck_assert_str_eq(c.public_url, "https://cards.example.com/pos");
    ck_assert_str_eq(c.ops_host, "127.0.0.1");
    ck_assert_int_eq(c.ops_port, 9090);
    ck_assert_int_eq(c.listen_port, 8081); /* untouched by the ops address */
    ck_assert_str_eq(c.listen_host, "0.0.0.0");
    ck_assert_int_eq(c.listen_port, 8081);
    ck_assert_str_eq(c.database_url, "host=/tmp dbname=cg");
    ck_assert_str_eq(c.alipay_gateway, "HTTPS://sim.example/gateway.do");
    ck_assert_int_eq(c.log_level, LOG_WARN);
    ck_assert_int_eq(c.alipay_timeout_ms, 600000);
    ck_assert_int_eq(c.workers, 256);
    ck_assert_int_eq(c.db_pool_size, 1);
    config_free(&c);
}
END_TEST

/* Every bad value fails with a message that starts with its variable. */
static const struct {
    const char *var, *value;
} bad_values[] = {
    {"CARDGATE_WORKERS", "x"},
    {"CARDGATE_WORKERS", "0"},
    {"CARDGATE_WORKERS", "257"},
    {"CARDGATE_WORKERS", "4 "},
    {"CARDGATE_WORKERS", "99999999999999999999999"},
    {"CARDGATE_LISTEN", "8080"},
    {"CARDGATE_LISTEN", "0.0.0.0:0"},
    {"CARDGATE_LISTEN", "0.0.0.0:65536"},
    {"CARDGATE_LISTEN", "0.0.0.0:http"},
    {"CARDGATE_LISTEN", "::1:8080"},
    {"CARDGATE_LISTEN", "[::1]8080"},
    {"CARDGATE_LISTEN", "[not-v6]:8080"},
    {"CARDGATE_LISTEN", "bad host:8080"},
    {"CARDGATE_DATABASE_URL", "nosuchoption=1"},
    {"CARDGATE_DATABASE_URL", "postgresql://[::1/cardgate"},
    {"CARDGATE_API_KEYS", "pos"},
    {"CARDGATE_ALIPAY_GATEWAY", "openapi.alipay.com/gateway.do"},
    {"CARDGATE_ALIPAY_GATEWAY", "ftp://openapi.alipay.com/"},
    {"CARDGATE_ALIPAY_GATEWAY", "https://"},
    {"CARDGATE_ALIPAY_APP_ID", "2021 0001"},
    {"CARDGATE_ALIPAY_SIGN_TYPE", "SHA256"},
    {"CARDGATE_ALIPAY_SIGN_TYPE", "rsa3"},
    {"CARDGATE_ALIPAY_TIMEOUT_MS", "-1"},
    {"CARDGATE_ALIPAY_TIMEOUT_MS", "15s"},
    {"CARDGATE_ALIPAY_TIMEOUT_MS", "600001"},
    {"CARDGATE_LOG_LEVEL", "verbose"},
    {"CARDGATE_LOG_FORMAT", "xml"},
    {"CARDGATE_DRAIN_TIMEOUT_MS", "-5"},
    {"CARDGATE_DB_POOL_SIZE", "0"},
    {"CARDGATE_DB_POOL_SIZE", "many"},
    {"CARDGATE_LOCK_MARGIN_MS", "soon"},
    {"CARDGATE_IDLE_TIMEOUT_S", "0"},
    {"CARDGATE_IDLE_TIMEOUT_S", "3601"},
    {"CARDGATE_PUBLIC_URL", "cards.example.com"},
    {"CARDGATE_ALIPAY_ALLOW_HTTP", "yes"},
    {"CARDGATE_OPS_LISTEN", "9090"},
    {"CARDGATE_ALIPAY_KEY_GRACE_S", "-1"},
    {"CARDGATE_REQUEST_DEADLINE_MS", "50"},
    {"CARDGATE_ALIPAY_ALLOW_HTTP", "2"},
    {"CARDGATE_PUBLIC_URL", "https://"},
    {"CARDGATE_PUBLIC_URL", "https://cards.example.com/?x=1"},
    {"CARDGATE_PUBLIC_URL", "https://cards.example.com/#top"},
};

START_TEST(test_bad_value_names_variable)
{
    struct config c;
    char err[512] = "";
    char prefix[64];
    clear_env();
    setenv(bad_values[_i].var, bad_values[_i].value, 1);
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), -1);
    snprintf(prefix, sizeof prefix, "%s: ", bad_values[_i].var);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "%s=%s gave \"%s\"",
                  bad_values[_i].var, bad_values[_i].value, err);
    ck_assert_ptr_null(strchr(err, '\n'));
    /* On failure nothing is left to free. */
    ck_assert_ptr_null(c.alipay_gateway);
    config_free(&c);
}
END_TEST

START_TEST(test_bad_value_message)
{
    struct config c;
    char err[512] = "";
    clear_env();
    setenv("CARDGATE_WORKERS", "x", 1);
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), -1);
    /* The wording the brief gives as the example. */
    ck_assert_str_eq(err, "CARDGATE_WORKERS: must be an integer from 1 to 256 (got \"x\")");
}
END_TEST

START_TEST(test_database_url_not_echoed)
{
    struct config c;
    char err[512] = "";
    clear_env();
    setenv("CARDGATE_DATABASE_URL", "host=db password=hunter2 oops", 1);
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "CARDGATE_DATABASE_URL") != NULL, "%s", err);
    ck_assert_msg(strstr(err, "hunter2") == NULL, "%s", err);
}
END_TEST

START_TEST(test_bad_value_in_file)
{
    struct config c;
    char err[512] = "", want[512];
    clear_env();
    char *path = write_ini("[server]\nlisten = 0.0.0.0:8080\nworkers = many\n");
    ck_assert_int_eq(config_load(&c, path, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s:3: CARDGATE_WORKERS: ", path);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    drop_ini(path);
}
END_TEST

/* Unknown keys and sections, syntax errors: file:line in the message. */
static const struct {
    const char *text;
    int line;
    const char *mention;
} bad_files[] = {
    {"[server]\nworkers = 2\nworker = 3\n", 3, "worker"},
    {"[server]\nurl = x\n", 2, "url"},
    {"[servers]\nworkers = 2\n", 1, "servers"},
    {"[server]\nworkers = 2\n[bogus]\n", 3, "bogus"},
    {"workers = 2\n[server]\n", 1, "workers"},
    {"[server]\n\n; fine\nworkers\n", 4, "syntax"},
    {"[server]\nworkers = 2\n[log\nlevel = info\n", 3, "syntax"},
    /* Only api_keys may go on over an indented line. */
    {"[database]\nurl = host=a\n  dbname=b\n", 3, "CARDGATE_DATABASE_URL"},
};

START_TEST(test_bad_file_names_line)
{
    struct config c;
    char err[512] = "", want[512];
    clear_env();
    char *path = write_ini(bad_files[_i].text);
    ck_assert_int_eq(config_load(&c, path, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s:%d: ", path, bad_files[_i].line);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "want %s..., got %s", want, err);
    ck_assert_msg(strstr(err, bad_files[_i].mention) != NULL, "%s", err);
    drop_ini(path);
}
END_TEST

START_TEST(test_long_line)
{
    struct config c;
    char err[512] = "", want[512];
    char text[1024];
    clear_env();
    /* A path of 300 characters: longer than inih's line buffer. It must be
     * refused, never cut short. */
    int n = snprintf(text, sizeof text, "[alipay]\napp_id = 1\nca_file = /");
    for (int i = 0; i < 300; i++)
        text[n++] = 'a';
    snprintf(text + n, sizeof text - (size_t)n, "\n[log]\nlevel = info\n");
    char *path = write_ini(text);
    ck_assert_int_eq(config_load(&c, path, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s:3: ", path);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    drop_ini(path);
}
END_TEST

START_TEST(test_missing_file)
{
    struct config c;
    char err[512] = "";
    clear_env();
    ck_assert_int_eq(config_load(&c, "/nonexistent/cardgate.ini", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "/nonexistent/cardgate.ini") != NULL, "%s", err);
}
END_TEST

START_TEST(test_file_bom_crlf_comments)
{
    struct config c;
    char err[512] = "";
    clear_env();
    char *path =
        write_ini("\xef\xbb\xbf; cardgate\r\n[server]\r\n  listen = 127.0.0.1:7000 ; inline\r\n"
                  "workers=2\r\n\r\n# done\r\n");
    ck_assert_msg(config_load(&c, path, err, sizeof err) == 0, "%s", err);
    ck_assert_str_eq(c.listen_host, "127.0.0.1");
    ck_assert_int_eq(c.listen_port, 7000);
    ck_assert_int_eq(c.workers, 2);
    config_free(&c);
    drop_ini(path);
}
END_TEST

START_TEST(test_api_keys_lookup)
{
    struct config c;
    char err[512] = "";
    clear_env();
    /* Upper-case hex, blanks around entries, an empty entry. */
    setenv("CARDGATE_API_KEYS", "pos:" POS_HASH ", crm.v2:" CRM_HASH_UPPER ",", 1);
    ck_assert_msg(config_load(&c, NULL, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(c.n_api_keys, 2);
    ck_assert_str_eq(c.api_keys[0].name, "pos");
    ck_assert_str_eq(c.api_keys[1].name, "crm.v2");
    ck_assert_uint_eq(c.api_keys[0].sha256[0], 0x91);
    ck_assert_uint_eq(c.api_keys[0].sha256[31], 0xf1);
    ck_assert_uint_eq(c.api_keys[1].sha256[0], 0xc6);

    const char *who = config_api_key_lookup(&c, POS_KEY, strlen(POS_KEY));
    ck_assert_ptr_nonnull(who);
    ck_assert_str_eq(who, "pos");
    who = config_api_key_lookup(&c, CRM_KEY, strlen(CRM_KEY));
    ck_assert_ptr_nonnull(who);
    ck_assert_str_eq(who, "crm.v2");
    ck_assert_ptr_null(config_api_key_lookup(&c, "wrong", 5));
    /* The length counts: a prefix of a key is not the key. */
    ck_assert_ptr_null(config_api_key_lookup(&c, POS_KEY, strlen(POS_KEY) - 1));
    ck_assert_ptr_null(config_api_key_lookup(&c, "", 0));
    ck_assert_ptr_null(config_api_key_lookup(&c, NULL, 0));
    /* The hash itself is not a key. */
    ck_assert_ptr_null(config_api_key_lookup(&c, POS_HASH, strlen(POS_HASH)));
    config_free(&c);
}
END_TEST

START_TEST(test_api_keys_rotation_and_continuation)
{
    struct config c;
    char err[512] = "";
    clear_env();
    /* One caller with two keys while rotating; the list goes on over an
     * indented line in the file. */
    char *path = write_ini("[auth]\napi_keys = pos:" POS_HASH ",\n    pos:" CRM_HASH "\n");
    ck_assert_msg(config_load(&c, path, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(c.n_api_keys, 2);
    ck_assert_str_eq(config_api_key_lookup(&c, POS_KEY, strlen(POS_KEY)), "pos");
    ck_assert_str_eq(config_api_key_lookup(&c, CRM_KEY, strlen(CRM_KEY)), "pos");
    config_free(&c);
    drop_ini(path);
}
END_TEST

/* Malformed entries: the position is named, the hash never printed. */
static const struct {
    const char *value;
    const char *entry;  /* must appear */
    const char *secret; /* must not appear */
} bad_keys[] = {
    {"pos:9174b9ed", "entry 1", "9174b9ed"},
    {"pos:" POS_HASH ",my-raw-secret-key", "entry 2", "my-raw-secret-key"},
    {"pos:" POS_HASH ",crm:zz74b9ed18406531bdde768d7d20b772ddb2d3d7742b90dac7cec55fd03b7bf1",
     "entry 2", "74b9ed18406531bdde"},
    {"bad name:" POS_HASH, "entry 1", POS_HASH},
    {":" POS_HASH, "entry 1", POS_HASH},
    {"pos:" POS_HASH "00", "entry 1", POS_HASH},
    {"a123456789012345678901234567890123456789012345678901234567890123:" POS_HASH, "entry 1",
     POS_HASH},
};

START_TEST(test_api_keys_malformed)
{
    struct config c;
    char err[512] = "";
    clear_env();
    setenv("CARDGATE_API_KEYS", bad_keys[_i].value, 1);
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), -1);
    ck_assert_msg(strncmp(err, "CARDGATE_API_KEYS: ", 19) == 0, "%s", err);
    ck_assert_msg(strstr(err, bad_keys[_i].entry) != NULL, "%s", err);
    ck_assert_msg(strstr(err, bad_keys[_i].secret) == NULL, "%s", err);
}
END_TEST

START_TEST(test_check_serve)
{
    struct config c;
    char err[512] = "";
    clear_env();
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), 0);
    static const struct {
        const char *var, *value;
    } steps[] = {
        {"CARDGATE_DATABASE_URL", "host=/tmp dbname=cg"},
        {"CARDGATE_ALIPAY_APP_ID", "2021000000000001"},
        {"CARDGATE_ALIPAY_PRIVATE_KEY_FILE", "/keys/app.pem"},
        {"CARDGATE_ALIPAY_PUBLIC_KEY_FILE", "/keys/alipay.pem"},
    };
    /* Each missing setting is named in turn until all are there. */
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(config_check_serve(&c, err, sizeof err), -1);
        ck_assert_msg(strstr(err, steps[i].var) != NULL, "step %zu: %s", i, err);
        ck_assert_ptr_null(strchr(err, '\n'));
        for (size_t j = i + 1; j < 4; j++)
            ck_assert_msg(strstr(err, steps[j].var) == NULL, "step %zu: %s", i, err);
        config_free(&c);
        setenv(steps[i].var, steps[i].value, 1);
        ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), 0);
    }
    ck_assert_int_eq(config_check_serve(&c, err, sizeof err), 0);
    config_free(&c);
    /* A plain http:// gateway only when the operator says it is the
     * simulator. */
    setenv("CARDGATE_ALIPAY_GATEWAY", "http://127.0.0.1:8081/gateway.do", 1);
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), 0);
    ck_assert_int_eq(config_check_serve(&c, err, sizeof err), -1);
    ck_assert_msg(strncmp(err, "CARDGATE_ALIPAY_GATEWAY: ", 25) == 0 &&
                      strstr(err, "CARDGATE_ALIPAY_ALLOW_HTTP") != NULL,
                  "%s", err);
    config_free(&c);
    setenv("CARDGATE_ALIPAY_ALLOW_HTTP", "1", 1);
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), 0);
    ck_assert_int_eq(config_check_serve(&c, err, sizeof err), 0);
    config_free(&c);
}
END_TEST

/* Public-key mode or certificate mode, each whole, never both; the AES
 * key is checked as one and never quoted back. */
START_TEST(test_check_serve_modes)
{
    struct config c;
    char err[512] = "";
    clear_env();
    setenv("CARDGATE_DATABASE_URL", "host=/tmp dbname=cg", 1);
    setenv("CARDGATE_ALIPAY_APP_ID", "2021000000000001", 1);
    setenv("CARDGATE_ALIPAY_PRIVATE_KEY_FILE", "/keys/app.pem", 1);
    static const char *const certs[] = {"CARDGATE_ALIPAY_APP_CERT_FILE",
                                        "CARDGATE_ALIPAY_CERT_FILE",
                                        "CARDGATE_ALIPAY_ROOT_CERT_FILE"};
    /* one or two of the three: the first missing one is named */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), 0);
        ck_assert_int_eq(config_check_serve(&c, err, sizeof err), -1);
        ck_assert_msg(strstr(err, i == 0 ? "CARDGATE_ALIPAY_PUBLIC_KEY_FILE" : certs[i]), "%d: %s",
                      i, err);
        ck_assert_ptr_null(strchr(err, '\n'));
        config_free(&c);
        setenv(certs[i], "/certs/x.crt", 1);
    }
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), 0);
    ck_assert_int_eq(config_cert_mode(&c), 1);
    ck_assert_msg(config_check_serve(&c, err, sizeof err) == 0, "%s", err);
    config_free(&c);
    /* both modes at once */
    setenv("CARDGATE_ALIPAY_PUBLIC_KEY_FILE", "/keys/alipay.pem", 1);
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), 0);
    ck_assert_int_eq(config_check_serve(&c, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "CARDGATE_ALIPAY_PUBLIC_KEY_FILE and the certificate files") &&
                      strstr(err, "keep one"),
                  "%s", err);
    config_free(&c);
    for (int i = 0; i < 3; i++)
        unsetenv(certs[i]);
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), 0);
    ck_assert_int_eq(config_cert_mode(&c), 0);
    ck_assert_int_eq(config_check_serve(&c, err, sizeof err), 0);
    ck_assert_ptr_null(c.alipay_encrypt_key);
    config_free(&c);

    setenv("CARDGATE_ALIPAY_ENCRYPT_KEY", "EREREREREREREREREREREQ==", 1);
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), 0);
    ck_assert_str_eq(c.alipay_encrypt_key, "EREREREREREREREREREREQ==");
    config_free(&c);
    setenv("CARDGATE_ALIPAY_ENCRYPT_KEY", "secretButNotAnAESkey", 1);
    ck_assert_int_eq(config_load(&c, NULL, err, sizeof err), -1);
    ck_assert_msg(strncmp(err, "CARDGATE_ALIPAY_ENCRYPT_KEY: not an AES key", 43) == 0, "%s", err);
    ck_assert_ptr_null(strstr(err, "secretButNotAnAESkey"));
    unsetenv("CARDGATE_ALIPAY_ENCRYPT_KEY");
}
END_TEST

/* config/cardgate.ini loads as it is, and with every commented "; key =
 * value" line uncommented it still loads and gives the defaults: the
 * example names only real keys and their real defaults. */
START_TEST(test_example_ini)
{
    struct config c, d;
    char err[512] = "";
    const char *example = CARDGATE_SOURCE_DIR "/config/cardgate.ini";
    clear_env();
    ck_assert_msg(config_load(&c, example, err, sizeof err) == 0, "%s", err);
    config_free(&c);

    char *text = read_all(example);
    size_t cap = strlen(text) + 1, n = 0, keys = 0;
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *p = line;
        /* "; key = value" (one blank after the ;) is a commented setting;
         * ";   key = ..." lines are examples inside a comment. */
        if (p[0] == ';' && p[1] == ' ' && p[2] >= 'a' && p[2] <= 'z') {
            size_t w = strspn(p + 2, "abcdefghijklmnopqrstuvwxyz_");
            const char *q = p + 2 + w + strspn(p + 2 + w, " ");
            if (*q == '=') {
                p += 2;
                keys++;
            }
        }
        size_t len = strlen(p);
        memcpy(out + n, p, len);
        n += len;
        out[n++] = '\n';
    }
    out[n] = '\0';
    ck_assert_uint_eq(keys, 28); /* one per setting in config.h */
    char *path = write_ini(out);
    ck_assert_msg(config_load(&c, path, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(config_load(&d, NULL, err, sizeof err), 0);
    ck_assert_str_eq(c.listen_host, d.listen_host);
    ck_assert_int_eq(c.listen_port, d.listen_port);
    ck_assert_str_eq(c.alipay_gateway, d.alipay_gateway);
    ck_assert_int_eq(c.alipay_sign_type, d.alipay_sign_type);
    ck_assert_int_eq(c.alipay_timeout_ms, d.alipay_timeout_ms);
    ck_assert_int_eq(c.log_level, d.log_level);
    ck_assert_int_eq(c.log_json, d.log_json);
    ck_assert_int_eq(c.drain_timeout_ms, d.drain_timeout_ms);
    ck_assert_int_eq(c.lock_margin_ms, d.lock_margin_ms);
    ck_assert_int_eq(c.sweep_interval_ms, d.sweep_interval_ms);
    ck_assert_int_eq(c.idle_timeout_s, d.idle_timeout_s);
    ck_assert_int_eq(c.db_pool_size, d.db_pool_size);
    config_free(&c);
    config_free(&d);
    drop_ini(path);
    free(out);
    free(text);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_file_values);
    tcase_add_test(tc, test_env_wins_over_file);
    tcase_add_test(tc, test_env_only);
    tcase_add_loop_test(tc, test_bad_value_names_variable, 0,
                        (int)(sizeof bad_values / sizeof bad_values[0]));
    tcase_add_test(tc, test_bad_value_message);
    tcase_add_test(tc, test_database_url_not_echoed);
    tcase_add_test(tc, test_bad_value_in_file);
    tcase_add_loop_test(tc, test_bad_file_names_line, 0,
                        (int)(sizeof bad_files / sizeof bad_files[0]));
    tcase_add_test(tc, test_long_line);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_file_bom_crlf_comments);
    tcase_add_test(tc, test_api_keys_lookup);
    tcase_add_test(tc, test_api_keys_rotation_and_continuation);
    tcase_add_loop_test(tc, test_api_keys_malformed, 0,
                        (int)(sizeof bad_keys / sizeof bad_keys[0]));
    tcase_add_test(tc, test_check_serve);
    tcase_add_test(tc, test_check_serve_modes);
    tcase_add_test(tc, test_example_ini);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return ts_run_suite(config_suite());
}
