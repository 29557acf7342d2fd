/*
 * sandbox — namespaces, mounts, cgroups, rlimits and seccomp for one box
 * (see sandbox.h for the spawn path and threading).
 *
 * Invariants:
 *  1. The child never runs with host-root file credentials while it touches
 *     the file system: it switches to the box's uid 0 (host uid
 *     SANDBOX_DEFAULT_HOST_UID) before its first mount; host directories are
 *     reached through O_PATH fds the parent opened (/proc/self/fd/N), so
 *     their ancestors need not be traversable by the box's uid.
 *  2. Everything the child reads was prepared by the parent before the
 *     clone and is owned by the slot (plan, stack) until the box is reaped;
 *     the child only makes raw system calls (no malloc, no stdio, no locks,
 *     no errno), so the parent runs on without waiting for its exec.
 *  3. Each slot has its own cgroups, network and IPC namespaces, reused run
 *     after run: a slot holds one box at a time, and a box's whole tree is
 *     dead before its slot is reused (PID 1's exit ends the PID namespace);
 *     the IPC namespace is emptied before each spawn (ipcns_enter).
 *  4. The child is in the slot's cgroups before anything of the box runs,
 *     and no handler of quernd ever runs in it (signals blocked across the
 *     clone, reset before they are unblocked).
 *  5. The template's mounts are read-only and locked in every box (copied
 *     into the box's user namespace); files a run gets go in a tmpfs of the
 *     box's own on /quern, never in the shared template.
 */
#include "sandbox.h"

#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/sched.h>
#include <net/if.h>
#include <pthread.h>
#include <poll.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/file.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/resource.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

enum cg_ver { CG_NONE = 0, CG_V1 = 1, CG_V2 = 2 };

/* The cgroup files a spawn touches, kept open per slot (opened on first
 * use): a path walk per write was a large part of a spawn's cost. */
enum cg_file {
    CGF_MEM_PROCS, CGF_PIDS_PROCS, CGF_CPU_PROCS, CGF_CPU_USAGE, CGF_MEM_MAXUSE,
    CGF_MEM_EVENTS, CGF_MEM_LIMIT, CGF_PIDS_MAX, CGF_MEM_FAILCNT, CGF_N
};

struct slot_cg {
    char *mem_dir, *pids_dir, *cpu_dir;   /* NULL when that control is unavailable */
    int64_t mem_limit, pids_max;          /* last written values */
    int64_t cpu_base_ns, oom_base;
    int64_t mem_start;                    /* bytes the slot held as the run started, -1: unknown */
    int64_t hit_base;                     /* times the slot met its memory limit by then, -1 */
    int peak_fd;                          /* v2: memory.peak, reset per run */
    int fds[CGF_N];                       /* -1: not open yet; -2: cannot be */
};

struct plan;

/* What the child of a slot's last spawn may still be using: it shares our
 * memory until it execs, and the spawn does not wait for that; both live
 * until its box is reaped (or the slot's next spawn). */
struct slot_spawn {
    char *stack;                          /* mmap'd on the slot's first spawn */
    struct plan *pl;
    bool tpl;                             /* the box was made from the template */
};

enum ld_kind { LD_NONE, LD_LINK, LD_BIND };

struct layout_dir {
    enum ld_kind kind;
    char *target;                         /* LD_LINK */
    unsigned long lflags;                 /* LD_BIND */
    int err;                              /* LD_BIND: probing failed (-errno) */
};

/* Set once before any disk check (sandbox_sys_new): the test-only
 * QUERN_TEST_NO_PROC_CHILDREN makes the check act as on a kernel without
 * CONFIG_PROC_CHILDREN. */
static bool held_no_children;

struct sandbox_sys {
    int slots;
    sandbox_log_fn log;
    void *log_ctx;
    uid_t host_uid;
    int init_fd;                 /* quern-init, O_RDONLY|O_CLOEXEC */
    struct sock_fprog prog;      /* the compiled seccomp program */
    enum cg_ver mem_ver, pids_ver, cpu_ver;
    char *mem_base, *pids_base, *cpu_base;   /* our own quern-<pid> cgroup dirs */
    int cg_lock[4];              /* those dirs (v1 memory, pids, cpuacct; v2) open and
                                    flock'ed for our life, -1: see cg_reap_stale */
    struct slot_cg *cg;
    int *netns;                  /* per slot, -1 when none */
    int host_netns;
    int *netns_out;              /* per slot: with network, through slirp4netns; -1 until made */
    pid_t *slirp;                /* per slot: its slirp4netns, 0 when none */
    int *slirp_exit;             /* per slot: the write end of its --exit-fd pipe */
    bool slirp_said;             /* "network shares the host's namespace" logged once */
    int *ipcns;                  /* per slot, -1 when none (see ipcns_setup) */
    int *mqdir;                  /* per slot: its POSIX message queue directory */
    int host_ipcns;
    char *stack;                 /* the adopt helper's stack (CLONE_VM|CLONE_VFORK) */
    size_t stack_size;
    struct slot_spawn *sp;       /* per slot */
    struct layout_dir sysdir[8]; /* see layout_probe */
    bool dev_ok[4];
    /* The template mount namespace (see tpl_build): -1 not built yet,
     * -2 unusable (every spawn builds its whole tree). */
    int tpl_ns;
    char **tpl_dirs;             /* its empty mount points (box paths) */
    size_t ntpl_dirs;
    int host_mnt;                /* our own mount namespace */
    int cwd_fd;                  /* the spawning thread's cwd, restored after setns */
    pid_t fs_tid;                /* the thread that unshared its fs context */
    int self_pidfd;              /* quernd's own pidfd (CLOEXEC), -1: see child_main */
    int test_hold_rd, test_hold_wr;   /* QUERN_TEST_SPAWN_HOLD, test-only; -1 unset */
};

#define SPAWN_STACK_SIZE (64 * 1024)

static void plan_free(struct plan *pl);
static void layout_probe(struct sandbox_sys *sys);

static void slog(struct sandbox_sys *sys, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void slog(struct sandbox_sys *sys, const char *fmt, ...)
{
    struct buf b;
    buf_init(&b);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (sys->log)
        sys->log(sys->log_ctx, b.data);
    else
        fprintf(stderr, "quern sandbox: %s\n", b.data);
    buf_release(&b);
}

uid_t sandbox_host_uid(const struct sandbox_sys *sys)
{
    return sys->host_uid;
}

/* ---- small file helpers (parent side) ---- */

static int write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t n = strlen(s);
    ssize_t w = write(fd, s, n);
    int rc = w == (ssize_t)n ? 0 : (w < 0 ? -errno : -EIO);
    close(fd);
    return rc;
}

static int write_at(const char *dir, const char *file, const char *s)
{
    char *p = xasprintf("%s/%s", dir, file);
    int rc = write_file(p, s);
    free(p);
    return rc;
}

static int read_at(const char *dir, const char *file, char *out, size_t cap)
{
    char *p = xasprintf("%s/%s", dir, file);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    free(p);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, out, cap - 1);
    int e = errno;
    close(fd);
    if (n < 0)
        return -e;
    out[n] = '\0';
    return 0;
}

/* ---- cgroups ---- */

static int cg_fd(struct slot_cg *c, enum cg_file f, const char *dir, const char *file, int flags)
{
    if (c->fds[f] == -1) {
        char *p = xasprintf("%s/%s", dir, file);
        /* read-write where the file allows it: a file written before each
         * run (memory.max_usage_in_bytes) is read after it on the same fd */
        int fd = open(p, O_RDWR | O_CLOEXEC);
        if (fd < 0)
            fd = open(p, flags | O_CLOEXEC);
        free(p);
        c->fds[f] = fd >= 0 ? fd : -2;
    }
    return c->fds[f];
}

/* Writes v to the slot's cgroup file (kept open).  0 or -errno. */
static int cg_write(struct slot_cg *c, enum cg_file f, const char *dir, const char *file,
                    const char *v)
{
    int fd = cg_fd(c, f, dir, file, O_WRONLY);
    if (fd < 0)
        return write_at(dir, file, v);
    size_t n = strlen(v);
    ssize_t w = pwrite(fd, v, n, 0);
    return w == (ssize_t)n ? 0 : (w < 0 ? -errno : -EIO);
}

/* Reads the slot's cgroup file (kept open) into out, NUL-terminated. */
static int cg_read(struct slot_cg *c, enum cg_file f, const char *dir, const char *file,
                   char *out, size_t cap)
{
    int fd = cg_fd(c, f, dir, file, O_RDONLY);
    if (fd < 0)
        return read_at(dir, file, out, cap);
    ssize_t n = pread(fd, out, cap - 1, 0);
    if (n < 0)
        return -errno;
    out[n] = '\0';
    return 0;
}

static int64_t cg_read_i64(struct slot_cg *c, enum cg_file f, const char *dir, const char *file)
{
    char b[64];
    if (cg_read(c, f, dir, file, b, sizeof(b)) < 0)
        return -1;
    return strtoll(b, NULL, 10);
}

/* The value of "key N" in a flat-keyed cgroup file, or -1. */
static int64_t cg_read_key(struct slot_cg *c, enum cg_file f, const char *dir, const char *file,
                           const char *key)
{
    char b[4096];
    if (cg_read(c, f, dir, file, b, sizeof(b)) < 0)
        return -1;
    size_t kl = strlen(key);
    for (char *line = b; line && *line;) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ')
            return strtoll(line + kl + 1, NULL, 10);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}

/* Finds this process's cgroup path for a v1 controller, or for v2 (ctrl
 * NULL), from /proc/self/cgroup.  Returns malloc'd "hierarchy-field\tpath". */
static char *own_cgroup(const char *ctrl, char **field_out)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return NULL;
    char line[1024];
    char *res = NULL;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        if (!c1)
            continue;
        char *c2 = strchr(c1 + 1, ':');
        if (!c2)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1, *path = c2 + 1;
        bool match = false;
        if (!ctrl) {
            match = *ctrls == '\0';
        } else {
            char tmp[256];
            snprintf(tmp, sizeof(tmp), "%s", ctrls);
            char *save = NULL;
            for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save))
                if (strcmp(t, ctrl) == 0)
                    match = true;
        }
        if (match) {
            res = xstrdup(path);
            if (field_out)
                *field_out = xstrdup(ctrls);
            break;
        }
    }
    fclose(f);
    return res;
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Distinguishes the cgroups of several sandbox_sys in one process. */
static int sys_seq;

/* Whether pid is a live quernd: a pid reused by another program (pid_max
 * may be 32768) is not. */
static bool quernd_alive(int pid)
{
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return false;
    char p[64], comm[32] = "";
    snprintf(p, sizeof(p), "/proc/%d/comm", pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno != ENOENT;
    ssize_t n = read(fd, comm, sizeof(comm) - 1);
    close(fd);
    comm[n > 0 ? n : 0] = '\0';
    return strcmp(comm, "quernd\n") == 0;
}

/* Removes the stale cgroup dir name (open at fd) under pfd, its slot dirs
 * first; the boxes of a quernd that was killed die with it (their
 * PDEATHSIG), but may still be exiting: a slot that holds one is tried
 * again until `until` (mono ms). */
static void cg_rm_stale(int pfd, const char *name, int fd, int64_t until)
{
    int sfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    DIR *sd = sfd >= 0 ? fdopendir(sfd) : NULL;
    if (!sd) {
        if (sfd >= 0)
            close(sfd);
        return;
    }
    for (;;) {
        bool busy = false;
        struct dirent *c;
        rewinddir(sd);
        while ((c = readdir(sd)) != NULL)
            if (c->d_type == DT_DIR && strcmp(c->d_name, ".") && strcmp(c->d_name, "..") &&
                unlinkat(fd, c->d_name, AT_REMOVEDIR) < 0 && errno == EBUSY)
                busy = true;
        if (unlinkat(pfd, name, AT_REMOVEDIR) == 0 || !busy || mono_ms() >= until)
            break;
        usleep(10000);
    }
    closedir(sd);
}

/* Removes the cgroups under parent that a quernd which is gone left there
 * (a crash skips cg_teardown: each one left its quern-<pid>-<seq> and a
 * directory per slot, for good, three controllers over).  One is gone when
 * its directory's lock is free (its quernd holds a flock on it for its
 * life, whatever its PID namespace) and its pid is no live quernd (one of
 * an older version holds no lock).  rmdir never removes a cgroup that
 * holds a process. */
static void cg_reap_stale(const char *parent)
{
    DIR *d = opendir(parent);
    if (!d)
        return;
    int64_t until = mono_ms() + 2000;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int pid, seq, n = 0;
        if (sscanf(e->d_name, "quern-%d-%d%n", &pid, &seq, &n) != 2 || e->d_name[n] != '\0' ||
            pid <= 0 || pid == (int)getpid())
            continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 && !quernd_alive(pid))
            cg_rm_stale(dirfd(d), e->d_name, fd, until);
        close(fd);
    }
    closedir(d);
}

/* Opens our base cgroup dir and locks it for our life (cg_reap_stale): the
 * fd, or -1. */
static int cg_lock_base(const char *base)
{
    int fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Makes <mount>/<own path>/quern-<pid>-<seq> for a v1 controller; NULL if unusable. */
static char *cg_v1_base(const char *ctrl, int seq, int *lock)
{
    char *field = NULL;
    char *own = own_cgroup(ctrl, &field);
    if (!own)
        return NULL;
    char *mnt = xasprintf("/sys/fs/cgroup/%s", field);
    char *base = NULL;
    if (is_dir(mnt)) {
        char *parent = xasprintf("%s%s", mnt, strcmp(own, "/") == 0 ? "" : own);
        cg_reap_stale(parent);
        base = xasprintf("%s/quern-%d-%d", parent, (int)getpid(), seq);
        free(parent);
        if (mkdir(base, 0755) < 0 && errno != EEXIST) {
            free(base);
            base = NULL;
        } else {
            *lock = cg_lock_base(base);
        }
    }
    free(mnt);
    free(field);
    free(own);
    return base;
}

static char *cg_v2_mount(void)
{
    if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0)
        return xstrdup("/sys/fs/cgroup");
    if (access("/sys/fs/cgroup/unified/cgroup.controllers", F_OK) == 0)
        return xstrdup("/sys/fs/cgroup/unified");
    return NULL;
}

/* Makes the v2 base cgroup and enables what it can in it; *ctrls gets the
 * controllers available to the slots ("memory pids"...). */
static char *cg_v2_base(char *ctrls, size_t cap, int seq, int *lock)
{
    char *mnt = cg_v2_mount();
    if (!mnt)
        return NULL;
    char *own = own_cgroup(NULL, NULL);
    char *base = NULL;
    if (own) {
        char *owndir = xasprintf("%s%s", mnt, strcmp(own, "/") == 0 ? "" : own);
        cg_reap_stale(owndir);
        base = xasprintf("%s/quern-%d-%d", owndir, (int)getpid(), seq);
        if (mkdir(base, 0755) < 0 && errno != EEXIST) {
            free(base);
            base = NULL;
        } else {
            *lock = cg_lock_base(base);
            /* Delegation needs the controllers enabled on the way down; this
             * fails when our own cgroup holds processes (the no-internal-
             * process rule) unless it is the root, and then they stay off. */
            (void)write_at(owndir, "cgroup.subtree_control", "+memory");
            (void)write_at(owndir, "cgroup.subtree_control", "+pids");
            (void)write_at(base, "cgroup.subtree_control", "+memory");
            (void)write_at(base, "cgroup.subtree_control", "+pids");
            if (read_at(base, "cgroup.subtree_control", ctrls, cap) < 0)
                ctrls[0] = '\0';
        }
        free(owndir);
        free(own);
    }
    free(mnt);
    return base;
}

