/*
 * host_floor — what this host itself allows, without any quern code, for the
 * two kinds of target quern misses: sandboxed spawns per second (issue 3) and
 * a request's latency at low load (issue 8).  Needs root (namespaces).
 *
 *   build/bench/host_floor [N]
 *   build/bench/host_floor raw [N]   (the first row alone: HOST_RAW_SPAWN_PER_S)
 *
 * 1. Namespaces.  N spawns (default 2000) of /bin/true by clone() + execve
 *    from P single-threaded spawner processes (P = 2, then 8), each waiting
 *    for its child, with the namespace flags a quern box uses added one at a
 *    time: none, +user, +pid, +mount, +uts+cgroup, +ipc, +net.  Prints spawns
 *    per second and CPU per spawn (the spawners' children: clone, exec, exit;
 *    kernel work done later by kworkers, such as an RCU grace period before a
 *    mount namespace's mounts are freed, is not in it).  A flag that lowers
 *    the rate at P = 2 much more than it raises the CPU makes each spawn wait;
 *    at P = 8 the waits overlap.  quern keeps network namespaces prepared per
 *    slot and reuses IPC namespaces, and creates the user, PID, mount, UTS and
 *    cgroup namespaces per run.
 * 2. Loopback round trips.  One byte sent from one process to another over a
 *    loopback TCP connection (TCP_NODELAY) and echoed back, 2000 times, with
 *    0, 1 and 5 ms of sleep between them: the 5 ms row is the harness's
 *    latency phase's pace (200/s), where every message finds the other side
 *    asleep (two wake-ups per round trip).  A request whose answer passes
 *    through N sleeping threads or processes pays about N/2 of that row's
 *    figure before any work is done.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define STACK_BYTES (64 * 1024)
#define RTT_N 2000

static int child_exec(void *arg)
{
    (void)arg;
    char *argv[] = {"/bin/true", NULL};
    char *envp[] = {NULL};
    execve("/bin/true", argv, envp);
    _exit(127);
}

/* One spawner: n clones of child_exec with flags, one at a time. */
static void spawner(int n, int flags)
{
    char *stack = mmap(NULL, STACK_BYTES, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        _exit(2);
    for (int i = 0; i < n; i++) {
        pid_t pid = clone(child_exec, stack + STACK_BYTES, flags | SIGCHLD, NULL);
        if (pid < 0) {
            fprintf(stderr, "clone(0x%x): %s\n", (unsigned)flags, strerror(errno));
            _exit(1);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            _exit(1);
    }
    _exit(0);
}

/* Spawns per second with par spawner processes; *cpu_ms: CPU per spawn. */
static double spawn_rate(int n, int par, int flags, double *cpu_ms)
{
    struct rusage r0, r1;
    getrusage(RUSAGE_CHILDREN, &r0);
    double t0 = now_s();
    for (int p = 0; p < par; p++) {
        pid_t pid = fork();
        if (pid == 0)
            spawner(n / par, flags);
        if (pid < 0)
            return -1;
    }
    int failed = 0, st;
    while (wait(&st) > 0)
        failed += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    double dt = now_s() - t0;
    getrusage(RUSAGE_CHILDREN, &r1);
    if (failed)
        return -1;
    double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) +
                 (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
                 (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6 +
                 (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    int done = n / par * par;
    *cpu_ms = 1000 * cpu / done;
    return done / dt;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* p50/p90/p99 of RTT_N loopback round trips with gap_us between them. */
static int loopback_rtt(int gap_us, double q[3])
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0)
        return -1;
    int one = 1;
    pid_t echo = fork();
    if (echo == 0) {
        int c = accept(l, NULL, NULL);
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char b[64];
        for (;;) {
            ssize_t n = read(c, b, sizeof b);
            if (n <= 0 || write(c, b, (size_t)n) != n)
                _exit(0);
        }
    }
    close(l);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (echo < 0 || s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0)
        return -1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    static double r[RTT_N];
    char b[64];
    int rc = 0;
    for (int i = 0; i < RTT_N && rc == 0; i++) {
        double t0 = now_s();
        if (write(s, "x", 1) != 1 || read(s, b, sizeof b) != 1)
            rc = -1;
        r[i] = (now_s() - t0) * 1e6;
        if (gap_us)
            usleep((useconds_t)gap_us);
    }
    close(s);
    waitpid(echo, NULL, 0);
    qsort(r, RTT_N, sizeof r[0], cmp_double);
    q[0] = r[RTT_N / 2];
    q[1] = r[RTT_N * 9 / 10];
    q[2] = r[RTT_N * 99 / 100];
    return rc;
}

int main(int argc, char **argv)
{
    bool raw_only = argc > 1 && !strcmp(argv[1], "raw");
    if (raw_only) {
        argv++;
        argc--;
    }
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    if (n < 16)
        n = 16;
    if (raw_only) {
        /* fork + exec from two small single-threaded processes: the
         * cleanest "raw spawn" this host does */
        double cpu = 0, rate = spawn_rate(n / 10 + 2, 2, 0, &cpu); /* warm the page cache */
        rate = spawn_rate(n, 2, 0, &cpu);
        printf("HOST_RAW_SPAWN_PER_S %.0f\nHOST_RAW_SPAWN_CPU_MS %.3f\n", rate, cpu);
        return rate < 0;
    }
    static const struct {
        const char *name;
        int flags;
    } steps[] = {
        {"no namespace", 0},
        {"+ user", CLONE_NEWUSER},
        {"+ pid", CLONE_NEWUSER | CLONE_NEWPID},
        {"+ mount", CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS},
        {"+ uts + cgroup", CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWCGROUP},
        {"+ ipc", CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWCGROUP |
                      CLONE_NEWIPC},
        {"+ net", CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWCGROUP |
                      CLONE_NEWIPC | CLONE_NEWNET},
    };
    static const int pars[] = {2, 8};
    printf("== clone + exec of /bin/true, %d spawns per row, namespaces added one at a time\n", n);
    printf("%-16s", "flags");
    for (size_t p = 0; p < sizeof pars / sizeof pars[0]; p++)
        printf(" | %d spawners: /s   cpu ms  rate vs none", pars[p]);
    printf("\n");
    double base[2] = {0, 0};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        printf("%-16s", steps[i].name);
        for (size_t p = 0; p < sizeof pars / sizeof pars[0]; p++) {
            double cpu = 0, rate = spawn_rate(n, pars[p], steps[i].flags, &cpu);
            if (rate < 0) {
                printf(" | %28s", "failed (root needed?)");
                continue;
            }
            if (i == 0)
                base[p] = rate;
            printf(" | %13.0f %8.3f %11.0f%%", rate, cpu, 100 * rate / base[p]);
            fflush(stdout);
        }
        printf("\n");
    }
    printf("== loopback TCP round trip between two processes (%d each)\n", RTT_N);
    static const int gaps[] = {0, 1000, 5000};
    for (size_t g = 0; g < sizeof gaps / sizeof gaps[0]; g++) {
        double q[3];
        if (loopback_rtt(gaps[g], q) < 0) {
            printf("gap %d us: failed\n", gaps[g]);
            continue;
        }
        printf("%4d us between round trips: p50 %.0f us, p90 %.0f us, p99 %.0f us\n",
               gaps[g], q[0], q[1], q[2]);
        printf("HOST_LOOPBACK_RTT_P50_US_GAP_%d %.0f\n", gaps[g], q[0]);
    }
    return 0;
}
