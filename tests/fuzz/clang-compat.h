/* SPDX-License-Identifier: MIT */
/*
 * Forced into fuzz_conn's libFuzzer build (clang -include): brokerd writes
 * `&(struct log_fields) LOG_FIELDS_NONE` (monitor-wrap.c), a cast of a
 * compound literal to its own type, which GCC takes and clang refuses
 * ("cannot take the address of an rvalue"). Defined as a bare initializer,
 * the same text is a compound literal clang takes, and `x = LOG_FIELDS_NONE`
 * still initializes. Remove once brokerd writes `&LOG_FIELDS_NONE`.
 */
#pragma once

#include "log.h"

#undef LOG_FIELDS_NONE
#define LOG_FIELDS_NONE { .uid = -1, .pid = -1 }