static void cg_setup(struct sandbox_sys *sys)
{
    char v2ctrls[256] = "";
    char *v2 = NULL;
    bool v2_tried = false;

    int seq = __atomic_fetch_add(&sys_seq, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 4; i++)
        sys->cg_lock[i] = -1;
    /* tests only: act as a host without a usable memory cgroup (or with
     * cgroup v2 before Linux 6.12, whose memory.peak cannot be reset) */
    bool no_mem = getenv("QUERN_TEST_NO_MEMORY_CGROUP") != NULL;
    sys->mem_base = no_mem ? NULL : cg_v1_base("memory", seq, &sys->cg_lock[0]);
    sys->pids_base = cg_v1_base("pids", seq, &sys->cg_lock[1]);
    sys->cpu_base = cg_v1_base("cpuacct", seq, &sys->cg_lock[2]);
    sys->mem_ver = sys->mem_base ? CG_V1 : CG_NONE;
    sys->pids_ver = sys->pids_base ? CG_V1 : CG_NONE;
    sys->cpu_ver = sys->cpu_base ? CG_V1 : CG_NONE;
    if (!sys->mem_base || !sys->pids_base || !sys->cpu_base) {
        v2 = cg_v2_base(v2ctrls, sizeof(v2ctrls), seq, &sys->cg_lock[3]);
        v2_tried = true;
    }
    if (v2) {
        if (!sys->mem_base && !no_mem && strstr(v2ctrls, "memory")) {
            sys->mem_base = xstrdup(v2);
            sys->mem_ver = CG_V2;
        }
        if (!sys->pids_base && strstr(v2ctrls, "pids")) {
            sys->pids_base = xstrdup(v2);
            sys->pids_ver = CG_V2;
        }
        if (!sys->cpu_base) { /* cpu.stat's usage_usec needs no controller */
            sys->cpu_base = xstrdup(v2);
            sys->cpu_ver = CG_V2;
        }
    }
    sys->cg = xcalloc((size_t)sys->slots, sizeof(*sys->cg));
    for (int i = 0; i < sys->slots; i++) {
        struct slot_cg *c = &sys->cg[i];
        c->peak_fd = -1;
        for (int f = 0; f < CGF_N; f++)
            c->fds[f] = -1;
        c->mem_limit = c->pids_max = -1;
        c->mem_start = c->hit_base = -1;
        char **dirs[3] = {&c->mem_dir, &c->pids_dir, &c->cpu_dir};
        const char *bases[3] = {sys->mem_base, sys->pids_base, sys->cpu_base};
        for (int k = 0; k < 3; k++) {
            if (!bases[k])
                continue;
            /* v2 uses one directory for all controls. */
            if (k > 0 && bases[k] == bases[0] && *dirs[0]) {
                *dirs[k] = xstrdup(*dirs[0]);
                continue;
            }
            char *d = xasprintf("%s/slot%d", bases[k], i);
            if (mkdir(d, 0755) < 0 && errno != EEXIST) {
                free(d);
                continue;
            }
            *dirs[k] = d;
        }
        if (c->mem_dir && sys->mem_ver == CG_V1)
            (void)write_at(c->mem_dir, "memory.swappiness", "0");
        if (c->mem_dir && sys->mem_ver == CG_V2) {
            char *p = xasprintf("%s/memory.peak", c->mem_dir);
            c->peak_fd = open(p, O_RDWR | O_CLOEXEC);
            free(p);
            (void)write_at(c->mem_dir, "memory.swap.max", "0");
        }
    }
    const char *vn[] = {"unavailable", "cgroup v1", "cgroup v2"};
    slog(sys, "cgroups: memory via %s, pids via %s, cpu accounting via %s%s",
         vn[sys->mem_ver], vn[sys->pids_ver], vn[sys->cpu_ver],
         v2_tried && !v2 ? " (no usable cgroup v2 either)" : "");
    if (!sys->mem_base)
        slog(sys, "memory limit unavailable: falling back to RLIMIT_AS (virtual memory) "
                  "and peak memory from rusage of the largest process");
    else if (sys->mem_ver == CG_V2 && sys->slots > 0 && sys->cg[0].mem_dir && sys->cg[0].peak_fd < 0)
        slog(sys, "memory.peak cannot be reset per run (Linux < 6.12): peak memory from "
                  "rusage of the largest process");
    if (!sys->pids_base)
        slog(sys, "pids limit unavailable: falling back to RLIMIT_NPROC on the shared sandbox uid");
    if (!sys->cpu_base)
        slog(sys, "cgroup CPU accounting unavailable: falling back to rusage of reaped children");
    free(v2);
}

static void cg_rm_tree(const char *base, int slots, bool shared)
{
    if (!base)
        return;
    for (int i = 0; i < slots && !shared; i++) {
        char *d = xasprintf("%s/slot%d", base, i);
        (void)rmdir(d);
        free(d);
    }
    (void)rmdir(base);
}

static void cg_teardown(struct sandbox_sys *sys)
{
    for (int i = 0; sys->cg && i < sys->slots; i++) {
        struct slot_cg *c = &sys->cg[i];
        if (c->peak_fd >= 0)
            close(c->peak_fd);
        for (int f = 0; f < CGF_N; f++)
            if (c->fds[f] >= 0)
                close(c->fds[f]);
        /* v2 dirs may be shared between controls: rmdir each once. */
        if (c->mem_dir)
            (void)rmdir(c->mem_dir);
        if (c->pids_dir)
            (void)rmdir(c->pids_dir);
        if (c->cpu_dir)
            (void)rmdir(c->cpu_dir);
        free(c->mem_dir);
        free(c->pids_dir);
        free(c->cpu_dir);
    }
    free(sys->cg);
    cg_rm_tree(sys->mem_base, sys->slots, true);
    cg_rm_tree(sys->pids_base, sys->slots, true);
    cg_rm_tree(sys->cpu_base, sys->slots, true);
    free(sys->mem_base);
    free(sys->pids_base);
    free(sys->cpu_base);
    for (int i = 0; i < 4; i++)
        if (sys->cg_lock[i] >= 0)
            close(sys->cg_lock[i]);
}

/* The slot's CPU time so far (ns), or -1. */
static int64_t cg_cpu_ns(struct sandbox_sys *sys, struct slot_cg *c)
{
    if (sys->cpu_ver == CG_V1)
        return cg_read_i64(c, CGF_CPU_USAGE, c->cpu_dir, "cpuacct.usage");
    int64_t us = cg_read_key(c, CGF_CPU_USAGE, c->cpu_dir, "cpu.stat", "usage_usec");
    return us >= 0 ? us * 1000 : -1;
}

/* v2: the slot's memory.peak as read through peak_fd (after a reset, the
 * peak since it, per open file), or -1. */
static int64_t cg_peak_v2(struct slot_cg *c)
{
    char b[64];
    if (c->peak_fd < 0)
        return -1;
    ssize_t n = pread(c->peak_fd, b, sizeof(b) - 1, 0);
    if (n <= 0)
        return -1;
    b[n] = '\0';
    return strtoll(b, NULL, 10);
}

/* Starts the slot's memory peak afresh for a box.  The kernel sets it to
 * what the slot holds now, which is kept as the run's baseline: page cache
 * that earlier runs read or wrote stays charged to the slot until it is
 * reclaimed, and a `sh -c 'exit 0'` after a python run reported its 40 MB.
 * Two preads more than the reset alone (the baseline, the limit count). */
static void cg_peak_start(struct sandbox_sys *sys, struct slot_cg *c)
{
    c->mem_start = c->hit_base = -1;
    if (sys->mem_ver == CG_V1) {
        if (cg_write(c, CGF_MEM_MAXUSE, c->mem_dir, "memory.max_usage_in_bytes", "0") == 0)
            c->mem_start = cg_read_i64(c, CGF_MEM_MAXUSE, c->mem_dir, "memory.max_usage_in_bytes");
        c->hit_base = cg_read_i64(c, CGF_MEM_FAILCNT, c->mem_dir, "memory.failcnt");
    } else if (c->peak_fd >= 0) {
        /* writable on Linux >= 6.12 only; before, peak_fd could not be opened */
        if (pwrite(c->peak_fd, "0", 1, 0) == 1)
            c->mem_start = cg_peak_v2(c);
        c->hit_base = cg_read_key(c, CGF_MEM_EVENTS, c->mem_dir, "memory.events", "max");
    }
}

/* Limits and counter baselines before a spawn: 0, or -errno when the
 * memory or pids limit could not be set (the slot keeps its last one: a
 * run asking for 64 MiB ran under the previous run's 1 GiB when the kernel
 * could not reclaim the slot's memory below 64 MiB, EBUSY).  fresh: a new
 * box, whose memory peak starts now; not for a warm box a run adopts, whose
 * interpreter's start-up is the run's as it would be on a cold start. */
static int cg_prepare(struct sandbox_sys *sys, int slot, const struct sandbox_params *p,
                      bool fresh)
{
    struct slot_cg *c = &sys->cg[slot];
    char v[32];
    int rc = 0, w;
    if (c->mem_dir) {
        int64_t lim = p->memory_limit_bytes > 0 ? p->memory_limit_bytes : -1;
        if (lim != c->mem_limit) {
            if (sys->mem_ver == CG_V1) {
                snprintf(v, sizeof(v), "%lld", lim > 0 ? (long long)lim : -1LL);
                w = cg_write(c, CGF_MEM_LIMIT, c->mem_dir, "memory.limit_in_bytes", v);
            } else {
                if (lim > 0)
                    snprintf(v, sizeof(v), "%lld", (long long)lim);
                else
                    snprintf(v, sizeof(v), "max");
                w = cg_write(c, CGF_MEM_LIMIT, c->mem_dir, "memory.max", v);
            }
            if (w == 0)
                c->mem_limit = lim;
            else
                rc = w;
        }
        if (fresh)
            cg_peak_start(sys, c);
        if (sys->mem_ver == CG_V1)
            c->oom_base = cg_read_key(c, CGF_MEM_EVENTS, c->mem_dir, "memory.oom_control", "oom_kill");
        else
            c->oom_base = cg_read_key(c, CGF_MEM_EVENTS, c->mem_dir, "memory.events", "oom_kill");
    }
    if (c->pids_dir) {
        int64_t mx = p->max_procs > 0 ? p->max_procs + 1 : -1; /* + quern-init */
        if (mx != c->pids_max) {
            if (mx > 0)
                snprintf(v, sizeof(v), "%lld", (long long)mx);
            else
                snprintf(v, sizeof(v), "max");
            w = cg_write(c, CGF_PIDS_MAX, c->pids_dir, "pids.max", v);
            if (w == 0)
                c->pids_max = mx;
            else if (rc == 0)
                rc = w;
        }
    }
    if (c->cpu_dir)
        c->cpu_base_ns = cg_cpu_ns(sys, c);
    return rc;
}

/* The slot's files the child writes "0" into to join its cgroups (kept
 * open); -errno when one cannot be opened.
 *
 * cgroup v1: the `tasks` file, which moves the writing thread alone; the box
 * is one thread then (before its exec), so it moves whole.  Through
 * `cgroup.procs` the kernel write-locks the global cgroup_threadgroup_rwsem,
 * which waits for every fork, exec and exit in progress on the host and,
 * when no move happened for a while, for a whole RCU grace period: measured
 * here at 18 ms for the first run after an idle pause (strace of the box's
 * write), the bulk of a cold `sh` run's start.  A thread moving itself
 * (pid 0 in `tasks`) skips that lock (Linux >= 6.0; older kernels take it
 * either way, no worse).  cgroup v2: a thread can move by itself only
 * inside a threaded subtree, so `cgroup.procs` stays. */
static int cg_join_fds(struct sandbox_sys *sys, int slot, int *fds, size_t *n)
{
    struct slot_cg *c = &sys->cg[slot];
    const char *dirs[3] = {c->mem_dir, c->pids_dir, c->cpu_dir};
    const enum cg_ver vers[3] = {sys->mem_ver, sys->pids_ver, sys->cpu_ver};
    static const enum cg_file procs[3] = {CGF_MEM_PROCS, CGF_PIDS_PROCS, CGF_CPU_PROCS};
    *n = 0;
    for (int k = 0; k < 3; k++) {
        if (!dirs[k])
            continue;
        bool dup = false;
        for (int j = 0; j < k; j++)
            if (dirs[j] && strcmp(dirs[j], dirs[k]) == 0)
                dup = true;
        if (dup)
            continue;
        int fd = cg_fd(c, procs[k], dirs[k], vers[k] == CG_V1 ? "tasks" : "cgroup.procs", O_WRONLY);
        if (fd < 0)
            return -EACCES;
        fds[(*n)++] = fd;
    }
    return 0;
}

/* ---- network namespace pool ---- */

static void *make_netns(void *arg)
{
    int *out = arg;
    *out = -1;
    if (unshare(CLONE_NEWNET) < 0)
        return NULL;
    /* Loopback up: code may use 127.0.0.1 inside its own box. */
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s >= 0) {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof(ifr));
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
        if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
            ifr.ifr_flags |= IFF_UP;
            (void)ioctl(s, SIOCSIFFLAGS, &ifr);
        }
        close(s);
    }
    *out = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    return NULL;
}

/* ---- network for runs that may have it ----
 *
 * A run whose task sets network gets a namespace of its own all the same:
 * the slot's second one, made on its first such run, with a slirp4netns
 * attached (user-mode NAT: a tap device, 10.0.2.100/24, outbound through
 * quernd's host).  Its --disable-host-loopback keeps the box off the
 * host's 127.0.0.1 (quernd's API, a local database); the box reaches what
 * any machine on the host's network reaches.  Reused run after run as the
 * empty one is (a box's sockets die with it).  slirp4netns ends when quernd
 * does (--exit-fd).  Without slirp4netns (or /dev/net/tun), such runs share
 * the host's namespace, and the log says so once. */

#define SLIRP_PATH "/usr/bin/slirp4netns"

static void slirp_stop(struct sandbox_sys *sys, int slot)
{
    if (sys->slirp_exit[slot] >= 0)
        close(sys->slirp_exit[slot]);   /* slirp4netns exits on its --exit-fd's EOF */
    sys->slirp_exit[slot] = -1;
    if (sys->slirp[slot] > 0) {
        kill(sys->slirp[slot], SIGTERM);
        while (waitpid(sys->slirp[slot], NULL, 0) < 0 && errno == EINTR)
            ;
    }
    sys->slirp[slot] = 0;
    if (sys->netns_out[slot] >= 0)
        close(sys->netns_out[slot]);
    sys->netns_out[slot] = -1;
}

/* Starts slirp4netns on the namespace nsfd; 0, or -1 with *why. */
/* slirp4netns is spawned from a thread of its own, in a copy of quernd's
 * mount namespace where every mount is private.  Its --enable-sandbox
 * pivots into a tmpfs and detaches the old root in a mount namespace made
 * private only at its top: the detach reached the host's shared mounts
 * below it, and every network namespace named by `ip netns` (the bind
 * mounts under /run/netns) was unmounted on the host by a run with network. */
struct slirp_spawn {
    const posix_spawn_file_actions_t *fa;
    const posix_spawnattr_t *at;
    char **argv, **envp;
    pid_t pid;
    int err;
};

static void *slirp_spawn_thread(void *arg)
{
    struct slirp_spawn *s = arg;
    if (unshare(CLONE_FS | CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        s->err = errno;
    else
        s->err = posix_spawn(&s->pid, SLIRP_PATH, s->fa, s->at, s->argv, s->envp);
    return NULL;
}

static int slirp_start(struct sandbox_sys *sys, int slot, int nsfd, char **why)
{
    int rdy[2] = {-1, -1}, ex[2] = {-1, -1}, hi[3] = {-1, -1, -1};
    int rc = -1;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    if (pipe2(rdy, O_CLOEXEC) || pipe2(ex, O_CLOEXEC)) {
        *why = xasprintf("pipe: %s", strerror(errno));
        goto out;
    }
    /* above 5, so that each dup2 below makes a new fd (and clears CLOEXEC) */
    int src[3] = {nsfd, rdy[1], ex[0]};
    for (int i = 0; i < 3; i++)
        if ((hi[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 10)) < 0) {
            *why = xasprintf("dup: %s", strerror(errno));
            goto out;
        }
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    for (int i = 0; i < 3; i++)
        posix_spawn_file_actions_adddup2(&fa, hi[i], 3 + i);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
                    "--enable-sandbox", "--enable-seccomp", "--ready-fd=4", "--exit-fd=5",
                    "--netns-type=path", "/proc/self/fd/3", "tap0", NULL};
    char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};   /* none of quernd's */
    struct slirp_spawn sp = {&fa, &at, argv, envp, 0, 0};
    pthread_t th;
    int e = pthread_create(&th, NULL, slirp_spawn_thread, &sp);
    if (!e) {
        pthread_join(th, NULL);
        e = sp.err;
    }
    pid_t pid = sp.pid;
    if (e) {
        *why = xasprintf("%s: %s", SLIRP_PATH, strerror(e));
        goto out;
    }
    close(rdy[1]);
    rdy[1] = -1;
    close(ex[0]);
    ex[0] = -1;
    /* ready ("1" on --ready-fd) once tap0 is configured */
    struct pollfd pf = {rdy[0], POLLIN, 0};
    char c = 0;
    int n = poll(&pf, 1, 10000);
    if (n <= 0 || read(rdy[0], &c, 1) != 1 || c != '1') {
        *why = xstrdup(n == 0 ? "slirp4netns was not ready within 10 s"
                              : "slirp4netns ended before it was ready (is /dev/net/tun there?)");
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        goto out;
    }
    sys->slirp[slot] = pid;
    sys->slirp_exit[slot] = ex[1];
    ex[1] = -1;
    rc = 0;
out:
    for (int i = 0; i < 2; i++) {
        if (rdy[i] >= 0)
            close(rdy[i]);
        if (ex[i] >= 0)
            close(ex[i]);
    }
    for (int i = 0; i < 3; i++)
        if (hi[i] >= 0)
            close(hi[i]);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    return rc;
}

/* Reaps the slirp4netns of any slot that has ended (killed, crashed): it
 * stayed a zombie until a run with network came to its own slot, which
 * may be never (the next such run took another slot).  The slot's
 * namespace is made again by its next run with network (netns_out_get). */
static void slirp_reap_dead(struct sandbox_sys *sys)
{
    for (int i = 0; sys->slirp && i < sys->slots; i++)
        if (sys->slirp[i] > 0 && waitpid(sys->slirp[i], NULL, WNOHANG) == sys->slirp[i])
            sys->slirp[i] = 0;
}

/* The slot's namespace for a run with network, made (or made again, if its
 * slirp4netns is gone) now; -1 when there can be none. */
