/*
 * t.h — the unit tests' tiny harness.  Each test file is its own program:
 * TEST(name) { ... } functions registered by a constructor, CHECK() records a
 * failure with file:line and goes on, and main() prints "N passed, M failed".
 */
#ifndef QUERN_T_H
#define QUERN_T_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*t_fn)(void);
static struct { const char *tname; t_fn fn; } t_tests[512];
static int t_ntests, t_failed_checks;

#define TEST(name)                                                        \
    static void name(void);                                               \
    __attribute__((constructor)) static void t_reg_##name(void)           \
    {                                                                     \
        t_tests[t_ntests].tname = #name;                                   \
        t_tests[t_ntests++].fn = name;                                    \
    }                                                                     \
    static void name(void)

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            t_failed_checks++;                                                  \
        }                                                                       \
    } while (0)
#define CHECK_EQ_INT(a, b)                                                      \
    do {                                                                        \
        long long t_a = (long long)(a), t_b = (long long)(b);                   \
        if (t_a != t_b) {                                                       \
            fprintf(stderr, "  %s:%d: %s == %lld, expected %lld\n", __FILE__,   \
                    __LINE__, #a, t_a, t_b);                                    \
            t_failed_checks++;                                                  \
        }                                                                       \
    } while (0)
#define CHECK_EQ_STR(a, b)                                                      \
    do {                                                                        \
        const char *t_a = (a), *t_b = (b);                                      \
        if (!t_a || !t_b || strcmp(t_a, t_b) != 0) {                            \
            fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n",         \
                    __FILE__, __LINE__, #a, t_a ? t_a : "(null)",               \
                    t_b ? t_b : "(null)");                                      \
            t_failed_checks++;                                                  \
        }                                                                       \
    } while (0)

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    for (int i = 0; i < t_ntests; i++) {
        if (argc > 1 && strcmp(argv[1], t_tests[i].tname) != 0)
            continue;
        int before = t_failed_checks;
        t_tests[i].fn();
        if (t_failed_checks == before) {
            passed++;
        } else {
            failed++;
            fprintf(stderr, "FAIL %s\n", t_tests[i].tname);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
#endif
