/*
 * quern-init — PID 1 of every sandbox.  It starts the task's code (argv[1..])
 * in its own process, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to
 * every process of the box, reaps every orphan the box makes, and when the
 * code's process ends writes its status to fd 4 ("X <code> <kb>" or
 * "S <signal> <kb>", kb: the largest resident set, in KiB, of the processes
 * it reaped, the code's included) and exits; the kernel then kills whatever
 * else is left in the PID namespace.  That figure is quernd's peak memory
 * without a memory cgroup: init's own rusage, which is all quernd can see,
 * also holds quernd's resident memory (init was cloned sharing it).
 *
 * It runs already inside the namespaces, under the seccomp filter and
 * rlimits that sandbox.c set up.  Single-threaded; signals arrive through a
 * signalfd so there is nothing async to get wrong.
 *
 * Every run pays for starting this program, so it uses no C library: only
 * raw system calls, its own _start, no dynamic loader, no relocations, no
 * CPU-feature probing (cpuid traps to the hypervisor on a VM and is a large
 * part of a libc program's start).  Built with
 *     cc -DQUERN_INIT_NOLIBC -static -nostdlib -fno-stack-protector \
 *        -fno-builtin -O2 -o quern-init src/quern_init.c
 * Without QUERN_INIT_NOLIBC it is an ordinary libc program (same logic).
 *
 * The code's process inherits fds 0-3 (stdin, stdout, stderr, control) and,
 * for a warm box, fd 6 (the loader's "go" pipe, see exec.c); init itself
 * keeps only fd 4 and its signalfd.
 */
#ifdef QUERN_INIT_NOLIBC

#include <asm/unistd.h>
#include <stddef.h>
#include <stdint.h>

#define SIGHUP 1
#define SIGINT 2
#define SIGQUIT 3
#define SIGUSR1 10
#define SIGUSR2 12
#define SIGTERM 15
#define SIGCHLD 17
#define SIG_BLOCK 0
#define SIG_SETMASK 2
#define EINTR_VALUE 4
#define STATUS_FD 4
#define GO_FD 6
#define QI_STR2(x) #x
#define QI_STR(x) QI_STR2(x)

typedef struct {
    unsigned long sig[1];
} ksigset_t;

struct ksignalfd_siginfo {
    uint32_t ssi_signo;
    uint8_t pad[124];
};

/* struct rusage on x86-64: two struct timeval, then ru_maxrss (KiB). */
struct krusage {
    long tv[4];
    long maxrss;
    long rest[13];
};

static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

#define SC(n, a, b, c) sys6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define SC4(n, a, b, c, d) sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

static size_t slen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static void put(int fd, const char *s)
{
    (void)SC(__NR_write, fd, s, slen(s));
}

/* Appends v in decimal to b at *n (b has room for 21 more bytes). */
static void add_num(char *b, size_t *n, long v)
{
    char d[24];
    size_t k = 0;
    unsigned long u = v < 0 ? (unsigned long)-v : (unsigned long)v;
    do {
        d[k++] = (char)('0' + u % 10);
        u /= 10;
    } while (u && k < sizeof d);
    if (v < 0)
        b[(*n)++] = '-';
    while (k)
        b[(*n)++] = d[--k];
}

/* "<prefix><n>\n" to fd, or "<prefix><n> <w>\n" when w >= 0. */
static void put_num2(int fd, const char *prefix, long v, long w)
{
    char b[80];
    size_t n = 0;
    for (const char *p = prefix; *p && n < 24; p++)
        b[n++] = *p;
    add_num(b, &n, v);
    if (w >= 0) {
        b[n++] = ' ';
        add_num(b, &n, w);
    }
    b[n++] = '\n';
    (void)SC(__NR_write, fd, b, n);
}

static void put_num(int fd, const char *prefix, long v)
{
    put_num2(fd, prefix, v, -1);
}

static void sigadd(ksigset_t *s, int sig)
{
    s->sig[0] |= 1UL << (sig - 1);
}

