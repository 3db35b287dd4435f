/* SPDX-License-Identifier: MIT */
/*
 * A standalone main() for the libFuzzer-style targets in tests/fuzz/, so they
 * run under plain gcc (and SANITIZE=address,undefined) in `make check-unit`.
 * It runs the target's built-in seeds, then a fixed number of deterministic
 * pseudo-random mutants of them: bit flips, byte and integer sets,
 * truncations, insertions, deletions, duplicated chunks and splices, most
 * with the target's fix-up applied so they get past the header check.
 * Mutants the target accepts join their seed's pool and are mutated
 * further; three in four mutants come from the message pool. Every
 * input is passed in a buffer of exactly its size, so the sanitizers catch
 * any read past it. Stops after FUZZ_SECONDS; prints one summary line.
 *
 *   fuzz_<name>                       seeds, then the mutants (see usage())
 *   fuzz_<name> FILE...               runs each file once (replays a crash)
 *   fuzz_<name> --write-seeds DIR     writes the seeds as a libFuzzer corpus
 *
 * Exit status: 0 success, 1 failure, 2 usage. A failed check abort()s.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"

#define MAX_INPUT 4200                  /* a little over PB_MSG_MAX, so oversized inputs are tried */
#define MAX_FILE (1024 * 1024)          /* largest file replayed */
#define POOL_MAX 1024                   /* seeds plus kept mutants */
#define DEFAULT_ITERATIONS 200000
#define DEFAULT_SECONDS 20
#define DEFAULT_SEED UINT64_C(0x706f727462726f6b)      /* "portbrok" */

struct input {
        uint8_t *data;
        size_t size;
        unsigned flags;                 /* FUZZ_SEED_* of the seed it descends from */
};

struct pool {
        struct input items[POOL_MAX];
        size_t n;                       /* items in use */
        size_t n_seeds;                 /* items[0..n_seeds) are seeds and stay */
        size_t next;                    /* next kept-mutant slot to reuse once full */
};

/* Seeds and kept mutants, by kind: [0] other (text), [1] FUZZ_SEED_MESSAGE. */
struct corpus {
        struct pool pools[2];
};

static const char *prog = "fuzz";

static void usage(FILE *f) {
        fprintf(f,
                "usage: %s [FILE...]\n"
                "       %s --write-seeds DIR\n"
                "Without files: runs the built-in seeds, then FUZZ_ITERATIONS (default %d) mutants\n"
                "from FUZZ_SEED (default 0x%" PRIx64 "), stopping after FUZZ_SECONDS (default %d).\n"
                "With files: runs each file once, e.g. a crash found by libFuzzer.\n",
                prog, prog, DEFAULT_ITERATIONS, DEFAULT_SEED, DEFAULT_SECONDS);
}

/* splitmix64: small, fast and the same everywhere. */
static uint64_t rng_next(uint64_t *state) {
        uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static size_t rng_below(uint64_t *state, size_t n) {
        return n ? (size_t) (rng_next(state) % n) : 0;
}

static double now_sec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Runs the target on a private copy of exactly size bytes. */
static void run_one(const uint8_t *data, size_t size) {
        uint8_t *copy = malloc(size ? size : 1);

        if (!copy) {
                fprintf(stderr, "%s: out of memory\n", prog);
                exit(1);
        }
        if (size)
                memcpy(copy, data, size);
        LLVMFuzzerTestOneInput(copy, size);
        free(copy);
}

static void pool_put(struct pool *p, const uint8_t *data, size_t size, unsigned flags) {
        struct input *in;
        uint8_t *copy = malloc(size ? size : 1);

        if (!copy) {
                fprintf(stderr, "%s: out of memory\n", prog);
                exit(1);
        }
        if (size)
                memcpy(copy, data, size);
        if (p->n < POOL_MAX)
                in = &p->items[p->n++];
        else {
                if (p->next < p->n_seeds || p->next >= POOL_MAX)
                        p->next = p->n_seeds;
                in = &p->items[p->next++];
                free(in->data);
        }
        *in = (struct input) { .data = copy, .size = size, .flags = flags };
}

static void pool_free(struct pool *p) {
        for (size_t i = 0; i < p->n; i++)
                free(p->items[i].data);
        p->n = p->n_seeds = 0;
}

static struct pool *corpus_pool(struct corpus *c, unsigned flags) {
        return &c->pools[flags & FUZZ_SEED_MESSAGE ? 1 : 0];
}

static void corpus_free(struct corpus *c) {
        pool_free(&c->pools[0]);
        pool_free(&c->pools[1]);
}

static void add_seed(const uint8_t *data, size_t size, unsigned flags, void *userdata) {
        struct pool *p = corpus_pool(userdata, flags);

        if (size > MAX_INPUT || p->n >= POOL_MAX) {
                fprintf(stderr, "%s: bad built-in seed (%zu bytes)\n", prog, size);
                exit(1);
        }
        pool_put(p, data, size, flags);
        p->n_seeds = p->n;
}

/* Values that sit on the edges of lengths, counts, booleans and bytes. */
static const uint8_t interesting8[] = { 0, 1, 2, 4, 6, 12, 13, 16, 17, 24, 31, 32, 33, 0x1f, 0x20, 0x2d, 0x2e,
                                        0x3a, 0x5b, 0x5d, 0x7e, 0x7f, 0x80, 0xfe, 0xff };
static const uint64_t interesting_int[] = { 0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 4095,
                                            4096, 4097, 0x7fffffff, 0x80000000, 0xffffffff,
                                            UINT64_C(0x7fffffffffffffff), UINT64_MAX };

static void put_be(uint8_t *p, uint64_t v, size_t n) {
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t) (v >> (8 * (n - 1 - i)));
}

