/*
 * sandbox — starts one process tree in a fresh set of namespaces (user, PID,
 * mount, network, IPC, UTS, cgroup) with a read-only view of the host's
 * system directories, rlimits, cgroup accounting/limits and a seccomp filter,
 * running build/quern-init as its PID 1.  It knows nothing of runs, JSON or
 * logs: exec.c decides what to mount and run, sandbox.c makes it so.
 *
 * Spawn path (kept lean, every run pays it): the caller's thread cuts the
 * run's directories from the host as detached mounts (open_tree), switches
 * to a prepared empty network namespace of the slot's pool (a run with
 * network: the slot's second one, with a slirp4netns for user-mode NAT,
 * made on its first such run), to the slot's
 * IPC namespace (made once, emptied of every System V object and POSIX
 * message queue before each spawn) and to the template mount namespace (a
 * read-only root with the system directories and device nodes, built once;
 * setns is per-thread), clone()s a child with CLONE_VM (no copy of quernd's
 * page tables) on the slot's own stack in new user/PID/mount/UTS/cgroup
 * namespaces, switches back, writes the child's uid/gid maps and lets it
 * go, without waiting for its exec: the child's plan and stack stay the
 * slot's until its box is reaped.  The child joins the slot's cgroups
 * itself, drops to the box's uid 0 (an unprivileged host uid), mounts one
 * tmpfs on /quern (its files; read-only per mount) whose hidden directory
 * it binds on /tmp, a /proc and the run's directories, sets rlimits,
 * no_new_privs and the pre-compiled seccomp program, and execs quern-init
 * from an fd.  The child never allocates and
 * makes raw system calls only (it shares a multi-threaded process's memory
 * and the spawning thread's TLS, so not even errno).  A spawn whose mount
 * points the template lacks builds a whole root instead (copy of the host's
 * mounts, binds, pivot_root).  Slots are "cells" to exec.c: warm boxes have
 * their own.
 *
 * Threading: a struct sandbox_sys is used by one thread at a time (exec's
 * supervisor thread); that thread gets a file system context of its own
 * (unshare(CLONE_FS)) at its first spawn, to enter the template.
 * sandbox_sys_new() starts short-lived threads to create the network
 * namespaces, and the first spawn one to build the template.
 */
#ifndef QUERN_SANDBOX_H
#define QUERN_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Where the child's fds go: 0 stdin, 1 stdout, 2 stderr, 3 control channel,
 * 4 status channel of quern-init (never seen by the code). */
#define SANDBOX_CONTROL_FD 3
#define SANDBOX_STATUS_FD 4

/* The box's uid/gid 0 is this host uid/gid (configurable by QUERN_SANDBOX_UID). */
#define SANDBOX_DEFAULT_HOST_UID 100000

struct sandbox_sys;

/* A logger for plain statements about what works and what falls back. */
typedef void (*sandbox_log_fn)(void *ctx, const char *message);

struct sandbox_mount {
    const char *host;   /* absolute host path */
    const char *box;    /* absolute path inside the box */
    bool writable;
};

/* A file made in the box's own (tmpfs, read-only once made) root, so that
 * small per-run inputs cost no host inodes. */
struct sandbox_file {
    const char *box;    /* absolute path inside the box */
    const char *data;
    size_t len;
};

struct sandbox_params {
    int slot;                       /* 0 .. slots-1: selects cgroup and netns */
    const char *root_dir;           /* empty host dir the new root is mounted on */
    const char *const *argv;        /* quern-init's argv: "quern-init", interpreter, args.. */
    const char *const *envp;        /* the whole environment of the box */
    const struct sandbox_mount *mounts;
    size_t nmounts;
    const struct sandbox_file *files;
    size_t nfiles;
    const char *const *dirs;        /* empty dirs made in the root (mount points for adopt) */
    size_t ndirs;
    int64_t root_bytes;             /* size cap of the root tmpfs (0: 4 MiB + the files) */
    int nice;                       /* > 0: start at this nice value (sandbox_adopt resets it) */
    const char *cwd;                /* inside the box */
    size_t nsecrets;                /* files /run/secrets/NAME */
    const char *const *secret_names, *const *secret_values;
    bool network;                   /* network through the slot's slirp4netns (or, without
                                       it, the host's network namespace) */
    int64_t memory_limit_bytes, max_procs, max_file_bytes, max_open_files, cpu_seconds;
    int fd_stdin, fd_stdout, fd_stderr, fd_control, fd_status; /* the child's ends */
    int fd_go;                      /* > 0: becomes fd 6 of the code (a warm box's loader) */
};