__attribute__((noreturn)) static void die(int code)
{
    for (;;)
        (void)SC(__NR_exit_group, code, 0, 0);
}

#define CLONE_VM 0x00000100
#define CLONE_VFORK 0x00004000

/* clone(flags, stack) running fn(arg) on stack in the child, which exits
 * with fn's return value; the child's pid (or -errno) in the parent.  The
 * child starts on its own stack, so it never returns into a frame of the
 * parent's (which vfork's shared stack would make it do). */
long q_clone(long flags, void *stack, int (*fn)(void *), void *arg);
__asm__(".text\n"
        ".global q_clone\n"
        "q_clone:\n"
        "  and $-16, %rsi\n"
        "  sub $16, %rsi\n"
        "  mov %rdx, 0(%rsi)\n"     /* fn */
        "  mov %rcx, 8(%rsi)\n"     /* arg */
        "  mov $" QI_STR(__NR_clone) ", %eax\n"
        "  xor %edx, %edx\n"        /* parent_tid */
        "  xor %r10d, %r10d\n"      /* child_tid */
        "  xor %r8d, %r8d\n"        /* tls */
        "  syscall\n"
        "  test %rax, %rax\n"
        "  jnz 1f\n"
        "  xor %ebp, %ebp\n"
        "  pop %rax\n"
        "  pop %rdi\n"
        "  call *%rax\n"
        "  mov %eax, %edi\n"
        "  mov $" QI_STR(__NR_exit) ", %eax\n"
        "  syscall\n"
        "  hlt\n"
        "1:\n"
        "  ret\n");

struct code_start {
    char **argv, **envp;
};

/* The code's stack until its exec (init is suspended meanwhile). */
static char code_stack[16384] __attribute__((aligned(16)));

/* The code's process, sharing init's memory until its exec: it writes
 * nothing but its own stack. */
static int code_main(void *arg)
{
    struct code_start *cs = arg;
    ksigset_t none = {{0}};
    (void)SC4(__NR_rt_sigprocmask, SIG_SETMASK, &none, 0, sizeof(none));
    (void)SC(__NR_setpgid, 0, 0, 0);
    long e = SC(__NR_execve, cs->argv[1], cs->argv + 1, cs->envp);
    put(2, "quern-init: cannot run ");
    put(2, cs->argv[1]);
    put_num(2, ": errno ", -e);
    return 127;
}

__attribute__((used, noreturn)) static void init_main(long *sp)
{
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    if (argc < 2) {
        put(STATUS_FD, "E quern-init: no command\n");
        die(127);
    }
    (void)SC(__NR_fcntl, STATUS_FD, 2 /* F_SETFD */, 1 /* FD_CLOEXEC */);
    static const int fwd[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    ksigset_t set = {{0}};
    for (size_t i = 0; i < sizeof(fwd) / sizeof(fwd[0]); i++)
        sigadd(&set, fwd[i]);
    sigadd(&set, SIGCHLD);
    (void)SC4(__NR_rt_sigprocmask, SIG_BLOCK, &set, 0, sizeof(set));
    long sfd = SC4(__NR_signalfd4, -1, &set, sizeof(set), 02000000 /* SFD_CLOEXEC */);
    if (sfd < 0) {
        put(STATUS_FD, "E quern-init: signalfd failed\n");
        die(127);
    }
    /* The code's process: a vfork-like clone on a stack of its own (no
     * copy of init's memory to make and throw away at the exec); init
     * resumes once the code's exec has begun (or failed). */
    struct code_start cs = {argv, envp};
    long child = q_clone(CLONE_VM | CLONE_VFORK | SIGCHLD, code_stack + sizeof(code_stack),
                         code_main, &cs);
    if (child < 0) {
        put(STATUS_FD, "E quern-init: fork failed\n");
        die(127);
    }
    /* The code holds the pipes now; init keeps only its status fd. */
    for (int fd = 0; fd <= 3; fd++)
        (void)SC(__NR_close, fd, 0, 0);
    (void)SC(__NR_close, GO_FD, 0, 0);

    long maxrss = 0;   /* KiB, the largest of the processes reaped */
    for (;;) {
        struct ksignalfd_siginfo si;
        long n = SC(__NR_read, sfd, &si, sizeof(si));
        if (n != (long)sizeof(si)) {
            if (n == -EINTR_VALUE)
                continue;
            put(STATUS_FD, "E quern-init: signalfd read failed\n");
            die(127);
        }
        if (si.ssi_signo != SIGCHLD) {
            /* kill(-1) from PID 1 reaches every other process of the box. */
            (void)SC(__NR_kill, -1, si.ssi_signo, 0);
            continue;
        }
        int st;
        long p;
        struct krusage ru;
        while ((p = SC4(__NR_wait4, -1, &st, 1 /* WNOHANG */, &ru)) > 0) {
            if (ru.maxrss > maxrss)
                maxrss = ru.maxrss;
            if (p != child)
                continue;
            if ((st & 0x7f) == 0) {
                int code = (st >> 8) & 0xff;
                put_num2(STATUS_FD, "X ", code, maxrss);
                die(code);
            }
            int sig = st & 0x7f;
            if (sig != 0 && sig != 0x7f) {
                put_num2(STATUS_FD, "S ", sig, maxrss);
                die(128 + sig);
            }
        }
    }
}

/* The kernel enters here with the stack holding argc, argv, envp. */
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call init_main\n"
        "  hlt\n");

