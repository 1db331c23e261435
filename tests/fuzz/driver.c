/* Runs a fuzz target without libFuzzer, so every test run exercises it:
 * the seed files named on the command line, then a fixed number of
 * deterministic mutations of them (bit flips, truncations, duplicated and
 * spliced ranges, JSON-significant bytes). With clang, build the targets
 * with -fsanitize=fuzzer instead for coverage-guided runs (README). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static unsigned long long rng = 0x9e3779b97f4a7c15ULL;

static unsigned next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)rng;
}

static void mutate(unsigned char *buf, size_t *len, size_t cap)
{
    static const char special[] = "{}[]\":,\\u0 \n\t/ab1.-e&=%;#";
    int ops = 1 + next() % 4;
    for (int i = 0; i<ops && * len> 0; i++) {
        size_t at = next() % *len;
        switch (next() % 5) {
        case 0:
            buf[at] ^= (unsigned char)(1u << (next() % 8));
            break;
        case 1:
            *len = at;
            break;
        case 2:
            buf[at] = (unsigned char)special[next() % (sizeof(special) - 1)];
            break;
        case 3: { /* duplicate a range */
            size_t n = next() % 16;
            if (*len + n <= cap && at + n <= *len) {
                memmove(buf + at + n, buf + at, *len - at);
                *len += n;
            }
            break;
        }
        default:
            buf[at] = (unsigned char)(next() & 0xff);
        }
    }
}

int main(int argc, char **argv)
{
    if (fuzz_init() < 0) {
        fprintf(stderr, "fuzz set-up failed\n");
        return 1;
    }
    long iterations = getenv("FUZZ_ITERATIONS") ? atol(getenv("FUZZ_ITERATIONS")) : 20000;
    size_t cap = 1 << 16;
    unsigned char *buf = malloc(cap);
    int seeds = 0;
    for (int a = 1; a < argc; a++) {
        FILE *f = fopen(argv[a], "rb");
        if (!f)
            continue;
        size_t len = fread(buf, 1, cap / 2, f);
        fclose(f);
        seeds++;
        LLVMFuzzerTestOneInput(buf, len);
        unsigned char *seed = malloc(len + 1);
        memcpy(seed, buf, len);
        for (long i = 0; i < iterations / (argc - 1); i++) {
            size_t n = len;
            memcpy(buf, seed, len);
            mutate(buf, &n, cap);
            LLVMFuzzerTestOneInput(buf, n);
        }
        free(seed);
    }
    free(buf);
    /* A finding aborts (the target's checks or a sanitizer) before this line. */
    printf("%d seeds and %ld mutations ran without a finding\n", seeds, iterations);
    return seeds > 0 ? 0 : 1;
}