struct sandbox_proc {
    pid_t pid;       /* host pid of the box's PID 1 (quern-init) */
    int pidfd;       /* readable when it exits; owned, closed by sandbox_reap */
    int slot;
};

struct sandbox_usage {
    int64_t cpu_ms;           /* whole tree: cgroup cpuacct, else rusage of children */
    int64_t peak_memory_kb;   /* whole tree: cgroup peak less the slot's usage at the box's start
                                 (all of it when the limit was met), else max RSS of one process */
    bool peak_rusage;         /* peak_memory_kb is init's rusage, which also counts quernd's
                                 resident memory (it shared it until its exec): quern-init's
                                 status line has the figure of its children */
    bool oom_killed;          /* the memory cgroup's OOM killer fired during the run */
};

/* Files a box holds after they were removed (see sandbox_held_usage). */
struct sandbox_held {
    int64_t bytes;   /* allocated bytes (st_blocks * 512) */
    int64_t files;   /* distinct files */
};

/* Prepares what every spawn shares: cgroup mode (v1 or v2 detected, per-slot
 * cgroups made), the compiled seccomp program, the quern-init fd, one netns
 * per slot.  Returns NULL and a malloc'd *err when the sandbox cannot work at
 * all; missing optional controls are reported through log and fall back. */
struct sandbox_sys *sandbox_sys_new(int slots, const char *init_path, sandbox_log_fn log,
                                    void *log_ctx, char **err);
/* Removes the per-slot cgroups and closes the pool.  No box may be alive. */
void sandbox_sys_free(struct sandbox_sys *sys);

/* Declares box path `box` (absolute, outside /quern) as a mount point the
 * shared template root must have (see "the template mount namespace" in
 * sandbox.c); call before the first spawn.  Spawns whose mounts all land on
 * declared points or under /quern skip building a whole root.  0 or
 * -EINVAL / -EBUSY (the template is built already). */
int sandbox_sys_add_mountpoint(struct sandbox_sys *sys, const char *box);

/* The host uid/gid the box's root maps to (scratch dirs are chown'd to it). */
uid_t sandbox_host_uid(const struct sandbox_sys *sys);

/* Starts a box; fills *out.  0, or a negative errno (with *err malloc'd)
 * when the clone itself fails.  Failures inside the child (a mount, the exec)
 * are written to fd_status as "E <what>: errno N" and the child exits 127. */
int sandbox_spawn(struct sandbox_sys *sys, const struct sandbox_params *p,
                  struct sandbox_proc *out, char **err);

/* What a warm box gets when a run takes it (see sandbox_adopt). */
struct sandbox_adopt {
    const struct sandbox_mount *mounts;   /* onto directories the box's root has */
    size_t nmounts;
    const struct sandbox_file *files;     /* into existing directories of the root */
    size_t nfiles;
    int64_t memory_limit_bytes, max_procs, max_file_bytes, max_open_files, cpu_seconds;
};

/* Adds to *h the regular files on device dev that the processes of the box
 * whose PID 1 is init hold open, mapped or as their executable although no
 * link to them is left: a walk of the box's directories cannot see them, yet
 * they take the disk until the box dies.  Stops early, returning true, as
 * soon as h->files passes max_files or h->bytes passes max_bytes; otherwise
 * false (also for a box that is gone).  Each file counts once. */
bool sandbox_held_usage(pid_t init, dev_t dev, int64_t max_files, int64_t max_bytes,
                        struct sandbox_held *h);

/* Gives a running box (started ahead, still idle) a run's limits, mounts
 * and files: the slot's cgroup limits and counters are reset as for a
 * spawn, rlimits are set on the box's PID 2 (the interpreter), the nice
 * value of every thread of the box goes back to 0, host paths
 * are bound into the box's mount namespace and the files written into its
 * root (which is read-only again afterwards).  0, or a negative errno with
 * *err malloc'd; the box must then be killed. */
int sandbox_adopt(struct sandbox_sys *sys, struct sandbox_proc *proc,
                  const struct sandbox_adopt *a, char **err);

/* Sends sig to the box's PID 1; SIGKILL there ends the whole tree. */
int sandbox_signal(struct sandbox_proc *proc, int sig);

/* Collects the exited PID 1 (call when pidfd is readable, or to block until
 * it exits), fills *wstatus (as waitpid) and *usage, closes the pidfd. */
int sandbox_reap(struct sandbox_sys *sys, struct sandbox_proc *proc, int *wstatus,
                 struct sandbox_usage *usage);

#endif