/* Applies one random change to buf (size bytes, room for MAX_INPUT). */
static void mutate_once(uint8_t *buf, size_t *size, const struct pool *p, uint64_t *rng) {
        size_t n = *size, pos = rng_below(rng, n), len;

        if (n > MAX_INPUT)
                abort();                /* never; tells the compiler the bounds below hold */
        switch (rng_below(rng, 11)) {
        case 0:                                 /* flip a bit */
                if (n)
                        buf[pos] ^= (uint8_t) (1u << rng_below(rng, 8));
                break;
        case 1:                                 /* set a random byte */
                if (n)
                        buf[pos] = (uint8_t) rng_next(rng);
                break;
        case 2:                                 /* set an interesting byte */
                if (n)
                        buf[pos] = interesting8[rng_below(rng, sizeof(interesting8))];
                break;
        case 3:                                 /* add or subtract a little */
                if (n)
                        buf[pos] = (uint8_t) (buf[pos] + (rng_below(rng, 2) ? 1 + rng_below(rng, 4)
                                                                           : 255 - rng_below(rng, 4)));
                break;
        case 4: {                               /* an interesting big-endian integer */
                static const size_t widths[] = { 2, 4, 8 };
                size_t w = widths[rng_below(rng, 3)];

                if (n >= w) {
                        pos = rng_below(rng, n - w + 1);
                        put_be(buf + pos, interesting_int[rng_below(rng, sizeof(interesting_int) / sizeof(uint64_t))],
                               w);
                }
                break;
        }
        case 5:                                 /* truncate, mostly near the end */
                if (n)
                        *size = rng_below(rng, 2) ? n - 1 - rng_below(rng, n < 32 ? n : 32) : rng_below(rng, n);
                break;
        case 6:                                 /* insert random bytes */
                len = 1 + rng_below(rng, 16);
                pos = rng_below(rng, n + 1);
                if (pos <= n && n + len <= MAX_INPUT) {
                        memmove(buf + pos + len, buf + pos, n - pos);
                        for (size_t i = 0; i < len; i++)
                                buf[pos + i] = (uint8_t) rng_next(rng);
                        *size = n + len;
                }
                break;
        case 7:                                 /* delete bytes */
                if (n) {
                        len = 1 + rng_below(rng, n - pos < 16 ? n - pos : 16);
                        memmove(buf + pos, buf + pos + len, n - pos - len);
                        *size = n - len;
                }
                break;
        case 8: {                               /* duplicate a chunk in place (grows lists) */
                size_t from = rng_below(rng, n);

                len = 1 + rng_below(rng, n - from < 320 ? n - from : 320);
                pos = rng_below(rng, n + 1);
                if (n && pos <= n && n + len <= MAX_INPUT) {
                        memmove(buf + pos + len, buf + pos, n - pos);
                        memmove(buf + pos, buf + (from >= pos ? from + len : from), len);
                        *size = n + len;
                }
                break;
        }
        case 9: {                               /* overwrite with a chunk of another input */
                const struct input *o = &p->items[rng_below(rng, p->n)];
                size_t from = rng_below(rng, o->size);

                if (n && o->size) {
                        len = 1 + rng_below(rng, o->size - from);
                        if (len > n - pos)
                                len = n - pos;
                        memcpy(buf + pos, o->data + from, len);
                }
                break;
        }
        default: {                              /* splice: our head, another input's tail */
                const struct input *o = &p->items[rng_below(rng, p->n)];
                size_t from = rng_below(rng, o->size + 1);

                pos = rng_below(rng, n + 1);
                len = o->size - from;
                if (pos + len > MAX_INPUT)
                        len = MAX_INPUT - pos;
                memcpy(buf + pos, o->data + from, len);
                *size = pos + len;
        }
        }
}

static int parse_env(const char *name, uint64_t def, uint64_t *ret) {
        const char *s = getenv(name);
        char *end;

        *ret = def;
        if (!s || !*s)
                return 0;
        errno = 0;
        *ret = strtoull(s, &end, 0);
        if (errno || *end || s[0] == '-') {
                fprintf(stderr, "%s: %s=%s is not a number; unset it or give a non-negative integer\n", prog, name,
                        s);
                return -1;
        }
        return 0;
}