static int netns_out_get(struct sandbox_sys *sys, int slot)
{
    if (sys->netns_out[slot] >= 0) {
        pid_t w = sys->slirp[slot] > 0 ? waitpid(sys->slirp[slot], NULL, WNOHANG) : -1;
        if (w == 0)
            return sys->netns_out[slot];   /* alive */
        sys->slirp[slot] = 0;   /* reaped (or not ours): no kill of a pid that may be reused */
        slog(sys, "slot %d: slirp4netns ended; starting another", slot);
        slirp_stop(sys, slot);
    }
    char *why = NULL;
    int ns = -1;
    pthread_t t;
    if (access(SLIRP_PATH, X_OK) != 0) {
        why = xstrdup(SLIRP_PATH " is not installed (make deps installs it)");
    } else if (pthread_create(&t, NULL, make_netns, &ns) == 0) {
        pthread_join(t, NULL);
        if (ns < 0)
            why = xstrdup("no network namespace could be made");
    } else {
        why = xstrdup("no thread to make a network namespace");
    }
    if (!why && slirp_start(sys, slot, ns, &why) == 0) {
        sys->netns_out[slot] = ns;
        return ns;
    }
    if (ns >= 0)
        close(ns);
    if (!sys->slirp_said)
        slog(sys, "runs with network share the host's network namespace (its loopback "
                  "included): %s", why ? why : "slirp4netns failed");
    sys->slirp_said = true;
    free(why);
    return -1;
}

static void netns_setup(struct sandbox_sys *sys)
{
    sys->netns_out = xcalloc((size_t)sys->slots, sizeof(int));
    sys->slirp = xcalloc((size_t)sys->slots, sizeof(pid_t));
    sys->slirp_exit = xcalloc((size_t)sys->slots, sizeof(int));
    for (int i = 0; i < sys->slots; i++)
        sys->netns_out[i] = sys->slirp_exit[i] = -1;
    sys->netns = xcalloc((size_t)sys->slots, sizeof(int));
    sys->host_netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    int made = 0;
    for (int i = 0; i < sys->slots; i++) {
        pthread_t t;
        sys->netns[i] = -1;
        if (pthread_create(&t, NULL, make_netns, &sys->netns[i]) == 0)
            pthread_join(t, NULL);
        if (sys->netns[i] >= 0)
            made++;
    }
    if (made < sys->slots || sys->host_netns < 0)
        slog(sys, "network namespace pool: only %d of %d made; runs in the other slots "
                  "get a fresh network namespace each (slower)", made, sys->slots);
}

/* ---- IPC namespace pool ----
 *
 * Creating an IPC namespace per box was a tenth of the supervisor's time per
 * spawn (copy_ipcs: an mqueue superblock and the IPC sysctl tables) and its
 * teardown as much again in a kworker (free_ipc).  As for the network
 * namespace, each slot has one, made once, that its boxes get in turn: a
 * slot holds one box at a time and the box's whole tree is dead before the
 * next spawn (invariant 3), and that spawn first empties the namespace:
 * System V shared memory, message queues and semaphore sets are removed, so
 * are the POSIX message queues (through a detached mount of the
 * namespace's mqueue file system kept per slot).  Those are all the objects
 * an IPC namespace holds; its sysctls belong to host root (the namespace is
 * owned by the initial user namespace), so a box can neither change them
 * nor leave anything there.  When a slot has no namespace, or emptying one
 * fails, the spawn makes a fresh one (CLONE_NEWIPC) as before. */

#define Q_FSOPEN_CLOEXEC 0x1
#define Q_FSCONFIG_CMD_CREATE 6
#define Q_FSMOUNT_CLOEXEC 0x1

struct ipcns_job {
    int ns, mq;
};

static void *make_ipcns(void *arg)
{
    struct ipcns_job *j = arg;
    j->ns = j->mq = -1;
    if (unshare(CLONE_NEWIPC) < 0)
        return NULL;
    int ns = open("/proc/thread-self/ns/ipc", O_RDONLY | O_CLOEXEC);
    int fc = (int)syscall(SYS_fsopen, "mqueue", Q_FSOPEN_CLOEXEC);
    int mnt = -1, dir = -1;
    if (fc >= 0 && syscall(SYS_fsconfig, fc, Q_FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0)
        mnt = (int)syscall(SYS_fsmount, fc, Q_FSMOUNT_CLOEXEC,
                           MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    if (mnt >= 0)
        dir = openat(mnt, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fc >= 0)
        close(fc);
    if (mnt >= 0)
        close(mnt);   /* the open directory keeps the mount */
    if (ns >= 0 && dir >= 0) {
        j->ns = ns;
        j->mq = dir;
    } else {
        if (ns >= 0)
            close(ns);
        if (dir >= 0)
            close(dir);
    }
    return NULL;
}

static void ipcns_setup(struct sandbox_sys *sys)
{
    sys->ipcns = xcalloc((size_t)sys->slots, sizeof(int));
    sys->mqdir = xcalloc((size_t)sys->slots, sizeof(int));
    sys->host_ipcns = open("/proc/self/ns/ipc", O_RDONLY | O_CLOEXEC);
    int made = 0;
    for (int i = 0; i < sys->slots; i++) {
        struct ipcns_job j = {-1, -1};
        pthread_t t;
        if (sys->host_ipcns >= 0 && pthread_create(&t, NULL, make_ipcns, &j) == 0)
            pthread_join(t, NULL);
        sys->ipcns[i] = j.ns;
        sys->mqdir[i] = j.mq;
        if (j.ns >= 0)
            made++;
    }
    if (made < sys->slots)
        slog(sys, "IPC namespace pool: only %d of %d made; runs in the other slots get a "
                  "fresh IPC namespace each (slower)", made, sys->slots);
}

static void ipcns_drop(struct sandbox_sys *sys, int slot)
{
    if (sys->ipcns[slot] >= 0)
        close(sys->ipcns[slot]);
    if (sys->mqdir[slot] >= 0)
        close(sys->mqdir[slot]);
    sys->ipcns[slot] = sys->mqdir[slot] = -1;
}

/* Removes every System V object of the caller's IPC namespace; 0, or
 * -errno (some could not be removed). */
static int ipc_sysv_clear(void)
{
    struct shm_info si;
    int max = shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&si);
    if (max < 0)
        return -errno;
    for (int i = 0; si.used_ids > 0 && i <= max; i++) {
        struct shmid_ds ds;
        int id = shmctl(i, SHM_STAT, &ds);
        if (id >= 0)
            (void)shmctl(id, IPC_RMID, NULL);
    }
    if (si.used_ids > 0 && (shmctl(0, SHM_INFO, (struct shmid_ds *)(void *)&si) < 0 || si.used_ids))
        return -ENOTEMPTY;

    struct msginfo mi;
    max = msgctl(0, MSG_INFO, (struct msqid_ds *)(void *)&mi);
    if (max < 0)
        return -errno;
    /* with MSG_INFO, msgpool is the number of queues */
    for (int i = 0; mi.msgpool > 0 && i <= max; i++) {
        struct msqid_ds ds;
        int id = msgctl(i, MSG_STAT, &ds);
        if (id >= 0)
            (void)msgctl(id, IPC_RMID, NULL);
    }
    if (mi.msgpool > 0 && (msgctl(0, MSG_INFO, (struct msqid_ds *)(void *)&mi) < 0 || mi.msgpool))
        return -ENOTEMPTY;

    union {
        int val;
        struct semid_ds *buf;
        unsigned short *array;
        struct seminfo *info;
    } arg;
    struct seminfo sm;
    arg.info = &sm;
    max = semctl(0, 0, SEM_INFO, arg);
    if (max < 0)
        return -errno;
    /* with SEM_INFO, semusz is the number of sets */
    for (int i = 0; sm.semusz > 0 && i <= max; i++) {
        struct semid_ds ds;
        arg.buf = &ds;
        int id = semctl(i, 0, SEM_STAT, arg);
        if (id >= 0)
            (void)semctl(id, 0, IPC_RMID);
    }
    arg.info = &sm;
    if (sm.semusz > 0 && (semctl(0, 0, SEM_INFO, arg) < 0 || sm.semusz))
        return -ENOTEMPTY;
    return 0;
}

/* Removes every POSIX message queue of the directory; 0 or -errno. */
static int ipc_mq_clear(int dir)
{
    char b[4096];
    bool removed = false;
    for (int pass = 0; pass < 2; pass++) {
        if (lseek(dir, 0, SEEK_SET) < 0)
            return -errno;
        for (;;) {
            long n = syscall(SYS_getdents64, dir, b, sizeof(b));
            if (n < 0)
                return -errno;
            if (n == 0)
                break;
            for (long off = 0; off < n;) {
                struct dirent64 *d = (struct dirent64 *)(void *)(b + off);
                off += d->d_reclen;
                if (strcmp(d->d_name, ".") && strcmp(d->d_name, "..")) {
                    if (pass == 1)
                        return -ENOTEMPTY;   /* removed, yet still there */
                    if (unlinkat(dir, d->d_name, 0) < 0)
                        return -errno;
                    removed = true;
                }
            }
        }
        if (!removed)
            return 0;
    }
    return 0;
}

/* Enters the slot's IPC namespace, emptied (see above): true, or false
 * when the spawn must make a fresh one (the caller's namespace unchanged). */
/* Enters the slot's IPC namespace and empties it: 0, or -errno (entered
 * or not: the caller goes back to the host's). */
static int ipcns_clear_in(struct sandbox_sys *sys, int slot)
{
    int rc = setns(sys->ipcns[slot], CLONE_NEWIPC) < 0 ? -errno : 0;
    if (rc == 0 && (rc = ipc_sysv_clear()) == 0)
        rc = ipc_mq_clear(sys->mqdir[slot]);
    return rc;
}

static bool ipcns_enter(struct sandbox_sys *sys, int slot)
{
    if (sys->ipcns[slot] < 0 || sys->host_ipcns < 0)
        return false;
    int rc = ipcns_clear_in(sys, slot);
    if (rc == 0)
        return true;
    /* the supervisor thread must not stay in a box's namespace */
    if (setns(sys->host_ipcns, CLONE_NEWIPC) < 0)
        die_invariant("setns back to the host's IPC namespace");
    slog(sys, "IPC namespace of slot %d could not be emptied (%s): its runs get a fresh one "
              "each from now on", slot, strerror(-rc));
    ipcns_drop(sys, slot);
    return false;
}

/* Empties the slot's IPC namespace once its box is dead, so that nothing a
 * run made outlives it: a shared memory segment pins its RAM, and message
 * queue bytes count against host root's RLIMIT_MSGQUEUE, until the slot's
 * next spawn would have emptied them (a warm or idle slot may wait long).
 * A failure is left to that spawn, which reports it. */
static void ipcns_empty(struct sandbox_sys *sys, int slot)
{
    if (sys->ipcns[slot] < 0 || sys->host_ipcns < 0)
        return;
    (void)ipcns_clear_in(sys, slot);
    /* the supervisor thread must not stay in a box's namespace */
    if (setns(sys->host_ipcns, CLONE_NEWIPC) < 0)
        die_invariant("setns back to the host's IPC namespace");
}

/* ---- seccomp ---- */

static int seccomp_build(struct sandbox_sys *sys, char **err)
{
    static const char *const deny[] = {
        "mount", "umount2", "pivot_root", "chroot", "ptrace", "process_vm_readv",
        "process_vm_writev", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
        "io_uring_setup", "io_uring_enter", "io_uring_register", "init_module",
        "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
        "swapon", "swapoff", "unshare", "setns", "acct", "userfaultfd",
        "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "syslog",
        "quotactl", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
        "open_tree", "mount_setattr", "vhangup", "iopl", "ioperm", "uselib",
        "kcmp", "pidfd_getfd", "settimeofday", "clock_settime", "clock_adjtime",
        "adjtimex", "nfsservctl", "fanotify_init",
    };
    int rc = 0;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        *err = xstrdup("seccomp_init failed");
        return -ENOMEM;
    }
    for (size_t i = 0; i < ARRAY_LEN(deny); i++) {
        int nr = seccomp_syscall_resolve_name(deny[i]);
        if (nr == __NR_SCMP_ERROR)
            continue;
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
        if (rc < 0)
            goto out;
    }
    /* Newer than what libseccomp may know (2.5.4 resolves none of these
     * names, and a name it cannot resolve was skipped above): by number,
     * one table for every architecture since Linux 5.1.  open_tree_attr
     * (6.15) is open_tree with mount_setattr's attributes: a box cloned
     * its read-only /quern with it and wrote into the clone. */
#if defined(__x86_64__) || defined(__aarch64__)
    static const struct {
        const char *name;
        int nr;
    } deny_nr[] = {{"open_tree_attr", 467}};
    for (size_t i = 0; i < ARRAY_LEN(deny_nr); i++) {
        int nr = seccomp_syscall_resolve_name(deny_nr[i].name);
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr == __NR_SCMP_ERROR ? deny_nr[i].nr : nr,
                              0);
        if (rc < 0)
            goto out;
    }
#endif
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (rc < 0)
        goto out;
    static const uint64_t nsbits[] = {CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET,
                                      CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWCGROUP};
    for (size_t i = 0; i < ARRAY_LEN(nsbits); i++) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, nsbits[i], nsbits[i]));
        if (rc < 0)
            goto out;
    }
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                          SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffULL, TIOCSTI));
    if (rc < 0)
        goto out;
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                          SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffULL, TIOCLINUX));
    if (rc < 0)
        goto out;
    /* We set no_new_privs ourselves, just before loading. */
    rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    if (rc < 0)
        goto out;
    /* A binary tree of syscall numbers instead of a list: every box pays
     * the kernel's emulation of the filter for each syscall number when it
     * loads it (the seccomp action cache), and its code pays it per call. */
    (void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);

    int mfd = memfd_create("quern-seccomp", MFD_CLOEXEC);
    if (mfd < 0) {
        rc = -errno;
        goto out;
    }
    rc = seccomp_export_bpf(ctx, mfd);
    if (rc == 0) {
        off_t len = lseek(mfd, 0, SEEK_END);
        if (len <= 0 || len % (off_t)sizeof(struct sock_filter) != 0) {
            rc = -EINVAL;
        } else {
            struct sock_filter *f = xmalloc((size_t)len);
            if (pread(mfd, f, (size_t)len, 0) != len) {
                free(f);
                rc = -EIO;
            } else {
                sys->prog.filter = f;
                sys->prog.len = (unsigned short)(len / (off_t)sizeof(struct sock_filter));
            }
        }
    }
    close(mfd);
out:
    if (rc < 0 && !*err)
        *err = xasprintf("building the seccomp filter: %s", strerror(-rc));
    seccomp_release(ctx);
    return rc;
}

/* ---- sys ---- */

/* A copy of quern-init (open at fd) that the box can execute but not read:
 * a memfd owned by host root, mode 0111, sealed.  Exec of a file its caller
 * cannot read makes the process non-dumpable with its mm owned by the
 * host's user namespace (the kernel's would_dump), so the box's root, whose
 * capabilities hold only in the box's namespace, cannot open /proc/1/mem.
 * With the file itself (mode 0755) it could: code wrote "X 0" into its
 * init's text through /proc/1/mem and a run that exited 3 was completed.
 * A read-only fd of the copy, or -errno. */
