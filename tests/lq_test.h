/*
 * lq_test.h - the smallest test harness that reports well: ASSERT macros that
 * print file:line and the values, and a runner that prints "N passed, N failed".
 */
#ifndef LQ_TEST_H
#define LQ_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int lq_test_failed_;
static int lq_test_checks_;

#define ASSERT_TRUE(c)                                                                 \
    do {                                                                               \
        lq_test_checks_++;                                                             \
        if (!(c)) {                                                                    \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #c);  \
            lq_test_failed_++;                                                         \
            return;                                                                    \
        }                                                                              \
    } while (0)
#define ASSERT_EQ(a, b)                                                                \
    do {                                                                               \
        long long a_ = (long long)(a), b_ = (long long)(b);                            \
        lq_test_checks_++;                                                             \
        if (a_ != b_) {                                                                \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__,        \
                    __LINE__, #a, #b, a_, b_);                                         \
            lq_test_failed_++;                                                         \
            return;                                                                    \
        }                                                                              \
    } while (0)
#define ASSERT_STREQ(a, b)                                                             \
    do {                                                                               \
        const char *a_ = (a), *b_ = (b);                                               \
        lq_test_checks_++;                                                             \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                         \
            fprintf(stderr, "%s:%d: %s == %s failed:\n  got:  %s\n  want: %s\n",       \
                    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
            lq_test_failed_++;                                                         \
            return;                                                                    \
        }                                                                              \
    } while (0)

typedef struct {
    const char *name;
    void (*fn)(void);
} lq_test_case;

/* Runs each case (or only the one named in argv[1]); exit status 1 on any failure. */
static inline int lq_test_run(const lq_test_case *cases, int argc, char **argv)
{
    int passed = 0, failed = 0;
    for (const lq_test_case *c = cases; c->name; c++) {
        if (argc > 1 && strcmp(argv[1], c->name) != 0)
            continue;
        int before = lq_test_failed_;
        c->fn();
        if (lq_test_failed_ > before) {
            failed++;
            fprintf(stderr, "FAIL %s\n", c->name);
        } else {
            passed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif
