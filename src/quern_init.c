/*
 * quern-init — PID 1 of every sandbox.  It starts the task's code (argv[1..])
 * in its own process, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to
 * every process of the box, reaps every orphan the box makes, and when the
 * code's process ends writes its status to fd 4 ("X <code>" or "S <signal>")
 * and exits; the kernel then kills whatever else is left in the PID namespace.
 *
 * It runs already inside the namespaces, under the seccomp filter and
 * rlimits that sandbox.c set up.  Single-threaded; signals arrive through a
 * signalfd so there is nothing async to get wrong.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define STATUS_FD 4

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
        while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
            if (p != child)
                continue;
            char b[32];
            if (WIFEXITED(st)) {
                snprintf(b, sizeof(b), "X %d\n", WEXITSTATUS(st));
                say(b);
                _exit(WEXITSTATUS(st));
            }
            if (WIFSIGNALED(st)) {
                snprintf(b, sizeof(b), "S %d\n", WTERMSIG(st));
                say(b);
                _exit(128 + WTERMSIG(st));
            }
        }
    }
}