static int init_unreadable_copy(int fd)
{
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
    int rc = 0, ro = -1;
    int mfd = memfd_create("quern-init", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
    if (mfd < 0 && errno == EINVAL)   /* a kernel before 6.3: no MFD_EXEC */
        mfd = memfd_create("quern-init", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (mfd < 0) {
        rc = -errno;
        goto out;
    }
    if ((rc = fd_copy(fd, mfd)))
        goto out;
    if (fchmod(mfd, 0111) < 0 ||
        fcntl(mfd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
        rc = -errno;
        goto out;
    }
    /* exec refuses a file open for writing (ETXTBSY): keep a read-only fd */
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
    ro = open(path, O_RDONLY | O_CLOEXEC);
    if (ro < 0)
        rc = -errno;
out:
    if (mfd >= 0)
        close(mfd);
    return rc < 0 ? rc : ro;
}

/* Whether the copy can be executed here: quern-init run with no command
 * exits 127 at once.  The test-only QUERN_TEST_INIT_COPY_REFUSED makes it
 * answer no, as a host refusing to execute memfds would. */
static bool init_copy_runs(int fd)
{
    if (getenv("QUERN_TEST_INIT_COPY_REFUSED"))
        return false;
    pid_t pid = fork();
    if (pid < 0)
        return true;   /* cannot tell: keep the copy, as before the check */
    if (pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        for (int i = 0; i <= 4; i++)
            if (nul >= 0 && nul != i)
                dup2(nul, i);
        char *argv[] = {(char *)"quern-init", NULL}, *envp[] = {NULL};
        fexecve(fd, argv, envp);
        _exit(126);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return true;
    return WIFEXITED(st) && WEXITSTATUS(st) == 127;
}

struct sandbox_sys *sandbox_sys_new(int slots, const char *init_path, sandbox_log_fn log,
                                    void *log_ctx, char **err)
{
    *err = NULL;
    if (slots < 1 || slots > 4096) {
        *err = xstrdup("bad slot count");
        return NULL;
    }
    struct sandbox_sys *sys = xcalloc(1, sizeof(*sys));
    sys->slots = slots;
    sys->log = log;
    sys->log_ctx = log_ctx;
    sys->host_uid = SANDBOX_DEFAULT_HOST_UID;
    sys->host_netns = -1;
    sys->host_ipcns = -1;
    const char *u = getenv("QUERN_SANDBOX_UID");
    int64_t uv;
    if (u && parse_i64(u, &uv) == 0 && uv > 0 && uv < 0x7fffffff)
        sys->host_uid = (uid_t)uv;
    if (geteuid() != 0) {
        *err = xstrdup("the sandbox needs quernd to run as root (to map the box's uid "
                       "to an unprivileged host uid and to manage cgroups)");
        goto fail;
    }
    sys->init_fd = open(init_path, O_RDONLY | O_CLOEXEC);
    if (sys->init_fd < 0) {
        *err = xasprintf("cannot open quern-init at %s: %s", init_path, strerror(errno));
        goto fail;
    }
    int copy = init_unreadable_copy(sys->init_fd);
    if (copy >= 0 && !init_copy_runs(copy)) {
        /* a security module or vm.memfd_noexec may refuse to execute a
         * memfd: every box would fail to start; run the file itself */
        close(copy);
        copy = -EACCES;
    }
    if (copy >= 0) {
        close(sys->init_fd);
        sys->init_fd = copy;
    } else {
        slog(sys, "quern-init could not be copied out of the boxes' reach (%s): box code can "
                  "write its init's memory through /proc/1/mem", strerror(-copy));
    }
    if (seccomp_build(sys, err) < 0)
        goto fail;
    sys->stack_size = 256 * 1024;
    sys->stack = mmap(NULL, sys->stack_size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (sys->stack == MAP_FAILED) {
        sys->stack = NULL;
        *err = xasprintf("mmap of the spawn stack: %s", strerror(errno));
        goto fail;
    }
    (void)mprotect(sys->stack, 4096, PROT_NONE); /* a guard page */
    sys->sp = xcalloc((size_t)slots, sizeof(*sys->sp));
    sys->tpl_ns = -1;
    sys->cwd_fd = -1;
    /* quernd's own pidfd: a box child checks it after PR_SET_PDEATHSIG
     * (child_main).  Without pidfd_open (Linux < 5.3) the check is skipped. */
    sys->self_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (sys->self_pidfd < 0)
        sys->self_pidfd = -1;
    /* Test-only (tests/integration/test_crash.py): QUERN_TEST_SPAWN_HOLD
     * "R,W" names two fds quernd inherited; every box child, right after
     * its sync byte, writes a byte to W and waits until R reads (or hits
     * end of file), so a test can kill quernd inside the box's set-up. */
    sys->test_hold_rd = sys->test_hold_wr = -1;
    const char *hold = getenv("QUERN_TEST_SPAWN_HOLD");
    int hr, hw;
    if (hold && sscanf(hold, "%d,%d", &hr, &hw) == 2 && hr > 2 && hw > 2) {
        sys->test_hold_rd = hr;
        sys->test_hold_wr = hw;
    }
    held_no_children = getenv("QUERN_TEST_NO_PROC_CHILDREN") != NULL;
    sys->host_mnt = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    layout_probe(sys);
    cg_setup(sys);
    netns_setup(sys);
    ipcns_setup(sys);
    return sys;
fail:
    if (sys->init_fd > 0)
        close(sys->init_fd);
    free(sys->prog.filter);
    free(sys);
    return NULL;
}

void sandbox_sys_free(struct sandbox_sys *sys)
{
    if (!sys)
        return;
    cg_teardown(sys);
    for (int i = 0; sys->netns && i < sys->slots; i++)
        if (sys->netns[i] >= 0)
            close(sys->netns[i]);
    free(sys->netns);
    for (int i = 0; sys->netns_out && i < sys->slots; i++)
        slirp_stop(sys, i);
    free(sys->netns_out);
    free(sys->slirp);
    free(sys->slirp_exit);
    if (sys->host_netns >= 0)
        close(sys->host_netns);
    for (int i = 0; sys->ipcns && i < sys->slots; i++)
        ipcns_drop(sys, i);
    free(sys->ipcns);
    free(sys->mqdir);
    if (sys->host_ipcns >= 0)
        close(sys->host_ipcns);
    close(sys->init_fd);
    if (sys->self_pidfd >= 0)
        close(sys->self_pidfd);
    free(sys->prog.filter);
    if (sys->stack)
        munmap(sys->stack, sys->stack_size);
    for (int i = 0; sys->sp && i < sys->slots; i++) {
        plan_free(sys->sp[i].pl);
        if (sys->sp[i].stack)
            munmap(sys->sp[i].stack, SPAWN_STACK_SIZE);
    }
    free(sys->sp);
    if (sys->tpl_ns >= 0)
        close(sys->tpl_ns);
    if (sys->host_mnt >= 0)
        close(sys->host_mnt);
    if (sys->cwd_fd >= 0)
        close(sys->cwd_fd);
    for (size_t i = 0; i < sys->ntpl_dirs; i++)
        free(sys->tpl_dirs[i]);
    free(sys->tpl_dirs);
    for (size_t i = 0; i < ARRAY_LEN(sys->sysdir); i++)
        free(sys->sysdir[i].target);
    free(sys);
}

/* ---- the child ---- */

/*
 * Raw system calls for the spawn child.  The child shares quernd's memory and
 * (without CLONE_SETTLS) the thread-local storage of the thread that cloned
 * it.  A spawn does not wait for the child's exec, so that thread runs on
 * meanwhile: a glibc wrapper in the child would write errno into that
 * thread's TLS under its feet.  The child therefore makes every system call
 * through rsys(), which returns -errno and writes nothing but the child's
 * own stack and plan.  Where no such helper exists for the architecture,
 * spawns wait for the exec as before (SANDBOX_ASYNC_SPAWN 0).
 */
#if defined(__x86_64__)
#define SANDBOX_ASYNC_SPAWN 1
static inline long rsys6(long n, long a, long b, long c, long d, long e, long f)
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
#elif defined(__aarch64__)
#define SANDBOX_ASYNC_SPAWN 1
static inline long rsys6(long n, long a, long b, long c, long d, long e, long f)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory", "cc");
    return x0;
}
#else
#define SANDBOX_ASYNC_SPAWN 0
static long rsys6(long n, long a, long b, long c, long d, long e, long f)
{
    long r = syscall(n, a, b, c, d, e, f);
    return r < 0 ? -errno : r;
}
#endif
#define RSYS_L(x) ((long)(x))
#define rsys0(n) rsys6((n), 0, 0, 0, 0, 0, 0)
#define rsys1(n, a) rsys6((n), RSYS_L(a), 0, 0, 0, 0, 0)
#define rsys2(n, a, b) rsys6((n), RSYS_L(a), RSYS_L(b), 0, 0, 0, 0)
#define rsys3(n, a, b, c) rsys6((n), RSYS_L(a), RSYS_L(b), RSYS_L(c), 0, 0, 0)
#define rsys4(n, a, b, c, d) rsys6((n), RSYS_L(a), RSYS_L(b), RSYS_L(c), RSYS_L(d), 0, 0)
#define rsys5(n, a, b, c, d, e) rsys6((n), RSYS_L(a), RSYS_L(b), RSYS_L(c), RSYS_L(d), RSYS_L(e), 0)

/* The child's code runs without sanitizer instrumentation: their runtimes
 * keep per-thread state too. */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 8)
#define CHILD_CODE __attribute__((no_sanitize("address", "undefined"), noinline))
#else
#define CHILD_CODE __attribute__((noinline))
#endif

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#define MOUNT_ATTR_NODEV 0x00000004
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif

struct mount_attr_k {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

/* The kernel's struct sigaction (x86_64 and arm64 have sa_restorer). */
struct ksigaction {
    unsigned long handler, flags, restorer;
    uint64_t mask;
};

/* OP_BIND moves a tree the parent cut (src_fds[len]); OP_BINDIN binds a
 * directory of the box's own tree (src) onto dst; OP_CHMOD sets a mode the
 * umask would cut. */
enum op_kind { OP_MKDIR, OP_SYMLINK, OP_TOUCH, OP_MOUNT, OP_REMOUNT, OP_WRITE, OP_BIND, OP_BINDIN,
               OP_CHMOD };

struct op {
    enum op_kind kind;
    const char *src, *dst, *fstype, *data;
    unsigned long flags;
    size_t len;
    mode_t mode;
};

#define MAX_OPS 320 /* the fixed layout, a dozen mounts, 100 secrets (EXEC_MAX_SECRETS) */
#define BOX_MSGQUEUE_BYTES (128 * 1024) /* one queue of the default 10 x 8 KiB */
#define BOX_SIGPENDING 4096
#define MAX_FDS 24

struct plan {
    struct op ops[MAX_OPS];
    size_t nops;
    /* Bind sources, opened by the child (child_main step 1): a detached
     * copy of the mount (open_tree), made nosuid/nodev (and read-only)
     * with mount_setattr and moved into place by OP_BIND; on kernels
     * without those calls, an O_PATH fd bound through /proc/self/fd/N and
     * remounted with src_remount. */
    const char *src_paths[MAX_FDS];
    int src_fds[MAX_FDS];
    bool src_rec[MAX_FDS];            /* with the mounts below it */
    uint64_t src_attr[MAX_FDS];       /* MOUNT_ATTR_* to set; 0: none */
    unsigned long src_remount[MAX_FDS]; /* the legacy remount's flags; 0: none */
    bool legacy;                      /* no open_tree: O_PATH fds */
    bool tpl;                         /* the root is the template's (see tpl_build) */
    int cg_procs[3];                  /* the files joining the slot's cgroups (cg_join_fds) */
    size_t ncg;
    int parent_trees[MAX_FDS];        /* tpl: the parent's copies of src_fds, closed after the clone */
    bool legacy_attr;                 /* no mount_setattr: remount after the move */
    bool ops_full;                    /* an op did not fit in ops[]: the spawn fails */
    size_t nsrc;
    char fdpaths[MAX_FDS][32];
    int sync_fd, sync_wr, status_fd;
    int fd_in, fd_out, fd_err, fd_ctl, init_fd, fd_go, exec_wr;
    int self_pidfd;                   /* quernd's pidfd: is it alive (see child_main) */
    int test_hold_rd, test_hold_wr;   /* test-only pause (see sandbox_sys_new) */
    const char *cwd;
    char root_opts[96];
    const char *const *argv, *const *envp;
    struct rlimit rl_fsize, rl_nofile, rl_cpu, rl_nproc, rl_as;
    bool set_cpu, set_as;
    int nice;
    const struct sock_fprog *prog;
    /* what the plan owns (everything the child reads lives until its box
     * is reaped): strings, copies of argv/envp/file data */
    char **strs;
    size_t nstrs, cap_strs;
    size_t nsecret;               /* strs[0 .. nsecret-1] are wiped before free */
};

CHILD_CODE static void c_fail(const struct plan *pl, const char *what, const char *arg, long err)
{
    char b[512];
    size_t n = 0;
    const char *parts[] = {"E ", what, arg ? " " : "", arg ? arg : "", ": errno "};
    for (size_t i = 0; i < ARRAY_LEN(parts); i++)
        for (const char *s = parts[i]; *s && n < sizeof(b) - 16; s++)
            b[n++] = *s;
    char num[12];
    size_t k = 0;
    unsigned e = (unsigned)(err < 0 ? -err : err);
    do {
        num[k++] = (char)('0' + e % 10);
        e /= 10;
    } while (e && k < sizeof(num));
    while (k)
        b[n++] = num[--k];
    b[n++] = '\n';
    (void)rsys3(SYS_write, pl->status_fd, b, n);
    for (;;)
        (void)rsys1(SYS_exit, 127);
}

CHILD_CODE static void c_run_ops(const struct plan *pl)
{
    long r;
    for (size_t i = 0; i < pl->nops; i++) {
        const struct op *o = &pl->ops[i];
        switch (o->kind) {
        case OP_MKDIR:
            r = rsys3(SYS_mkdirat, AT_FDCWD, o->dst, o->mode);
            if (r < 0 && r != -EEXIST)
                c_fail(pl, "mkdir", o->dst, r);
            break;
        case OP_SYMLINK:
            r = rsys3(SYS_symlinkat, o->src, AT_FDCWD, o->dst);
            if (r < 0 && r != -EEXIST)
                c_fail(pl, "symlink", o->dst, r);
            break;
        case OP_TOUCH:
            r = rsys4(SYS_openat, AT_FDCWD, o->dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            if (r < 0)
                c_fail(pl, "create", o->dst, r);
            (void)rsys1(SYS_close, r);
            break;
        case OP_MOUNT:
            r = rsys5(SYS_mount, o->src, o->dst, o->fstype, o->flags, o->data);
            if (r < 0)
                c_fail(pl, "mount", o->dst, r);
            break;
        case OP_REMOUNT:
            r = rsys5(SYS_mount, NULL, o->dst, NULL, o->flags, NULL);
            if (r < 0)
                c_fail(pl, "remount", o->dst, r);
            break;
        case OP_BINDIN:
            r = rsys5(SYS_mount, o->src, o->dst, NULL, MS_BIND, NULL);
            if (r < 0)
                c_fail(pl, "bind", o->dst, r);
            break;
        case OP_CHMOD:
            r = rsys3(SYS_fchmodat, AT_FDCWD, o->dst, o->mode);
            if (r < 0)
                c_fail(pl, "chmod", o->dst, r);
            break;
        case OP_BIND: {
            size_t k = o->len;
            if (!pl->legacy) {
                r = rsys5(SYS_move_mount, pl->src_fds[k], "", AT_FDCWD, o->dst,
                          MOVE_MOUNT_F_EMPTY_PATH);
                if (r < 0)
                    c_fail(pl, "move_mount", o->dst, r);
            } else {
                r = rsys5(SYS_mount, pl->fdpaths[k], o->dst, NULL,
                          MS_BIND | (pl->src_rec[k] ? MS_REC : 0), NULL);
                if (r < 0)
                    c_fail(pl, "mount", o->dst, r);
            }
            if ((pl->legacy || pl->legacy_attr) && pl->src_remount[k]) {
                r = rsys5(SYS_mount, NULL, o->dst, NULL, pl->src_remount[k], NULL);
                if (r < 0)
                    c_fail(pl, "remount", o->dst, r);
            }
            (void)rsys1(SYS_close, pl->src_fds[k]);
            break;
        }
        case OP_WRITE: {
            long fd = rsys4(SYS_openat, AT_FDCWD, o->dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                            o->mode);
            if (fd < 0)
                c_fail(pl, "create", o->dst, fd);
            size_t off = 0;
            while (off < o->len) {
                long w = rsys3(SYS_write, fd, o->data + off, o->len - off);
                if (w == -EINTR)
                    continue;
                if (w <= 0)
                    c_fail(pl, "write", o->dst, w < 0 ? w : -EIO);
                off += (size_t)w;
            }
            (void)rsys1(SYS_close, fd);
            break;
        }
        }
    }
}

CHILD_CODE static void c_setrlimit(int res, const struct rlimit *rl)
{
    (void)rsys4(SYS_prlimit64, 0, res, rl, NULL);
}

/* Runs in the CLONE_VM child: raw system calls only (see rsys6), no
 * allocation, nothing written outside its stack and its own plan. */
CHILD_CODE static int child_main(struct plan *pl)
{
    char c;
    long r;
    /* The box's umask is 022 whatever quernd's is (its file system
     * context is this child's own): under `umask 077` the directories a
     * plan makes were 0700 and root's, which the box's root cannot enter. */
    (void)rsys1(SYS_umask, 022);
    /* 0. into the slot's cgroups, before anything of the box runs.  Moving
     * a task waits for an RCU grace period when none is under way (the
     * threadgroup rwsem): here it delays this child only, not the parent's
     * other work.  The write is checked against the fd's opener (root). */
    for (size_t i = 0; i < pl->ncg; i++)
        if ((r = rsys3(SYS_write, pl->cg_procs[i], "0", 1)) < 0)
            c_fail(pl, "join cgroup", NULL, r);
    /* 1. wait until the parent wrote our uid/gid maps */
    if (rsys3(SYS_read, pl->sync_fd, &c, 1) != 1)
        (void)rsys1(SYS_exit, 127);
    (void)rsys1(SYS_close, pl->sync_fd);
    if (pl->test_hold_rd >= 0) {
        /* test-only: say so, then wait for the test's go (see sandbox_sys_new) */
        (void)rsys3(SYS_write, pl->test_hold_wr, "r", 1);
        while (rsys3(SYS_read, pl->test_hold_rd, &c, 1) == -EINTR)
            ;
    }
    if (pl->tpl)
        goto creds; /* the template's mounts are private; the parent made the trees */
    /* A private mount tree: nothing mounted here propagates to the host
     * or back (the copies of shared host mounts are already slaves). */
    if ((r = rsys5(SYS_mount, NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) < 0)
        c_fail(pl, "make-private", "/", r);
    /* Host sources are opened now: after the mount namespace was copied (a
     * bind needs a mount of our own namespace) and before dropping to the
     * box's uid (so their ancestors need not be traversable by it). */
    for (size_t i = 0; i < pl->nsrc; i++) {
        long fd = -ENOSYS;
        if (!pl->legacy) {
            fd = rsys3(SYS_open_tree, AT_FDCWD, pl->src_paths[i],
                       OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (pl->src_rec[i] ? AT_RECURSIVE : 0));
            if (fd == -ENOSYS) {
                if (i > 0)
                    c_fail(pl, "open_tree", pl->src_paths[i], fd);
                pl->legacy = true;
            } else if (fd < 0) {
                c_fail(pl, "open_tree", pl->src_paths[i], fd);
            }
        }
        if (pl->legacy) {
            fd = rsys4(SYS_openat, AT_FDCWD, pl->src_paths[i], O_PATH | O_CLOEXEC, 0);
            if (fd < 0)
                c_fail(pl, "open", pl->src_paths[i], fd);
        }
        pl->src_fds[i] = (int)fd;
        if (!pl->legacy && !pl->legacy_attr && pl->src_attr[i]) {
            struct mount_attr_k ma = {.attr_set = pl->src_attr[i]};
            r = rsys5(SYS_mount_setattr, fd, "",
                      AT_EMPTY_PATH | (pl->src_rec[i] ? AT_RECURSIVE : 0), &ma, sizeof(ma));
            if (r == -ENOSYS && i == 0)
                pl->legacy_attr = true;
            else if (r < 0)
                c_fail(pl, "mount_setattr", pl->src_paths[i], r);
        }
        if (!pl->legacy)
            continue;
        char num[12];
        size_t k = 0, n = 0;
        unsigned v = (unsigned)fd;
        do {
            num[k++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        static const char pre[] = "/proc/self/fd/";
        for (size_t j = 0; pre[j]; j++)
            pl->fdpaths[i][n++] = pre[j];
        while (k)
            pl->fdpaths[i][n++] = num[--k];
        pl->fdpaths[i][n] = '\0';
    }
creds:
    /* 2. become the box's root (an unprivileged host uid) before any fs work */
    if ((r = rsys2(SYS_setgroups, 0, NULL)) < 0)
        c_fail(pl, "setgroups", NULL, r);
    if ((r = rsys3(SYS_setresgid, 0, 0, 0)) < 0)
        c_fail(pl, "setresgid", NULL, r);
    if ((r = rsys3(SYS_setresuid, 0, 0, 0)) < 0)
        c_fail(pl, "setresuid", NULL, r);
    /* Killed with quernd from here on (a credentials change clears the
     * death signal: this is the last one).  quernd may have died since the
     * clone, after its sync byte (the mounts and the credentials take a
     * while): then no signal comes and the box would run its code with no
     * parent, holding quernd's files (quern.lock) until it ends.  quernd's
     * pidfd turns readable when quernd is gone; checked after the prctl,
     * so that a death after the check sends the signal. */
    (void)rsys2(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
    if (pl->self_pidfd >= 0) {
        struct pollfd pf = {.fd = pl->self_pidfd, .events = POLLIN};
        struct timespec now = {0, 0};
        if (rsys5(SYS_ppoll, &pf, 1, &now, NULL, 0) > 0)
            (void)rsys1(SYS_exit, 127);
    }
    if (pl->tpl) {
        /* 3. the template's root is ours already: only the run's own mounts */
        if ((r = rsys1(SYS_chdir, "/")) < 0)
            c_fail(pl, "chdir", "/", r);
        c_run_ops(pl);
        goto root_done;
    }
    /* 3. a tmpfs root on /tmp (any dir would do) */
    if ((r = rsys5(SYS_mount, "quern", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, pl->root_opts)) < 0)
        c_fail(pl, "mount root", NULL, r);
    if ((r = rsys1(SYS_chdir, "/tmp")) < 0)
        c_fail(pl, "chdir", "/tmp", r);
    c_run_ops(pl);
    if ((r = rsys2(SYS_pivot_root, ".", ".")) < 0)
        c_fail(pl, "pivot_root", NULL, r);
    if ((r = rsys2(SYS_umount2, ".", MNT_DETACH)) < 0)
        c_fail(pl, "umount old root", NULL, r);
    if ((r = rsys1(SYS_chdir, "/")) < 0)
        c_fail(pl, "chdir", "/", r);
    if ((r = rsys5(SYS_mount, NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
                   NULL)) < 0)
        c_fail(pl, "remount ro", "/", r);
root_done:
    (void)rsys2(SYS_sethostname, "quern", 5);
    if ((r = rsys1(SYS_chdir, pl->cwd)) < 0)
        c_fail(pl, "chdir", pl->cwd, r);
    /* 4. fds: move ours high, then into place; nothing else survives */
    /* 0-3 the code's, 4 init's status, 5 init itself (CLOEXEC), 6 a warm
     * box's go pipe, 7 the exec notice when the parent waits for it
     * (CLOEXEC, see SANDBOX_ASYNC_SPAWN). */
    int hi[8], src[8] = {pl->fd_in, pl->fd_out, pl->fd_err, pl->fd_ctl, pl->status_fd,
                         pl->init_fd, pl->fd_go, pl->exec_wr};
    for (int i = 0; i < 8; i++) {
        hi[i] = -1;
        if (src[i] < 0)
            continue;
        r = rsys3(SYS_fcntl, src[i], F_DUPFD_CLOEXEC, 200);
        if (r < 0)
            c_fail(pl, "dup", NULL, r);
        hi[i] = (int)r;
    }
    for (int i = 0; i < 8; i++)
        if (hi[i] >= 0 && (r = rsys3(SYS_dup3, hi[i], i, 0)) < 0)
            c_fail(pl, "dup2", NULL, r);
    pl->status_fd = SANDBOX_STATUS_FD; /* the status fd moved */
    (void)rsys3(SYS_fcntl, 5, F_SETFD, FD_CLOEXEC);
    if (hi[7] >= 0)
        (void)rsys3(SYS_fcntl, 7, F_SETFD, FD_CLOEXEC);
    for (int i = 6; i < 8; i++)
        if (hi[i] < 0)
            (void)rsys1(SYS_close, i);
    if (rsys3(SYS_close_range, 8U, ~0U, 0) < 0) {
        for (int fd = 8; fd < 1024; fd++)
            (void)rsys1(SYS_close, fd);
    }
    /* 5. limits, signals, privileges, seccomp, exec */
    struct rlimit zero = {0, 0};
    c_setrlimit(RLIMIT_CORE, &zero);
    c_setrlimit(RLIMIT_FSIZE, &pl->rl_fsize);
    c_setrlimit(RLIMIT_NOFILE, &pl->rl_nofile);
    c_setrlimit(RLIMIT_NPROC, &pl->rl_nproc);
    /* POSIX message queue bytes and queued signals are charged, like the
     * inotify objects above, to host root too: each box gets a share */
    struct rlimit mq = {BOX_MSGQUEUE_BYTES, BOX_MSGQUEUE_BYTES};
    struct rlimit sigq = {BOX_SIGPENDING, BOX_SIGPENDING};
    c_setrlimit(RLIMIT_MSGQUEUE, &mq);
    c_setrlimit(RLIMIT_SIGPENDING, &sigq);
    if (pl->set_cpu)
        c_setrlimit(RLIMIT_CPU, &pl->rl_cpu);
    if (pl->set_as)
        c_setrlimit(RLIMIT_AS, &pl->rl_as);
    if (pl->nice > 0)
        (void)rsys3(SYS_setpriority, PRIO_PROCESS, 0, pl->nice);
    /* Every signal was blocked before the clone (the parent's handlers must
     * never run here); back to the defaults, then unblocked. */
    struct ksigaction dfl = {0, 0, 0, 0};
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            (void)rsys4(SYS_rt_sigaction, s, &dfl, NULL, sizeof(uint64_t));
    uint64_t none = 0;
    (void)rsys4(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof(uint64_t));
    if ((r = rsys5(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) < 0)
        c_fail(pl, "no_new_privs", NULL, r);
    if ((r = rsys3(SYS_prctl, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, pl->prog)) < 0)
        c_fail(pl, "seccomp", NULL, r);
    r = rsys5(SYS_execveat, 5, "", pl->argv, pl->envp, AT_EMPTY_PATH);
    c_fail(pl, "exec quern-init", NULL, r);
    return 127;
}

/* Entry of the CLONE_VM child: it shares quernd's memory (not its fds,
 * signal handlers or file system context) until it execs quern-init. */
CHILD_CODE static int child_fn(void *arg)
{
    struct plan *pl = arg;
    (void)rsys1(SYS_close, pl->sync_wr);
    (void)rsys1(SYS_exit, child_main(pl));
    return 127;
}

/* ---- plan building (parent) ---- */

/* Appends o; one that does not fit marks the plan (sandbox_spawn fails
 * it): deep box paths in quern.conf's ro_paths take a step per directory,
 * and a box's layout is no broken invariant (it aborted quernd). */
static void add_op(struct plan *pl, struct op o)
{
    if (pl->nops < MAX_OPS)
        pl->ops[pl->nops++] = o;
    else
        pl->ops_full = true;
}

/* The box's own user namespace limits, then /proc/sys read-only.  The
 * namespace is made by quernd as host root, so what a box holds of
 * per-user kernel objects (inotify instances and watches) is also charged
 * to host root's budget (fs.inotify.max_user_instances, 128 by default):
 * without a bound of its own, one run took all of it, and quernd's storage
 * watches and every root process on the host got EMFILE.  The box's root
 * could raise these again through /proc/sys/user, hence the read-only
 * /proc/sys (mount is denied by seccomp, so it stays so). */
static void add_proc_sys_ops(struct plan *pl)
{
    static const char *const limits[][2] = {
        {"proc/sys/user/max_inotify_instances", "8"},
        {"proc/sys/user/max_inotify_watches", "8192"},
        {"proc/sys/user/max_fanotify_groups", "0"},
        {"proc/sys/user/max_user_namespaces", "0"},
    };
    for (size_t i = 0; i < ARRAY_LEN(limits); i++)
        add_op(pl, (struct op){.kind = OP_WRITE, .dst = limits[i][0], .data = limits[i][1],
                               .len = strlen(limits[i][1])});
    add_op(pl, (struct op){.kind = OP_BINDIN, .src = "proc/sys", .dst = "proc/sys"});
    add_op(pl, (struct op){.kind = OP_REMOUNT, .dst = "proc/sys",
                           .flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV |
                                    MS_NOEXEC});
}

/* Gives s (malloc'd) to the plan; returns it. */
static char *keep(struct plan *pl, char *s)
{
    if (pl->nstrs == pl->cap_strs) {
        pl->cap_strs = pl->cap_strs ? pl->cap_strs * 2 : 64;
        pl->strs = xrealloc(pl->strs, pl->cap_strs * sizeof(char *));
    }
    pl->strs[pl->nstrs++] = s;
    return s;
}

/* A copy of n bytes the plan owns; secrets are wiped when it is freed. */
static char *keep_mem(struct plan *pl, const void *data, size_t n, bool secret)
{
    char *c = xmalloc(n + 1);
    if (n)
        memcpy(c, data, n);
    c[n] = '\0';
    keep(pl, c);
    if (secret) {
        /* keep the secrets at the front: swap into place */
        size_t last = pl->nstrs - 1;
        pl->strs[last] = pl->strs[pl->nsecret];
        pl->strs[pl->nsecret++] = c;
    }
    return c;
}

/* A NULL-terminated copy of v the plan owns. */
static const char *const *keep_vec(struct plan *pl, const char *const *v, bool secret)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    char **c = xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        c[i] = keep_mem(pl, v[i], strlen(v[i]), secret);
    keep(pl, (char *)c);
    return (const char *const *)c;
}

static void plan_free(struct plan *pl)
{
    if (!pl)
        return;
    for (size_t i = 0; i < MAX_FDS; i++)
        if (pl->parent_trees[i] > 0)
            close(pl->parent_trees[i]);
    for (size_t i = 0; i < pl->nstrs; i++) {
        if (i < pl->nsecret)
            explicit_bzero(pl->strs[i], strlen(pl->strs[i]));
        free(pl->strs[i]);
    }
    free(pl->strs);
    free(pl);
}

/* mkdir each prefix of box path p ("/a/b" -> "a", "a/b"). */
static void add_mkdirs(struct plan *pl, const char *p, mode_t mode)
{
    while (*p == '/')
        p++;
    for (const char *s = p;; s++) {
        if (*s == '/' || *s == '\0') {
            char *d = keep(pl, xstrndup(p, (size_t)(s - p)));
            add_op(pl, (struct op){.kind = OP_MKDIR, .dst = d, .mode = mode});
            if (*s == '\0')
                break;
        }
    }
}

/* Flags a read-only bind remount must keep: a user namespace may not clear
 * the locked nosuid/nodev/noexec/atime flags of the original mount. */
static unsigned long locked_flags(int fd)
{
    struct statvfs sv;
    unsigned long f = MS_NOSUID | MS_NODEV;
    if (fstatvfs(fd, &sv) == 0) {
        if (sv.f_flag & ST_NOEXEC)
            f |= MS_NOEXEC;
        if (sv.f_flag & ST_NOATIME)
            f |= MS_NOATIME;
        if (sv.f_flag & ST_NODIRATIME)
            f |= MS_NODIRATIME;
        if (sv.f_flag & ST_RELATIME)
            f |= MS_RELATIME;
    }
    return f;
}

/* What a host path to bind is: a directory or not, and its mount's locked
 * flags.  0 or negative errno. */
static int probe_bind(const char *host, bool *is_dir_out, unsigned long *lflags)
{
    int fd = open(host, O_PATH | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    *lflags = locked_flags(fd);
    *is_dir_out = S_ISDIR(st.st_mode);
    close(fd);
    return 0;
}

/* Binds host path (opened by the child, O_PATH) at box path. */
static int add_bind_known(struct plan *pl, const char *host, const char *box, bool writable,
                          bool dir, unsigned long lflags)
{
    if (pl->nsrc >= MAX_FDS)
        return -E2BIG;
    size_t k = pl->nsrc++;
    pl->src_paths[k] = keep_mem(pl, host, strlen(host), false);
    pl->src_fds[k] = -1;
    pl->src_rec[k] = true;
    pl->src_attr[k] = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (writable ? 0 : MOUNT_ATTR_RDONLY);
    pl->src_remount[k] = MS_REMOUNT | MS_BIND | lflags | (writable ? 0 : MS_RDONLY);
    while (*box == '/')
        box++;
    const char *rel = keep_mem(pl, box, strlen(box), false);
    if (dir) {
        add_mkdirs(pl, rel, 0755);
    } else {
        const char *slash = strrchr(rel, '/');
        if (slash) {
            char *parent = xstrndup(rel, (size_t)(slash - rel));
            add_mkdirs(pl, parent, 0755);
            free(parent);
        }
        add_op(pl, (struct op){.kind = OP_TOUCH, .dst = rel});
    }
    add_op(pl, (struct op){.kind = OP_BIND, .dst = rel, .len = k});
    return 0;
}

static int add_bind(struct plan *pl, const char *host, const char *box, bool writable)
{
    bool dir;
    unsigned long lflags;
    int rc = probe_bind(host, &dir, &lflags);
    if (rc < 0)
        return rc;
    return add_bind_known(pl, host, box, writable, dir, lflags);
}

/* The fixed part of every box's root, looked at once (sandbox_sys_new):
 * the system directories (bound read-only, or symlinks as on the host) and
 * which device nodes exist. */
static const char *const sysdirs[] = {"/usr", "/etc", "/bin", "/sbin", "/lib",
                                      "/lib32", "/lib64", "/libx32"};
static const char *const devs[] = {"null", "zero", "urandom", "random"};

static void layout_probe(struct sandbox_sys *sys)
{
    for (size_t i = 0; i < ARRAY_LEN(sysdirs); i++) {
        struct layout_dir *l = &sys->sysdir[i];
        struct stat st;
        l->kind = LD_NONE;
        if (lstat(sysdirs[i], &st) < 0)
            continue;
        if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlink(sysdirs[i], target, sizeof(target) - 1);
            if (n <= 0)
                continue;
            target[n] = '\0';
            l->target = xstrdup(target);
            l->kind = LD_LINK;
        } else if (S_ISDIR(st.st_mode)) {
            bool dir;
            l->err = probe_bind(sysdirs[i], &dir, &l->lflags);
            l->kind = LD_BIND;
        }
    }
    for (size_t i = 0; i < ARRAY_LEN(devs); i++) {
        char h[32];
        snprintf(h, sizeof(h), "/dev/%s", devs[i]);
        sys->dev_ok[i] = access(h, F_OK) == 0;
    }
}

/* ---- the template mount namespace ----
 *
 * Building a box's root from the host's mount tree costs a copy of every
 * host mount, a dozen binds, pivot_root (which visits every thread on the
 * host: chroot_fs_refs) and the detach of the old tree (an RCU grace
 * period).  The fixed part of every root is the same, so it is built once: a
 * mount namespace whose root is a read-only tmpfs holding the system
 * directories (bound read-only, or symlinks as on the host), a minimal /dev
 * and empty mount points.  A spawn clones its box's mount namespace from it
 * (the spawning thread enters it around the clone, as for the network
 * namespace), and the box mounts only what is its own: /tmp, /proc, a tmpfs
 * on /quern with its files, and the run's directories, which the parent cut
 * from the host beforehand (open_tree: detached, made nosuid/nodev and
 * read-only where asked).  Copied into the box's user namespace, the
 * template's mounts are locked: the box can neither make them writable nor
 * look under them.  A spawn whose mounts or files do not fit the template
 * (a mount point it lacks) builds its whole tree as before.
 */
struct tpl_job {
    struct sandbox_sys *sys;
    int ns;
    char err[256];
};

static int tpl_fail(struct tpl_job *j, const char *what, const char *arg)
{
    snprintf(j->err, sizeof(j->err), "%s %s: %s", what, arg ? arg : "", strerror(errno));
    return -1;
}

static int tpl_mkdirs(const char *rel, mode_t mode)
{
    char b[PATH_MAX];
    snprintf(b, sizeof(b), "%s", rel);
    for (char *q = b;; q++) {
        if (*q == '/' || *q == '\0') {
            char c = *q;
            *q = '\0';
            if (b[0] && mkdir(b, mode) < 0 && errno != EEXIST)
                return -1;
            *q = c;
            if (!c)
                break;
        }
    }
    return 0;
}

/* The template's /dev/X as a device node of its own with the host node's
 * device number and mode, rather than a bind of the host's node: every box
 * copies (and at its end frees) each mount of the template, and a node is
 * no mount.  The template's /dev is a tmpfs made by host root without
 * nodev, so the node works in a box; read-only and locked there, its mode
 * cannot be changed.  0, or -1 (the caller binds the host's node). */
static int tpl_mknod(const char *host, const char *rel)
{
    struct stat st;
    if (stat(host, &st) < 0 || !S_ISCHR(st.st_mode))
        return -1;
    if (mknod(rel, S_IFCHR | (st.st_mode & 0666), st.st_rdev) < 0)
        return -1;
    /* the umask may have cut the mode */
    if (chmod(rel, st.st_mode & 0666) < 0) {
        (void)unlink(rel);
        return -1;
    }
    return 0;
}

static int tpl_populate(struct tpl_job *j)
{
    struct sandbox_sys *sys = j->sys;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return tpl_fail(j, "make-private", "/");
    if (mount("quern-template", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
              "size=256k,nr_inodes=1024,mode=755") < 0)
        return tpl_fail(j, "mount", "tmpfs");
    if (chdir("/tmp") < 0)
        return tpl_fail(j, "chdir", "/tmp");
    for (size_t i = 0; i < ARRAY_LEN(sysdirs); i++) {
        const struct layout_dir *l = &sys->sysdir[i];
        const char *rel = sysdirs[i] + 1;
        if (l->kind == LD_LINK) {
            if (symlink(l->target, rel) < 0)
                return tpl_fail(j, "symlink", rel);
        } else if (l->kind == LD_BIND) {
            if (l->err < 0) {
                errno = -l->err;
                return tpl_fail(j, "probe", sysdirs[i]);
            }
            if (mkdir(rel, 0755) < 0 || mount(sysdirs[i], rel, NULL, MS_BIND | MS_REC, NULL) < 0 ||
                mount(NULL, rel, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | l->lflags, NULL) < 0)
                return tpl_fail(j, "bind", sysdirs[i]);
        }
    }
    if (mkdir("tmp", 01777) < 0 || chmod("tmp", 01777) < 0 || mkdir("proc", 0555) < 0 ||
        mkdir("dev", 0755) < 0 || mkdir("quern", 0755) < 0 || tpl_mkdirs("run/secrets", 0755) < 0)
        return tpl_fail(j, "mkdir", NULL);
    /* A box may mount a proc only where one is fully visible already
     * (mount_too_revealing): this one belongs to a PID namespace whose only
     * process has exited, so it shows no process at all; each box mounts
     * its own over it. */
    long pid = syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid == 0) {
        long r = syscall(SYS_mount, "proc", "/tmp/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                         NULL);
        syscall(SYS_exit_group, r < 0 ? 1 : 0);
    }
    int ws = -1;
    if (pid < 0 || waitpid((pid_t)pid, &ws, __WALL) < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
        errno = pid < 0 ? errno : EPERM;
        return tpl_fail(j, "mount", "proc");
    }
    if (mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,nr_inodes=64,mode=755") < 0)
        return tpl_fail(j, "mount", "dev");
    for (size_t i = 0; i < ARRAY_LEN(devs); i++) {
        if (!sys->dev_ok[i])
            continue;
        char h[32], b[32];
        snprintf(h, sizeof(h), "/dev/%s", devs[i]);
        snprintf(b, sizeof(b), "dev/%s", devs[i]);
        if (tpl_mknod(h, b) == 0)
            continue;
        int fd = open(b, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            return tpl_fail(j, "create", b);
        close(fd);
        if (mount(h, b, NULL, MS_BIND, NULL) < 0)
            return tpl_fail(j, "bind", h);
    }
    static const char *const links[][2] = {
        {"/proc/self/fd", "dev/fd"}, {"/proc/self/fd/0", "dev/stdin"},
        {"/proc/self/fd/1", "dev/stdout"}, {"/proc/self/fd/2", "dev/stderr"},
        {"/tmp", "dev/shm"}};
    for (size_t i = 0; i < ARRAY_LEN(links); i++)
        if (symlink(links[i][0], links[i][1]) < 0)
            return tpl_fail(j, "symlink", links[i][1]);
    if (mount(NULL, "dev", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL) < 0)
        return tpl_fail(j, "remount", "dev");
    for (size_t i = 0; i < sys->ntpl_dirs; i++)
        if (tpl_mkdirs(sys->tpl_dirs[i] + 1, 0755) < 0)
            return tpl_fail(j, "mkdir", sys->tpl_dirs[i]);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return tpl_fail(j, "pivot_root", NULL);
    if (umount2(".", MNT_DETACH) < 0)
        return tpl_fail(j, "umount", "old root");
    if (chdir("/") < 0)
        return tpl_fail(j, "chdir", "/");
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        return tpl_fail(j, "remount ro", "/");
    return 0;
}

/* Runs in a thread of its own: unshare and pivot_root change the caller's
 * file system context, and the thread ends with them. */
static void *tpl_thread(void *arg)
{
    struct tpl_job *j = arg;
    j->ns = -1;
    if (unshare(CLONE_FS | CLONE_NEWNS) < 0) {
        tpl_fail(j, "unshare", NULL);
        return NULL;
    }
    umask(022);   /* this thread's own now: the template's dirs are 0755 */
    int ns = open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (ns < 0) {
        tpl_fail(j, "open", "/proc/thread-self/ns/mnt");
        return NULL;
    }
    if (tpl_populate(j) < 0) {
        close(ns);
        return NULL;
    }
    j->ns = ns;
    return NULL;
}

static bool tpl_has_dir(const struct sandbox_sys *sys, const char *box)
{
    for (size_t i = 0; i < sys->ntpl_dirs; i++)
        if (strcmp(sys->tpl_dirs[i], box) == 0)
            return true;
    return false;
}

static bool under_quern(const char *box)
{
    return strncmp(box, "/quern/", 7) == 0 && box[7] && !strstr(box, "/../") &&
           !strstr(box, "/./");
}

/* The spawning thread gets a file system context of its own once, so that
 * it may enter the template's mount namespace (setns refuses a shared one). */
static int spawn_fs_own(struct sandbox_sys *sys)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (sys->fs_tid == tid)
        return 0;
    if (unshare(CLONE_FS) < 0)
        return -errno;
    int fd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (sys->cwd_fd >= 0)
        close(sys->cwd_fd);
    sys->cwd_fd = fd;
    sys->fs_tid = tid;
    return 0;
}

/* Builds the template on first use; true when p fits it. */
static bool tpl_fits(struct sandbox_sys *sys, const struct sandbox_params *p)
{
    if (sys->tpl_ns == -1) {
        sys->tpl_ns = -2;
        int t = (int)syscall(SYS_open_tree, AT_FDCWD, "/", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        struct mount_attr_k ma = {.attr_set = MOUNT_ATTR_NOSUID};
        if (t < 0 || syscall(SYS_mount_setattr, t, "", AT_EMPTY_PATH, &ma, sizeof(ma)) < 0) {
            slog(sys, "mount template unavailable (open_tree/mount_setattr: %s): every box "
                      "builds its whole root (slower)", strerror(errno));
        } else {
            struct tpl_job j = {.sys = sys, .ns = -1};
            pthread_t th;
            if (pthread_create(&th, NULL, tpl_thread, &j) == 0)
                pthread_join(th, NULL);
            else
                snprintf(j.err, sizeof(j.err), "pthread_create failed");
            int e = 0;
            if (j.ns >= 0 && sys->host_mnt >= 0 && (e = spawn_fs_own(sys)) == 0) {
                sys->tpl_ns = j.ns;
            } else {
                if (j.ns >= 0)
                    close(j.ns);
                slog(sys, "mount template unavailable (%s): every box builds its whole root "
                          "(slower)", e < 0 ? strerror(-e) : j.err[0] ? j.err
                                                            : "no host mount namespace fd");
            }
        }
        if (t >= 0)
            close(t);
    }
    if (sys->tpl_ns < 0)
        return false;
    for (size_t i = 0; i < p->nmounts; i++) {
        if (!tpl_has_dir(sys, p->mounts[i].box) && !under_quern(p->mounts[i].box))
            return false;
        /* a read-only path that is a file cannot go on the template's
         * directory (move_mount: EINVAL); a writable one is a run's dir */
        if (!p->mounts[i].writable && !is_dir(p->mounts[i].host))
            return false;
    }
    for (size_t i = 0; i < p->nfiles; i++)
        if (!under_quern(p->files[i].box))
            return false;
    for (size_t i = 0; i < p->ndirs; i++)
        if (!tpl_has_dir(sys, p->dirs[i]) && !under_quern(p->dirs[i]))
            return false;
    return true;
}

int sandbox_sys_add_mountpoint(struct sandbox_sys *sys, const char *box)
{
    if (sys->tpl_ns != -1)
        return -EBUSY;
    if (!box || box[0] != '/' || strlen(box) >= PATH_MAX / 2 || strstr(box, "..") ||
        strcmp(box, "/") == 0 || strncmp(box, "/quern", 6) == 0)
        return -EINVAL;
    if (tpl_has_dir(sys, box))
        return 0;
    sys->tpl_dirs = xrealloc(sys->tpl_dirs, (sys->ntpl_dirs + 1) * sizeof(char *));
    sys->tpl_dirs[sys->ntpl_dirs++] = xstrdup(box);
    return 0;
}

/* A detached copy of host path (and what is mounted below it), nosuid,
 * nodev and read-only unless writable; an fd or -errno. */
static int cut_tree(const char *host, bool writable)
{
    int t = (int)syscall(SYS_open_tree, AT_FDCWD, host,
                         OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (t < 0)
        return -errno;
    struct mount_attr_k ma = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                          (writable ? 0 : MOUNT_ATTR_RDONLY)};
    if (syscall(SYS_mount_setattr, t, "", AT_EMPTY_PATH | AT_RECURSIVE, &ma, sizeof(ma)) < 0) {
        int e = errno;
        close(t);
        return -e;
    }
    return t;
}

/* The box's /tmp when it shares the /quern tmpfs (see tpl_plan): a
 * directory under the mount point of a run directory in /quern, which that
 * directory's bind then covers, so the box reaches it as /tmp only. */
#define TPL_TMP_NAME ".quern-tmp"

/* The plan of a box made from the template (see above).
 *
 * One tmpfs serves /quern and /tmp: each tmpfs superblock costs the box's
 * start and end alike (get_tree, the per-superblock list_lru and shrinker,
 * at the end shrink_dcache and a deferred destroy), about as much as its
 * whole remaining mount work.  /tmp is a bind of a directory of the /quern
 * tmpfs that nothing else shows: it sits under the mount point of the
 * first run directory bound under /quern, which that bind covers.  /quern
 * is made read-only per mount (a bind remount), not per superblock, which
 * would take /tmp with it; the box can change neither (no mount calls
 * under the seccomp filter).  The size cap is /quern's plus /tmp's.  A
 * spawn with no run directory under /quern gets a tmpfs of its own on /tmp. */
static int tpl_plan(struct sandbox_sys *sys, const struct sandbox_params *p, struct plan *pl,
                    char **err)
{
    (void)sys;
    pl->tpl = true;
    add_op(pl, (struct op){.kind = OP_MOUNT, .src = "quern", .dst = "quern", .fstype = "tmpfs",
                           .flags = MS_NOSUID | MS_NODEV, .data = pl->root_opts});
    size_t extra = 0;
    for (size_t i = 0; i < p->nfiles; i++) {
        const char *rel = keep_mem(pl, p->files[i].box + 1, strlen(p->files[i].box + 1), false);
        const char *slash = strrchr(rel, '/');
        char *parent = xstrndup(rel, (size_t)(slash - rel));
        add_mkdirs(pl, parent, 0755);
        free(parent);
        add_op(pl, (struct op){.kind = OP_WRITE, .dst = rel,
                               .data = keep_mem(pl, p->files[i].data, p->files[i].len, false),
                               .len = p->files[i].len, .mode = 0644});
        extra += p->files[i].len + 4096;
    }
    for (size_t i = 0; i < p->ndirs; i++)
        if (under_quern(p->dirs[i]))
            add_mkdirs(pl, p->dirs[i], 0755);
    bool tmp_done = false;
    for (size_t i = 0; i < p->nmounts; i++) {
        if (pl->nsrc >= MAX_FDS) {
            *err = xstrdup("too many mounts");
            return -E2BIG;
        }
        const char *box = p->mounts[i].box;
        if (under_quern(box)) {
            add_mkdirs(pl, box, 0755);
            if (!tmp_done) {
                const char *t = keep(pl, xasprintf("%s/%s", box + 1, TPL_TMP_NAME));
                add_op(pl, (struct op){.kind = OP_MKDIR, .dst = t, .mode = 0700});
                add_op(pl, (struct op){.kind = OP_CHMOD, .dst = t, .mode = 01777});
                add_op(pl, (struct op){.kind = OP_BINDIN, .src = t, .dst = "tmp"});
                tmp_done = true;
            }
        }
        int t = cut_tree(p->mounts[i].host, p->mounts[i].writable);
        if (t < 0) {
            *err = xasprintf("bind %s: %s", p->mounts[i].host, strerror(-t));
            return t;
        }
        size_t k = pl->nsrc++;
        pl->src_paths[k] = keep_mem(pl, p->mounts[i].host, strlen(p->mounts[i].host), false);
        pl->src_fds[k] = t;
        pl->parent_trees[k] = t;
        add_op(pl, (struct op){.kind = OP_BIND, .dst = keep_mem(pl, box + 1, strlen(box + 1), false),
                               .len = k});
    }
    /* read-only for this mount only: with /tmp on the same superblock */
    add_op(pl, (struct op){.kind = OP_REMOUNT, .dst = "quern",
                           .flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV});
    if (!tmp_done)
        add_op(pl, (struct op){.kind = OP_MOUNT, .src = "tmpfs", .dst = "tmp", .fstype = "tmpfs",
                               .flags = MS_NOSUID | MS_NODEV,
                               .data = "size=256m,nr_inodes=65536,mode=1777"});
    add_op(pl, (struct op){.kind = OP_MOUNT, .src = "proc", .dst = "proc", .fstype = "proc",
                           .flags = MS_NOSUID | MS_NODEV | MS_NOEXEC});
    add_proc_sys_ops(pl);
    size_t root = p->root_bytes > 0 ? (size_t)p->root_bytes : ((size_t)4 << 20) + extra;
    if (tmp_done)
        snprintf(pl->root_opts, sizeof(pl->root_opts), "size=%zu,nr_inodes=%d,mode=755",
                 root + ((size_t)256 << 20), 4096 + 65536);
    else
        snprintf(pl->root_opts, sizeof(pl->root_opts), "size=%zu,nr_inodes=4096,mode=755", root);
    return 0;
}

/* Frees what the slot's last spawn child used: it has exec'd or is dead. */
static void slot_spawn_done(struct sandbox_sys *sys, int slot)
{
    if (slot < 0 || slot >= sys->slots)
        return;
    plan_free(sys->sp[slot].pl);
    sys->sp[slot].pl = NULL;
}

int sandbox_spawn(struct sandbox_sys *sys, const struct sandbox_params *p,
                  struct sandbox_proc *out, char **err)
{
    *err = NULL;
    int rc = 0;
    int sync[2] = {-1, -1}, execp[2] = {-1, -1};
    struct plan *pl = NULL;
    bool switched_net = false;

    if (p->slot < 0 || p->slot >= sys->slots) {
        *err = xstrdup("bad slot");
        return -EINVAL;
    }
    struct slot_spawn *sp = &sys->sp[p->slot];
    /* The slot's previous box is dead (a slot holds one box at a time). */
    slot_spawn_done(sys, p->slot);
    if (!sp->stack) {
        void *st = mmap(NULL, SPAWN_STACK_SIZE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (st == MAP_FAILED) {
            rc = -errno;
            *err = xasprintf("mmap of a spawn stack: %s", strerror(errno));
            return rc;
        }
        (void)mprotect(st, 4096, PROT_NONE); /* a guard page */
        sp->stack = st;
    }
    pl = xcalloc(1, sizeof(*pl));
    bool tpl = tpl_fits(sys, p);
    if (tpl) {
        rc = tpl_plan(sys, p, pl, err);
        if (rc < 0)
            goto out;
        goto secrets;
    }
    /* The fixed layout: system dirs read-only, /bin & co as in the host. */
    for (size_t i = 0; i < ARRAY_LEN(sysdirs); i++) {
        const struct layout_dir *l = &sys->sysdir[i];
        if (l->kind == LD_LINK) {
            add_op(pl, (struct op){.kind = OP_SYMLINK, .src = l->target, .dst = sysdirs[i] + 1});
        } else if (l->kind == LD_BIND) {
            rc = l->err < 0 ? l->err
                            : add_bind_known(pl, sysdirs[i], sysdirs[i], false, true, l->lflags);
            if (rc < 0) {
                *err = xasprintf("bind %s: %s", sysdirs[i], strerror(-rc));
                goto out;
            }
        }
    }
    for (size_t i = 0; i < p->nmounts; i++) {
        rc = add_bind(pl, p->mounts[i].host, p->mounts[i].box, p->mounts[i].writable);
        if (rc < 0) {
            *err = xasprintf("bind %s: %s", p->mounts[i].host, strerror(-rc));
            goto out;
        }
    }
    /* /tmp private, /proc fresh, /dev minimal. */
    add_op(pl, (struct op){.kind = OP_MKDIR, .dst = "tmp", .mode = 01777});
    add_op(pl, (struct op){.kind = OP_MOUNT, .src = "tmpfs", .dst = "tmp", .fstype = "tmpfs",
                           .flags = MS_NOSUID | MS_NODEV,
                           .data = "size=256m,nr_inodes=65536,mode=1777"});
    add_op(pl, (struct op){.kind = OP_MKDIR, .dst = "proc", .mode = 0555});
    add_op(pl, (struct op){.kind = OP_MOUNT, .src = "proc", .dst = "proc", .fstype = "proc",
                           .flags = MS_NOSUID | MS_NODEV | MS_NOEXEC});
    add_proc_sys_ops(pl);
    add_op(pl, (struct op){.kind = OP_MKDIR, .dst = "dev", .mode = 0755});
    add_op(pl, (struct op){.kind = OP_MOUNT, .src = "tmpfs", .dst = "dev", .fstype = "tmpfs",
                           .flags = MS_NOSUID | MS_NOEXEC, .data = "size=64k,nr_inodes=64,mode=755"});
    static const char *const dev_host[] = {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"};
    static const char *const dev_box[] = {"dev/null", "dev/zero", "dev/urandom", "dev/random"};
    for (size_t i = 0; i < ARRAY_LEN(devs); i++) {
        if (pl->nsrc >= MAX_FDS || !sys->dev_ok[i])
            continue;
        size_t k = pl->nsrc++;
        pl->src_paths[k] = dev_host[i];
        pl->src_fds[k] = -1;
        add_op(pl, (struct op){.kind = OP_TOUCH, .dst = dev_box[i]});
        add_op(pl, (struct op){.kind = OP_BIND, .dst = dev_box[i], .len = k});
    }
    add_op(pl, (struct op){.kind = OP_SYMLINK, .src = "/proc/self/fd", .dst = "dev/fd"});
    add_op(pl, (struct op){.kind = OP_SYMLINK, .src = "/proc/self/fd/0", .dst = "dev/stdin"});
    add_op(pl, (struct op){.kind = OP_SYMLINK, .src = "/proc/self/fd/1", .dst = "dev/stdout"});
    add_op(pl, (struct op){.kind = OP_SYMLINK, .src = "/proc/self/fd/2", .dst = "dev/stderr"});
    add_op(pl, (struct op){.kind = OP_SYMLINK, .src = "/tmp", .dst = "dev/shm"});
    add_op(pl, (struct op){.kind = OP_REMOUNT, .dst = "dev",
                           .flags = MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC});
secrets:
    if (p->nsecrets > 0) {
        if (!tpl) {
            add_op(pl, (struct op){.kind = OP_MKDIR, .dst = "run", .mode = 0755});
            add_op(pl, (struct op){.kind = OP_MKDIR, .dst = "run/secrets", .mode = 0755});
        }
        /* room for every value: a page per file at least (a fixed 1 MiB
         * failed the spawn, ENOSPC, for a few secrets of 64 KiB) */
        size_t room = (size_t)1 << 20;
        for (size_t i = 0; i < p->nsecrets; i++)
            room += strlen(p->secret_values[i]) + 4096;
        add_op(pl, (struct op){.kind = OP_MOUNT, .src = "tmpfs", .dst = "run/secrets",
                               .fstype = "tmpfs", .flags = MS_NOSUID | MS_NODEV | MS_NOEXEC,
                               .data = keep(pl, xasprintf("size=%zu,mode=755", room))});
        for (size_t i = 0; i < p->nsecrets; i++) {
            const char *d = keep(pl, xasprintf("run/secrets/%s", p->secret_names[i]));
            size_t len = strlen(p->secret_values[i]);
            add_op(pl, (struct op){.kind = OP_WRITE, .dst = d,
                                   .data = keep_mem(pl, p->secret_values[i], len, true),
                                   .len = len, .mode = 0444});
        }
        add_op(pl, (struct op){.kind = OP_REMOUNT, .dst = "run/secrets",
                               .flags = MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC});
    }

    size_t extra = 0;
    for (size_t i = 0; !tpl && i < p->nfiles; i++) {
        const char *rel = p->files[i].box;
        while (*rel == '/')
            rel++;
        rel = keep_mem(pl, rel, strlen(rel), false);
        const char *slash = strrchr(rel, '/');
        if (slash) {
            char *parent = xstrndup(rel, (size_t)(slash - rel));
            add_mkdirs(pl, parent, 0755);
            free(parent);
        }
        add_op(pl, (struct op){.kind = OP_WRITE, .dst = rel,
                               .data = keep_mem(pl, p->files[i].data, p->files[i].len, false),
                               .len = p->files[i].len, .mode = 0644});
        extra += p->files[i].len + 4096;
    }
    for (size_t i = 0; !tpl && i < p->ndirs; i++)
        add_mkdirs(pl, p->dirs[i], 0755);
    if (!tpl)
        snprintf(pl->root_opts, sizeof(pl->root_opts), "size=%zu,nr_inodes=4096,mode=755",
                 p->root_bytes > 0 ? (size_t)p->root_bytes : ((size_t)4 << 20) + extra);
    pl->cwd = keep_mem(pl, p->cwd ? p->cwd : "/", strlen(p->cwd ? p->cwd : "/"), false);
    pl->argv = keep_vec(pl, p->argv, false);
    pl->envp = keep_vec(pl, p->envp, true);   /* may hold secrets */
    pl->fd_in = p->fd_stdin;
    pl->fd_out = p->fd_stdout;
    pl->fd_err = p->fd_stderr;
    pl->fd_ctl = p->fd_control;
    pl->status_fd = p->fd_status;
    pl->fd_go = p->fd_go > 0 ? p->fd_go : -1;
    pl->exec_wr = -1;
    pl->nice = p->nice;
    pl->init_fd = sys->init_fd;
    pl->self_pidfd = sys->self_pidfd;
    pl->test_hold_rd = sys->test_hold_rd;
    pl->test_hold_wr = sys->test_hold_wr;
    pl->prog = &sys->prog;
    rlim_t fsz = p->max_file_bytes > 0 ? (rlim_t)p->max_file_bytes : RLIM_INFINITY;
    pl->rl_fsize = (struct rlimit){fsz, fsz};
    rlim_t nof = p->max_open_files > 0 ? (rlim_t)p->max_open_files : 256;
    pl->rl_nofile = (struct rlimit){nof, nof};
    if (p->cpu_seconds > 0) {
        pl->set_cpu = true;
        pl->rl_cpu = (struct rlimit){(rlim_t)p->cpu_seconds, (rlim_t)p->cpu_seconds + 1};
    }
    /* RLIMIT_NPROC counts every process of the shared sandbox uid on the host:
     * with a pids cgroup it is only a backstop across all slots. */
    rlim_t np = p->max_procs > 0 ? (rlim_t)p->max_procs : 64;
    if (sys->pids_base)
        np = np * (rlim_t)sys->slots + 64;
    pl->rl_nproc = (struct rlimit){np, np};
    if (!sys->mem_base && p->memory_limit_bytes > 0) {
        pl->set_as = true;
        rlim_t as = (rlim_t)p->memory_limit_bytes * 4;
        pl->rl_as = (struct rlimit){as, as};
    }

    if (pl->ops_full) {
        rc = -E2BIG;
        *err = xasprintf("the box's file system takes more than %d steps to build (deep "
                         "ro_paths in quern.conf?)", MAX_OPS);
        goto out;
    }
    /* status fd is written by the child on failure; it is the caller's pipe. */
    if (pipe2(sync, O_CLOEXEC) < 0 || (!SANDBOX_ASYNC_SPAWN && pipe2(execp, O_CLOEXEC) < 0)) {
        rc = -errno;
        *err = xasprintf("pipe: %s", strerror(errno));
        goto out;
    }
    pl->sync_fd = sync[0];
    pl->sync_wr = sync[1];
    pl->exec_wr = execp[1];
    rc = cg_prepare(sys, p->slot, p, true);
    if (rc < 0) {
        *err = xasprintf("setting the slot's memory or process limit: %s", strerror(-rc));
        goto out;
    }
    rc = cg_join_fds(sys, p->slot, pl->cg_procs, &pl->ncg);
    if (rc < 0) {
        *err = xasprintf("opening the slot's cgroup files (tasks or cgroup.procs): %s", strerror(-rc));
        goto out;
    }

    int netfd = sys->netns[p->slot];
    uint64_t flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWCGROUP;
    if (!p->network) {
        if (netfd >= 0 && sys->host_netns >= 0 && setns(netfd, CLONE_NEWNET) == 0)
            switched_net = true;
        else
            flags |= CLONE_NEWNET;
    } else {
        /* with network: the slot's slirp4netns namespace, else the host's */
        int outfd = sys->host_netns >= 0 ? netns_out_get(sys, p->slot) : -1;
        if (outfd >= 0 && setns(outfd, CLONE_NEWNET) == 0)
            switched_net = true;
    }
    /* CLONE_VM: no copy of quernd's page tables and no copy-on-write faults
     * after it (the cost of fork grows with quernd's size and thread count).
     * The child runs on the slot's stack with its own plan, both kept until
     * its box is reaped, so this thread does not wait for its exec: the
     * child's setup (mounts, pivot, exec) overlaps whatever this thread does
     * next.  Every signal is blocked across the clone so that no handler of
     * quernd ever runs in the child (it resets them, then unblocks). */
    if (tpl) {
        int e = spawn_fs_own(sys);
        if (e == 0 && setns(sys->tpl_ns, CLONE_NEWNS) < 0)
            e = -errno;
        if (e < 0) {
            rc = e;
            *err = xasprintf("entering the mount template: %s", strerror(-e));
            if (switched_net && setns(sys->host_netns, CLONE_NEWNET) < 0)
                die_invariant("setns back to the host's network namespace");
            goto out;
        }
    }
    /* the slot's IPC namespace, emptied, or a fresh one */
    bool switched_ipc = ipcns_enter(sys, p->slot);
    if (!switched_ipc)
        flags |= CLONE_NEWIPC;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pidfd = -1;
    long pid = clone(child_fn, sp->stack + SPAWN_STACK_SIZE,
                     (int)(flags | CLONE_VM | CLONE_PIDFD), pl, &pidfd);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (switched_net && setns(sys->host_netns, CLONE_NEWNET) < 0)
        die_invariant("setns back to the host's network namespace");
    if (switched_ipc && setns(sys->host_ipcns, CLONE_NEWIPC) < 0)
        die_invariant("setns back to the host's IPC namespace");
    if (tpl && (setns(sys->host_mnt, CLONE_NEWNS) < 0 || fchdir(sys->cwd_fd) < 0))
        die_invariant("setns back to quernd's mount namespace");
    if (pid < 0) {
        rc = -clone_errno;
        *err = xasprintf("clone: %s", strerror(clone_errno));
        goto out;
    }
    /* From here the child may read the plan: it belongs to the slot.  Our
     * copies of the detached trees go (the child holds its own). */
    for (size_t i = 0; i < MAX_FDS; i++)
        if (pl->parent_trees[i] > 0) {
            close(pl->parent_trees[i]);
            pl->parent_trees[i] = 0;
        }
    sp->pl = pl;
    sp->tpl = tpl;
    pl = NULL;
    close(sync[0]);
    sync[0] = -1;
    if (execp[1] >= 0)
        close(execp[1]);
    execp[1] = -1;
    char path[64], map[64];
    snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)sys->host_uid);
    snprintf(path, sizeof(path), "/proc/%ld/uid_map", pid);
    int r1 = write_file(path, map);
    snprintf(path, sizeof(path), "/proc/%ld/gid_map", pid);
    int r2 = write_file(path, map);
    if (r1 < 0 || r2 < 0) {
        rc = r1 < 0 ? r1 : r2;
        *err = xasprintf("writing the uid/gid map: %s", strerror(-rc));
        syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        siginfo_t si;
        (void)waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED | __WALL);
        close(pidfd);
        slot_spawn_done(sys, p->slot);
        goto out;
    }
    if (write(sync[1], "g", 1) != 1) {
        /* the child died already; its exit is reported through the pidfd */
    }
    if (execp[0] >= 0) {
        /* Until the child's exec closes its end (or it exits). */
        char c;
        while (read(execp[0], &c, 1) < 0 && errno == EINTR)
            ;
    }
    out->pid = (pid_t)pid;
    out->pidfd = pidfd;
    out->slot = p->slot;
out:
    if (sync[0] >= 0)
        close(sync[0]);
    if (sync[1] >= 0)
        close(sync[1]);
    if (execp[0] >= 0)
        close(execp[0]);
    if (execp[1] >= 0)
        close(execp[1]);
    plan_free(pl);
    return rc;
}

/* ---- files held after their removal ---- */

#define HELD_MAX_PROCS 1024   /* far over any box's pids limit */

/* A set of (device, inode) pairs, open addressing; ino 0 marks a free slot. */
struct held_set {
    struct held_key {
        dev_t dev;
        ino_t ino;
    } *k;
    size_t cap, n;
};

static size_t held_hash(dev_t dev, ino_t ino, size_t cap)
{
    return (size_t)(((uint64_t)ino * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)dev * 0xc2b2ae3d27d4eb4fULL)) % cap;
}

/* true when (dev, ino) was in the set already; adds it otherwise */
static bool held_add(struct held_set *hs, dev_t dev, ino_t ino)
{
    if ((hs->n + 1) * 2 > hs->cap) {
        size_t ncap = hs->cap ? hs->cap * 2 : 64;
        struct held_key *nk = xcalloc(ncap, sizeof(*nk));
        for (size_t i = 0; i < hs->cap; i++) {
            if (!hs->k[i].ino)
                continue;
            size_t j = held_hash(hs->k[i].dev, hs->k[i].ino, ncap);
            while (nk[j].ino)
                j = (j + 1) % ncap;
            nk[j] = hs->k[i];
        }
        free(hs->k);
        hs->k = nk;
        hs->cap = ncap;
    }
    size_t j = held_hash(dev, ino, hs->cap);
    while (hs->k[j].ino) {
        if (hs->k[j].ino == ino && hs->k[j].dev == dev)
            return true;
        j = (j + 1) % hs->cap;
    }
    hs->k[j].dev = dev;
    hs->k[j].ino = ino;
    hs->n++;
    return false;
}

struct held_walk {
    dev_t dev;
    int64_t max_files, max_bytes;
    struct sandbox_held *h;
    struct held_set counted;   /* files counted, by st_dev and st_ino */
    bool over;
};

/* Counts the file that dirfd/name (a /proc magic link, followed) leads to. */
static void held_one(struct held_walk *w, int dirfd, const char *name)
{
    struct stat st;
    if (w->over || fstatat(dirfd, name, &st, 0) < 0)
        return;
    if (!S_ISREG(st.st_mode) || st.st_nlink != 0 || st.st_dev != w->dev || st.st_ino == 0)
        return;
    if (held_add(&w->counted, st.st_dev, st.st_ino))
        return;
    w->h->files++;
    w->h->bytes += (int64_t)st.st_blocks * 512;
    if ((w->max_files && w->h->files > w->max_files) ||
        (w->max_bytes && w->h->bytes > w->max_bytes))
        w->over = true;
}

static void held_fds(struct held_walk *w, int pfd, const char *dir)
{
    int fd = openat(pfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *e;
    while (!w->over && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            held_one(w, dirfd(d), e->d_name);
    closedir(d);
}

/* The mappings of the process whose /proc directory is pfd whose file is
 * removed ("... (deleted)" in maps), through map_files (quernd is host
 * root).  A file mapped many times is looked at once: maps names its
 * device and inode. */
static void held_maps(struct held_walk *w, int pfd)
{
    int mfd = openat(pfd, "map_files", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mfd < 0)
        return;
    int ffd = openat(pfd, "maps", O_RDONLY | O_CLOEXEC);
    FILE *f = ffd < 0 ? NULL : fdopen(ffd, "re");
    if (!f) {
        if (ffd >= 0)
            close(ffd);
        close(mfd);
        return;
    }
    static const char tag[] = " (deleted)";
    struct held_set looked = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while (!w->over && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n')
            line[--n] = '\0';
        if ((size_t)n < sizeof(tag) || strcmp(line + n - (sizeof(tag) - 1), tag) != 0)
            continue;
        /* "start-end perms offset major:minor inode path".  maps pads the
         * addresses to 8 digits, map_files names them unpadded ("%lx-%lx"):
         * a file mapped below 0x10000000 was looked for under a name that
         * does not exist, and 20 pages mapped there held 1.2 GiB unseen. */
        char range[40];
        unsigned maj, min;
        unsigned long long start, end, ino;
        if (sscanf(line, "%llx-%llx %*s %*s %x:%x %llu", &start, &end, &maj, &min, &ino) != 5 ||
            ino == 0)
            continue;
        if (held_add(&looked, makedev(maj, min), (ino_t)ino))
            continue;
        snprintf(range, sizeof(range), "%llx-%llx", start, end);
        held_one(w, mfd, range);
    }
    free(looked.k);
    free(line);
    fclose(f);
    close(mfd);
}

/* Whether the process whose /proc directory is pfd lives in the box's PID
 * namespace (the box cannot make one below it: the seccomp filter refuses
 * unshare and clone with namespace flags).  A pid read from a children
 * list may have ended and been taken by a host process before its
 * directory was opened; the directory, once open, stays that process's,
 * so this check settles whom it belongs to. */
static bool held_in_box(int pfd, const struct stat *box_ns)
{
    struct stat st;
    return fstatat(pfd, "ns/pid", &st, 0) == 0 && st.st_dev == box_ns->st_dev &&
           st.st_ino == box_ns->st_ino;
}

/* Reads the children of every thread of the process at pfd into q; false
 * when no thread's list could be read (a kernel without
 * CONFIG_PROC_CHILDREN has none). */
static bool held_children(int pfd, pid_t *q, size_t *nq)
{
    if (held_no_children)
        return false;
    int tfd = openat(pfd, "task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = tfd < 0 ? NULL : fdopendir(tfd);
    if (!d) {
        if (tfd >= 0)
            close(tfd);
        return false;
    }
    bool read_one = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[sizeof(e->d_name) + 16];
        snprintf(path, sizeof(path), "%s/children", e->d_name);
        int cfd = openat(dirfd(d), path, O_RDONLY | O_CLOEXEC);
        FILE *c = cfd < 0 ? NULL : fdopen(cfd, "re");
        if (!c) {
            if (cfd >= 0)
                close(cfd);
            continue;
        }
        read_one = true;
        long kid;
        while (fscanf(c, "%ld", &kid) == 1)
            if (kid > 0 && *nq < HELD_MAX_PROCS)
                q[(*nq)++] = (pid_t)kid;
        fclose(c);
    }
    closedir(d);
    return read_one;
}

/* Without children lists: every process of the host whose /proc entry
 * is in the box's PID namespace, but its init.  Costs a look at each host
 * process per check. */
static void held_all(pid_t init, pid_t *q, size_t *nq)
{
    DIR *d = opendir("/proc");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && *nq < HELD_MAX_PROCS) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (pid > 0 && *end == '\0' && pid != init)
            q[(*nq)++] = (pid_t)pid;
    }
    closedir(d);
}

/* Every fd table of the process at pfd (a thread made without
 * CLONE_FILES has its own), its mappings and its executable. */
static void held_process(struct held_walk *w, int pfd)
{
    int tfd = openat(pfd, "task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = tfd < 0 ? NULL : fdopendir(tfd);
    if (!d) {
        if (tfd >= 0)
            close(tfd);
        return;
    }
    struct dirent *e;
    while (!w->over && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[sizeof(e->d_name) + 8];
        snprintf(path, sizeof(path), "%s/fd", e->d_name);
        held_fds(w, dirfd(d), path);
    }
    closedir(d);
    if (!w->over)
        held_maps(w, pfd);
    held_one(w, pfd, "exe");
}

bool sandbox_held_usage(pid_t init, dev_t dev, int64_t max_files, int64_t max_bytes,
                        struct sandbox_held *h)
{
    struct held_walk w = {.dev = dev, .max_files = max_files, .max_bytes = max_bytes, .h = h};
    pid_t *q = NULL;
    char path[32];
    snprintf(path, sizeof(path), "/proc/%d", (int)init);
    int ifd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat box_ns, own_ns;
    /* The box's init is quernd's child and not yet reaped while its run
     * is checked, so its pid is its own; should it have been reaped and
     * the pid taken, a process in quernd's own PID namespace is no box. */
    if (ifd < 0 || fstatat(ifd, "ns/pid", &box_ns, 0) < 0 || stat("/proc/self/ns/pid", &own_ns) < 0 ||
        (box_ns.st_dev == own_ns.st_dev && box_ns.st_ino == own_ns.st_ino))
        goto out;
    q = xcalloc(HELD_MAX_PROCS, sizeof(pid_t));
    size_t nq = 0;
    /* Every process of the box descends from its PID 1 (nothing enters a
     * box's PID namespace from outside), so the children lists of every
     * thread, from init down, reach them all.  Init holds nothing of the
     * code's.  Without children lists, every host process is a candidate
     * and the namespace check below picks the box's. */
    bool lists = held_children(ifd, q, &nq);
    if (!lists)
        held_all(init, q, &nq);
    for (size_t i = 0; i < nq && !w.over; i++) {
        snprintf(path, sizeof(path), "/proc/%d", (int)q[i]);
        int pfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (pfd < 0)
            continue;
        if (held_in_box(pfd, &box_ns)) {
            if (lists)
                held_children(pfd, q, &nq);
            held_process(&w, pfd);
        }
        close(pfd);
    }
out:
    if (ifd >= 0)
        close(ifd);
    free(q);
    free(w.counted.k);
    return w.over;
}

int sandbox_signal(struct sandbox_proc *proc, int sig)
{
    if (proc->pidfd < 0)
        return -ESRCH;
    if (syscall(SYS_pidfd_send_signal, proc->pidfd, sig, NULL, 0) < 0)
        return -errno;
    return 0;
}

int sandbox_reap(struct sandbox_sys *sys, struct sandbox_proc *proc, int *wstatus,
                 struct sandbox_usage *usage)
{
    siginfo_t si;
    struct rusage ru;
    memset(&si, 0, sizeof(si));
    memset(&ru, 0, sizeof(ru));
    memset(usage, 0, sizeof(*usage));
    long r;
    do {
        r = syscall(SYS_waitid, P_PIDFD, proc->pidfd, &si, WEXITED | __WALL, &ru);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    if (si.si_code == CLD_EXITED)
        *wstatus = W_EXITCODE(si.si_status, 0);
    else
        *wstatus = W_EXITCODE(0, si.si_status) | (si.si_code == CLD_DUMPED ? 0x80 : 0);
    close(proc->pidfd);
    proc->pidfd = -1;
    slot_spawn_done(sys, proc->slot);   /* the child is dead: its plan is free */
    ipcns_empty(sys, proc->slot);       /* and so is its whole tree (PID 1) */
    slirp_reap_dead(sys);

    struct slot_cg *c = &sys->cg[proc->slot];
    int64_t ru_cpu = (int64_t)ru.ru_utime.tv_sec * 1000 + ru.ru_utime.tv_usec / 1000 +
                     (int64_t)ru.ru_stime.tv_sec * 1000 + ru.ru_stime.tv_usec / 1000;
    usage->cpu_ms = ru_cpu;
    usage->peak_memory_kb = ru.ru_maxrss;
    usage->peak_rusage = true;
    if (c->cpu_dir) {
        int64_t now = cg_cpu_ns(sys, c);
        if (now >= 0 && c->cpu_base_ns >= 0 && now >= c->cpu_base_ns)
            usage->cpu_ms = (now - c->cpu_base_ns) / 1000000;
    }
    if (c->mem_dir) {
        int64_t peak = -1, oom = -1, hits = -1;
        if (sys->mem_ver == CG_V1) {
            peak = cg_read_i64(c, CGF_MEM_MAXUSE, c->mem_dir, "memory.max_usage_in_bytes");
            oom = cg_read_key(c, CGF_MEM_EVENTS, c->mem_dir, "memory.oom_control", "oom_kill");
            hits = cg_read_i64(c, CGF_MEM_FAILCNT, c->mem_dir, "memory.failcnt");
        } else {
            peak = cg_peak_v2(c);
            oom = cg_read_key(c, CGF_MEM_EVENTS, c->mem_dir, "memory.events", "oom_kill");
            hits = cg_read_key(c, CGF_MEM_EVENTS, c->mem_dir, "memory.events", "max");
        }
        /* The run's own peak: less what the slot held as it started (see
         * cg_peak_start), unless the run met its memory limit, when the
         * kernel may have reclaimed that to make room: then all of it. */
        bool hit = hits >= 0 && c->hit_base >= 0 && hits > c->hit_base;
        if (peak >= 0 && c->mem_start >= 0 && !hit)
            peak = peak > c->mem_start ? peak - c->mem_start : 0;
        if (peak >= 0) {
            usage->peak_memory_kb = peak / 1024;
            usage->peak_rusage = false;
        }
        if (oom >= 0 && c->oom_base >= 0 && oom > c->oom_base)
            usage->oom_killed = true;
    }
    return 0;
}

/* ---- adopting a warm box ---- */

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

/* What the helper child does in the box's mount namespace.  It shares our
 * memory (CLONE_VM|CLONE_VFORK: we are suspended until it exits), so it
 * reads the job and writes its failure into it. */
struct adopt_job {
    int nsfd;
    const char *root;              /* the mount the files go in: "/" or the template's "/quern" */
    uid_t uid;
    const struct sandbox_adopt *a;
    const int *trees;
    const unsigned long *mflags;
    const char *what;
    const char *arg;
    int err;
};

static int adopt_fail(struct adopt_job *j, const char *what, const char *arg)
{
    j->what = what;
    j->arg = arg;
    j->err = errno;
    return 1;
}

static int adopt_child(void *arg)
{
    struct adopt_job *j = arg;
    const struct sandbox_adopt *a = j->a;
    umask(022);   /* its own file system context, as child_main's */
    if (setns(j->nsfd, CLONE_NEWNS) < 0)
        return adopt_fail(j, "setns", NULL);
    for (size_t i = 0; i < a->nmounts; i++) {
        const char *dst = a->mounts[i].box;
        if (syscall(SYS_move_mount, j->trees[i], "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) < 0)
            return adopt_fail(j, "move_mount", dst);
        if (mount(NULL, dst, NULL, j->mflags[i], NULL) < 0)
            return adopt_fail(j, "remount", dst);
    }
    if (a->nfiles == 0)
        return 0;
    /* a template box's /quern is read-only per mount (see tpl_plan) */
    unsigned long per_mount = strcmp(j->root, "/") ? MS_BIND : 0;
    if (mount(NULL, j->root, NULL, MS_REMOUNT | per_mount | MS_NOSUID | MS_NODEV, NULL) < 0)
        return adopt_fail(j, "remount rw", j->root);
    /* Files are made as the box's root: host root is not mapped in the
     * box's user namespace, and owning them is what a spawn does too. */
    syscall(SYS_setfsgid, j->uid);
    syscall(SYS_setfsuid, j->uid);
    for (size_t i = 0; i < a->nfiles; i++) {
        const struct sandbox_file *f = &a->files[i];
        int fd = open(f->box, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
            return adopt_fail(j, "create", f->box);
        size_t off = 0;
        while (off < f->len) {
            ssize_t w = write(fd, f->data + off, f->len - off);
            if (w <= 0) {
                adopt_fail(j, "write", f->box);
                close(fd);
                return 1;
            }
            off += (size_t)w;
        }
        close(fd);
    }
    if (mount(NULL, j->root, NULL, MS_REMOUNT | per_mount | MS_RDONLY | MS_NOSUID | MS_NODEV,
              NULL) < 0)
        return adopt_fail(j, "remount ro", j->root);
    return 0;
}

/* Every thread of the process pid back to nice 0. */
static void renice_all(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long tid = strtol(e->d_name, NULL, 10);
        if (tid > 0)
            (void)setpriority(PRIO_PROCESS, (id_t)tid, 0);
    }
    closedir(d);
}

/* The host pid of the box's PID 2 (the code's process), or -ESRCH. */
static pid_t box_child_pid(pid_t init)
{
    char path[64], b[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)init, (int)init);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -ESRCH;
    ssize_t n = read(fd, b, sizeof(b) - 1);
    close(fd);
    if (n <= 0)
        return -ESRCH;
    b[n] = '\0';
    long v = strtol(b, NULL, 10);
    return v > 0 ? (pid_t)v : -ESRCH;
}

int sandbox_adopt(struct sandbox_sys *sys, struct sandbox_proc *proc,
                  const struct sandbox_adopt *a, char **err)
{
    *err = NULL;
    int rc = 0, nsfd = -1;
    int *trees = xcalloc(a->nmounts + 1, sizeof(int));
    unsigned long *mflags = xcalloc(a->nmounts + 1, sizeof(unsigned long));
    for (size_t i = 0; i < a->nmounts; i++)
        trees[i] = -1;

    /* 1. cgroup limits and counters, as cg_prepare does for a spawn */
    struct sandbox_params p = {.memory_limit_bytes = a->memory_limit_bytes, .max_procs = a->max_procs};
    (void)cg_prepare(sys, proc->slot, &p, false);   /* the memory limit is checked below */
    struct slot_cg *c = &sys->cg[proc->slot];
    int64_t want = a->memory_limit_bytes > 0 ? a->memory_limit_bytes : -1;
    if (c->mem_dir && c->mem_limit != want) {
        rc = -EBUSY;
        *err = xstrdup("the memory limit is below what the started interpreter uses");
        goto out;
    }
    /* 2. rlimits of the code's process */
    /* A box taken just after its spawn: init may not have forked yet. */
    pid_t code = box_child_pid(proc->pid);
    for (int i = 0; code < 0 && i < 200; i++) {
        usleep(500);
        code = box_child_pid(proc->pid);
    }
    if (code < 0) {
        rc = code;
        *err = xstrdup("the box has no code process");
        goto out;
    }
    rlim_t fsz = a->max_file_bytes > 0 ? (rlim_t)a->max_file_bytes : RLIM_INFINITY;
    rlim_t nof = a->max_open_files > 0 ? (rlim_t)a->max_open_files : 256;
    rlim_t np = a->max_procs > 0 ? (rlim_t)a->max_procs : 64;
    if (sys->pids_base)
        np = np * (rlim_t)sys->slots + 64;
    struct rlimit rl[4] = {{fsz, fsz}, {nof, nof}, {np, np}, {RLIM_INFINITY, RLIM_INFINITY}};
    int res[4] = {RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_CPU};
    size_t nres = 3;
    if (a->cpu_seconds > 0) {
        /* + 1 s: the interpreter's start-up is already on its clock */
        rl[3] = (struct rlimit){(rlim_t)a->cpu_seconds + 1, (rlim_t)a->cpu_seconds + 2};
        nres = 4;
    }
    for (size_t i = 0; i < nres; i++) {
        if (prlimit(code, (enum __rlimit_resource)res[i], &rl[i], NULL) < 0) {
            rc = -errno;
            *err = xasprintf("prlimit: %s", strerror(errno));
            goto out;
        }
    }
    renice_all(code);
    (void)setpriority(PRIO_PROCESS, (id_t)proc->pid, 0);
    if (!sys->mem_base && a->memory_limit_bytes > 0) {
        rlim_t as = (rlim_t)a->memory_limit_bytes * 4;
        struct rlimit r = {as, as};
        (void)prlimit(code, RLIMIT_AS, &r, NULL);
    }
    /* 3. mounts and files, from inside the box's mount namespace */
    for (size_t i = 0; i < a->nmounts; i++) {
        trees[i] = (int)syscall(SYS_open_tree, AT_FDCWD, a->mounts[i].host,
                                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (trees[i] < 0) {
            rc = -errno;
            *err = xasprintf("open_tree %s: %s", a->mounts[i].host, strerror(errno));
            goto out;
        }
        mflags[i] = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV |
                    (a->mounts[i].writable ? 0 : MS_RDONLY) | locked_flags(trees[i]);
    }
    if (a->nmounts == 0 && a->nfiles == 0)
        goto out;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/ns/mnt", (int)proc->pid);
    nsfd = open(path, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) {
        rc = -errno;
        *err = xasprintf("open %s: %s", path, strerror(errno));
        goto out;
    }
    bool tpl = proc->slot >= 0 && proc->slot < sys->slots && sys->sp[proc->slot].tpl;
    for (size_t i = 0; tpl && i < a->nfiles; i++) {
        if (!under_quern(a->files[i].box)) {
            rc = -EINVAL;
            *err = xasprintf("%s: a box made from the template takes files in /quern only",
                             a->files[i].box);
            goto out;
        }
    }
    struct adopt_job job = {.nsfd = nsfd, .root = tpl ? "/quern" : "/", .uid = sys->host_uid,
                            .a = a, .trees = trees, .mflags = mflags};
    if (sys->host_mnt >= 0 && sys->cwd_fd >= 0 && spawn_fs_own(sys) == 0) {
        /* In this thread: it has a file system context of its own (entering
         * the template needs one too), so it can enter the box's mount
         * namespace and come back; no helper process to create and wait
         * for.  It must come back as it was: host namespace, cwd, fsuid 0. */
        int r = adopt_child(&job);   /* enters the box's mount namespace first */
        (void)syscall(SYS_setfsgid, 0);
        (void)syscall(SYS_setfsuid, 0);
        if (syscall(SYS_setfsuid, 0) != 0 || syscall(SYS_setfsgid, 0) != 0 ||
            setns(sys->host_mnt, CLONE_NEWNS) < 0 || fchdir(sys->cwd_fd) < 0)
            die_invariant("back to quernd's fsuid, mount namespace and cwd after adopting");
        if (r != 0) {
            rc = job.err ? -job.err : -EIO;
            *err = xasprintf("%s%s%s: %s", job.what ? job.what : "adopt", job.arg ? " " : "",
                             job.arg ? job.arg : "", strerror(job.err ? job.err : EIO));
        }
        goto out;
    }
    int hpidfd = -1;
    long hp = clone(adopt_child, sys->stack + sys->stack_size,
                    CLONE_VM | CLONE_VFORK | CLONE_PIDFD, &job, &hpidfd);
    if (hp < 0) {
        rc = -errno;
        *err = xasprintf("clone: %s", strerror(errno));
        goto out;
    }
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    while (waitid((idtype_t)P_PIDFD, (id_t)hpidfd, &si, WEXITED | __WALL) < 0 && errno == EINTR)
        ;
    close(hpidfd);
    if (si.si_code != CLD_EXITED || si.si_status != 0) {
        rc = job.err ? -job.err : -EIO;
        *err = xasprintf("%s%s%s: %s", job.what ? job.what : "adopt helper", job.arg ? " " : "",
                         job.arg ? job.arg : "", strerror(job.err ? job.err : EIO));
    }
out:
    for (size_t i = 0; i < a->nmounts; i++)
        if (trees[i] >= 0)
            close(trees[i]);
    if (nsfd >= 0)
        close(nsfd);
    free(trees);
    free(mflags);
    return rc;
}
