/* seal: what is sealed for one ledger row opens only with its key and for
 * that row, and shows nothing of the text. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "seal.h"
#include "support.h"

static const unsigned char key[SEAL_KEY_LEN] = "0123456789abcdef0123456789abcdef";
static const char *plain = "{\"member\":{\"name\":\"Zhang San\",\"phone\":\"13800138000\"}}";
#define ROW "2021000000000001", "S-1" /* app_id, out_serial_no */

static struct seal_box *box;

static void box_up(void)
{
    box = seal_box_new(key);
    ck_assert_ptr_nonnull(box);
}

static void box_down(void)
{
    seal_box_free(box);
}

/* The text is nowhere in the sealed bytes. */
static int contains(const unsigned char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0)
            return 1;
    return 0;
}

START_TEST(round_trip)
{
    size_t n = 0, m = 0;
    unsigned char *s = seal_box_encrypt(box, ROW, plain, strlen(plain), &n);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(n, strlen(plain) + 29); /* version, 12-byte nonce, 16-byte tag */
    ck_assert_int_eq(s[0], 1);
    ck_assert(!contains(s, n, "13800138000"));
    ck_assert(!contains(s, n, "Zhang"));
    char *back = seal_decrypt(key, ROW, s, n, &m);
    ck_assert_ptr_nonnull(back);
    ck_assert_uint_eq(m, strlen(plain));
    ck_assert_str_eq(back, plain);
    free(back);
    free(s);
}
END_TEST

START_TEST(fresh_nonce_each_time)
{
    size_t n1, n2;
    unsigned char *a = seal_box_encrypt(box, ROW, plain, strlen(plain), &n1);
    unsigned char *b = seal_box_encrypt(box, ROW, plain, strlen(plain), &n2);
    ck_assert(a && b && n1 == n2);
    ck_assert(memcmp(a + 1, b + 1, 12) != 0);
    ck_assert(memcmp(a, b, n1) != 0);
    free(a);
    free(b);
}
END_TEST

START_TEST(refuses_what_is_not_its_own)
{
    size_t n, m;
    unsigned char *s = seal_box_encrypt(box, ROW, plain, strlen(plain), &n);
    ck_assert_ptr_nonnull(s);
    /* another row */
    ck_assert_ptr_null(seal_decrypt(key, "2021000000000001", "S-2", s, n, &m));
    ck_assert_ptr_null(seal_decrypt(key, "2021000000000002", "S-1", s, n, &m));
    /* the split between app and serial counts too: the same bytes run
     * together ("...0001" + "S-1" as "...0001S" + "-1") are another row */
    ck_assert_ptr_null(seal_decrypt(key, "2021000000000001S", "-1", s, n, &m));
    /* another key */
    unsigned char other[SEAL_KEY_LEN];
    memcpy(other, key, sizeof(other));
    other[31] ^= 1;
    ck_assert_ptr_null(seal_decrypt(other, ROW, s, n, &m));
    /* any changed byte: version, nonce, text, tag */
    size_t at[] = {0, 1, 20, n - 1};
    for (size_t i = 0; i < sizeof(at) / sizeof(*at); i++) {
        s[at[i]] ^= 0x40;
        ck_assert_msg(seal_decrypt(key, ROW, s, n, &m) == NULL, "byte %zu changed and opened",
                      at[i]);
        s[at[i]] ^= 0x40;
    }
    /* cut short, or nothing at all */
    ck_assert_ptr_null(seal_decrypt(key, ROW, s, n - 1, &m));
    ck_assert_ptr_null(seal_decrypt(key, ROW, s, 28, &m));
    free(s);
}
END_TEST

/* One box seals message after message (a fresh nonce each), and
 * what it seals opens with the key. */
START_TEST(prepared_box)
{
    unsigned char *prev = NULL;
    for (int round = 0; round < 3; round++) {
        size_t n, m;
        unsigned char *s = seal_box_encrypt(box, ROW, plain, strlen(plain), &n);
        ck_assert_ptr_nonnull(s);
        char *back = seal_decrypt(key, ROW, s, n, &m);
        ck_assert_ptr_nonnull(back);
        ck_assert_str_eq(back, plain);
        free(back);
        if (prev)
            ck_assert(memcmp(prev + 1, s + 1, 12) != 0);
        free(prev);
        prev = s;
    }
    free(prev);
}
END_TEST

START_TEST(empty_text)
{
    size_t n, m = 99;
    unsigned char *s = seal_box_encrypt(box, ROW, "", 0, &n);
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(n, 29);
    char *back = seal_decrypt(key, ROW, s, n, &m);
    ck_assert_ptr_nonnull(back);
    ck_assert_uint_eq(m, 0);
    free(back);
    free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("seal");
    TCase *tc = tcase_create("seal");
    tcase_add_checked_fixture(tc, box_up, box_down);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, fresh_nonce_each_time);
    tcase_add_test(tc, refuses_what_is_not_its_own);
    tcase_add_test(tc, empty_text);
    tcase_add_test(tc, prepared_box);
    suite_add_tcase(s, tc);
    return ts_run_suite(s);
}