static int write_seeds(const char *dir) {
        static struct corpus corpus;
        size_t n = 0;
        int r = 0;

        fuzz_seeds(add_seed, &corpus);
        for (size_t i = 0; i < corpus.pools[0].n + corpus.pools[1].n && r == 0; i++) {
                const struct pool *p = &corpus.pools[i < corpus.pools[0].n ? 0 : 1];
                const struct input *in = &p->items[i < corpus.pools[0].n ? i : i - corpus.pools[0].n];
                char path[4096];
                FILE *f;

                snprintf(path, sizeof(path), "%s/seed-%03zu", dir, i);
                f = fopen(path, "we");
                n++;
                if (!f || fwrite(in->data, 1, in->size, f) != in->size) {
                        fprintf(stderr, "%s: cannot write %s: %s; check that the directory exists\n", prog, path,
                                strerror(errno));
                        r = -1;
                }
                if (f && fclose(f) != 0 && r == 0) {
                        fprintf(stderr, "%s: cannot write %s: %s\n", prog, path, strerror(errno));
                        r = -1;
                }
        }
        if (r == 0)
                printf("%s: wrote %zu seeds to %s\n", prog, n, dir);
        corpus_free(&corpus);
        return r == 0 ? 0 : 1;
}

static int replay_files(char **paths, int n) {
        static uint8_t buf[MAX_FILE];

        for (int i = 0; i < n; i++) {
                FILE *f = fopen(paths[i], "re");
                size_t len;

                if (!f) {
                        fprintf(stderr, "%s: cannot open %s: %s\n", prog, paths[i], strerror(errno));
                        return 1;
                }
                len = fread(buf, 1, sizeof(buf), f);
                if (ferror(f) || !feof(f)) {
                        fprintf(stderr, "%s: cannot read %s whole (at most %d bytes)\n", prog, paths[i], MAX_FILE);
                        fclose(f);
                        return 1;
                }
                fclose(f);
                run_one(buf, len);
        }
        printf("%s: %d files ok: %s\n", prog, n, fuzz_summary());
        return 0;
}

int main(int argc, char **argv) {
        static struct corpus corpus;
        static uint8_t buf[MAX_INPUT];
        uint64_t iterations, seconds, seed, rng, done = 0;
        size_t kept = 0, n_seeds;
        double start = now_sec(), elapsed;
        bool timed_out = false;

        if (argv[0] && strrchr(argv[0], '/'))
                prog = strrchr(argv[0], '/') + 1;
        else if (argv[0])
                prog = argv[0];

        if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
                usage(stdout);
                return 0;
        }
        if (argc > 1 && strcmp(argv[1], "--write-seeds") == 0) {
                if (argc != 3) {
                        usage(stderr);
                        return 2;
                }
                return write_seeds(argv[2]);
        }
        if (argc > 1 && argv[1][0] == '-') {
                fprintf(stderr, "%s: unknown option %s\n", prog, argv[1]);
                usage(stderr);
                return 2;
        }
        if (argc > 1)
                return replay_files(argv + 1, argc - 1);

        if (parse_env("FUZZ_ITERATIONS", DEFAULT_ITERATIONS, &iterations) < 0 ||
            parse_env("FUZZ_SECONDS", DEFAULT_SECONDS, &seconds) < 0 ||
            parse_env("FUZZ_SEED", DEFAULT_SEED, &seed) < 0)
                return 2;
        rng = seed;

        fuzz_seeds(add_seed, &corpus);
        n_seeds = corpus.pools[0].n_seeds + corpus.pools[1].n_seeds;
        if (n_seeds == 0) {
                fprintf(stderr, "%s: the target has no seeds\n", prog);
                return 1;
        }
        for (size_t k = 0; k < 2; k++)
                for (size_t i = 0; i < corpus.pools[k].n_seeds; i++)
                        run_one(corpus.pools[k].items[i].data, corpus.pools[k].items[i].size);

        for (; done < iterations; done++) {
                struct pool *p = &corpus.pools[corpus.pools[1].n && (!corpus.pools[0].n || rng_below(&rng, 4))];
                /* Half from the seeds alone, so no kind of input crowds out the others. */
                const struct input *base = &p->items[rng_below(&rng, rng_below(&rng, 2) ? p->n_seeds : p->n)];
                size_t size = base->size, accepted = fuzz_accepted();
                unsigned flags = base->flags;

                if ((done & 255) == 0 && now_sec() - start >= (double) seconds) {
                        timed_out = true;
                        break;
                }
                memcpy(buf, base->data, size);
                for (size_t k = 1 + rng_below(&rng, 4); k > 0; k--)
                        mutate_once(buf, &size, p, &rng);
                if ((flags & FUZZ_SEED_MESSAGE) && rng_below(&rng, 8) != 0)
                        fuzz_fixup(buf, size);
                run_one(buf, size);
                if (fuzz_accepted() != accepted) {
                        pool_put(p, buf, size, flags);
                        kept++;
                }
        }

        elapsed = now_sec() - start;
        printf("%s: %zu seeds and %" PRIu64 " mutants in %.2f s (FUZZ_SEED=0x%" PRIx64 "%s): %s; %zu accepted "
               "mutants kept\n",
               prog, n_seeds, done, elapsed, seed, timed_out ? ", stopped at FUZZ_SECONDS" : "", fuzz_summary(),
               kept);
        corpus_free(&corpus);
        return 0;
}