/* The compiler may emit calls to these even with -fno-builtin. */
void *memset(void *d, int c, size_t n);
void *memset(void *d, int c, size_t n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n);
void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

#else /* an ordinary libc program */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define STATUS_FD 4
#define GO_FD 6

static void say(const char *s)
{
    if (write(STATUS_FD, s, strlen(s)) < 0) {
        /* quernd is gone; nobody to tell */
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        say("E quern-init: no command\n");
        return 127;
    }
    (void)fcntl(STATUS_FD, F_SETFD, FD_CLOEXEC);
    static const int fwd[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(fwd) / sizeof(fwd[0]); i++)
        sigaddset(&set, fwd[i]);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0) {
        say("E quern-init: signalfd failed\n");
        return 127;
    }

    pid_t child = fork();
    if (child < 0) {
        say("E quern-init: fork failed\n");
        return 127;
    }
    if (child == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpgid(0, 0);
        execv(argv[1], argv + 1);
        int e = errno;
        dprintf(2, "quern-init: cannot run %s: %s\n", argv[1], strerror(e));
        _exit(127);
    }
    /* The code holds the pipes now; init keeps only its status fd. */
    for (int fd = 0; fd <= 3; fd++)
        close(fd);
    close(GO_FD);

    long maxrss = 0;   /* KiB, the largest of the processes reaped */
    for (;;) {
        struct signalfd_siginfo si;
        ssize_t n = read(sfd, &si, sizeof(si));
        if (n != (ssize_t)sizeof(si)) {
            if (n < 0 && errno == EINTR)
                continue;
            say("E quern-init: signalfd read failed\n");
            return 127;
        }
        if (si.ssi_signo != SIGCHLD) {
            /* kill(-1) from PID 1 reaches every other process of the box. */
            kill(-1, (int)si.ssi_signo);
            continue;
        }
        int st;
        pid_t p;
        struct rusage ru;
        while ((p = wait4(-1, &st, WNOHANG, &ru)) > 0) {
            if (ru.ru_maxrss > maxrss)
                maxrss = ru.ru_maxrss;
            if (p != child)
                continue;
            char b[64];
            if (WIFEXITED(st)) {
                snprintf(b, sizeof(b), "X %d %ld\n", WEXITSTATUS(st), maxrss);
                say(b);
                _exit(WEXITSTATUS(st));
            }
            if (WIFSIGNALED(st)) {
                snprintf(b, sizeof(b), "S %d %ld\n", WTERMSIG(st), maxrss);
                say(b);
                _exit(128 + WTERMSIG(st));
            }
        }
    }
}

#endif
