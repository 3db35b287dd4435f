/* SPDX-License-Identifier: MIT */
/*
 * The interface between a fuzz target (tests/fuzz/fuzz_<name>.c) and the
 * standalone driver (tests/fuzz/driver.c). A target is libFuzzer-compatible:
 * LLVMFuzzerTestOneInput() is all libFuzzer needs, and it aborts on any
 * broken invariant. The other hooks serve the driver only: built-in seeds,
 * a fix-up that keeps mutants past the cheapest checks, and counters.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* A broken invariant: says which and where, then abort()s (libFuzzer keeps the input). */
#define CHECK(cond)                                                                             \
        do {                                                                                    \
                if (!(cond)) {                                                                  \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
                        abort();                                                                \
                }                                                                               \
        } while (0)

#define FUZZ_SEED_MESSAGE 1u            /* mutants of this seed get fuzz_fixup() most of the time */

/* Runs one input; returns 0 (aborts on a failed check). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Calls add() once per built-in seed; data is only valid during the call. */
void fuzz_seeds(void (*add)(const uint8_t *data, size_t size, unsigned flags, void *userdata), void *userdata);

/* Repairs fields a mutant should not fail on trivially (length, version). */
void fuzz_fixup(uint8_t *data, size_t size);

/* Inputs the target accepted in full so far (the driver keeps those to mutate further). */
size_t fuzz_accepted(void);

/* One phrase with the target's counters, for the driver's summary line. */
const char *fuzz_summary(void);
