/* The fuzz targets' shared entry points (libFuzzer's, plus a set-up). */
#ifndef CARDGATE_FUZZ_H
#define CARDGATE_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int fuzz_init(void);

#endif
