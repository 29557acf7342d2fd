/*
 * exec — runs task code in sandboxes: a fixed number of slots owned by one
 * supervisor thread that spawns each run's box (sandbox.c), streams its
 * stdout/stderr lines and fd-3 control messages, feeds its stdin, enforces
 * the wall, inactivity and output limits, chains iterations ("continue"),
 * and finishes with a status, error code, usage, output and artifacts.
 *
 * Threading: exec_start/send/close_stdin/cancel/free_slots may be called from
 * any thread; they queue a command for the supervisor and return at once.
 * Every callback runs on the supervisor thread and must not block (queue the
 * work elsewhere); callbacks may call exec_send/exec_cancel/exec_start.
 * quernd must not reap children with waitpid(-1, ..., __WALL): boxes are
 * clone children with no exit signal, so a plain waitpid(-1) never sees them.
 */
#ifndef QUERN_EXEC_H
#define QUERN_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct exec;

/* Everything a run needs; exec_start copies what it keeps. */
/* kill_grace_ms: no grace, SIGKILL at once (a task's kill_grace_ms 0) */
#define EXEC_GRACE_NONE (-1)

/* exec_result.storage_use: opened (IN_OPEN: a file or the directory
 * opened, to list it too), accessed (read, written, created, renamed,
 * removed, or its attributes changed) */
#define EXEC_ST_OPENED 1u
#define EXEC_ST_ACCESSED 2u

struct exec_spec {
    const char *run_id, *task_id, *project_id;
    int attempt;
    const char *runtime_id;
    const char *code;
    size_t code_len;
    const char *input_json;        /* the run's input (NULL: "null") */
    const char *checkpoint_json;   /* latest checkpoint data or NULL */
    const char *work_root;         /* dir under which exec makes the run's dir */
    const char *storage_account_dir, *storage_project_dir, *storage_org_dir; /* may be NULL */
    int64_t timeout_ms, inactivity_timeout_ms, kill_grace_ms;   /* 0: 30 s, none, 2 s
                                                                   * (EXEC_GRACE_NONE: SIGKILL
                                                                   * at once, no SIGTERM) */
    int64_t memory_limit_mb, max_output_bytes, max_iterations;  /* 0: 256, 10 MiB, 500 */
    int64_t max_procs, max_open_files, max_file_bytes;          /* 0: 64, 256, 64 MiB */
    bool network;
    size_t nsecrets;                /* at most EXEC_MAX_SECRETS */
    const char *const *secret_names;
    const char *const *secret_values;
    bool secrets_env;
};

/* The secrets a run may have: as many as a task may name (api_tasks.c). */
#define EXEC_MAX_SECRETS 100

struct exec_artifact {
    char *name;      /* relative to QUERN_ARTIFACTS, e.g. "report.txt", "sub/a.png" */
    char *path;      /* host path of exec's copy, valid until exec_result_release */
    int64_t size;
};

struct exec_result {
    const char *status;       /* "completed" | "failed" | "timed_out" | "canceled" */
    const char *error_code;   /* NULL, "exit_code", "timeout", "inactivity_timeout",
                                 "memory_limit_exceeded", "output_limit_exceeded", "signal",
                                 "invalid_output", "max_iterations", "runtime_unavailable",
                                 "disk_limit_exceeded", "sandbox_error" */
    char *error_message;      /* e.g. "killed by SIGKILL"; NULL when completed */
    int exit_code;            /* -1 when killed or never started */
    int64_t cpu_ms, peak_memory_kb, wall_ms;   /* summed (peak: max) over iterations */
    int iterations;           /* iterations started, >= 1 once a box ran */
    json_t *output;           /* QUERN_OUTPUT file, else the last "output" message; or NULL */
    unsigned storage_use[3];  /* account, project, org: EXEC_ST_* bits, how the code (or
                                 anyone) used the instance's top directory or a file at
                                 its top */
    size_t nartifacts;
    struct exec_artifact *artifacts;
    char *priv_dir;           /* exec's: removed by exec_result_release */
};

struct exec_callbacks {
    void *ctx;
    /* One stdout/stderr line (type "stdout"/"stderr", level NULL, data NULL) or
     * a control "log" (type "log", level, message, data or NULL).  Secret
     * values are already replaced by "***".  Iterations count from 1. */
    void (*on_log)(void *ctx, const char *run_id, const char *type, const char *level,
                   const char *message, const json_t *data, int iteration);
    /* Control messages other than log: progress, checkpoint, output, usage,
     * input_request, continue (and unknown types), as the code sent them
     * (redacted).  msg is borrowed for the call. */
    void (*on_control)(void *ctx, const char *run_id, const json_t *msg, int iteration);
    /* The run is over; ownership of res passes to the callee, who must call
     * exec_result_release(res) (possibly later, from any thread). */
    void (*on_exit)(void *ctx, const char *run_id, struct exec_result *res);
    /* Optional: plain statements about the sandbox (what falls back). */
    void (*on_notice)(void *ctx, const char *message);
    /* Optional: called on the supervisor thread after each round of the
     * callbacks above (the events of one wake-up): a callee that queues what
     * it is given may wake its consumer once here rather than per call. */
    void (*on_flush)(void *ctx);
    /* Optional: true while the callee holds more of the boxes' output than
     * it wants (its consumer is behind).  The supervisor then stops reading
     * the boxes' stdout, stderr and fd 3 (they block on their writes, which
     * is the back-pressure) and looks again a few milliseconds later; exits
     * and timers go on. */
    bool (*congested)(void *ctx);
};

/* Starts the supervisor with `slots` execution slots (<= 0: two per CPU, at
 * least 2).  quern-init is found at $QUERN_INIT, or beside/above the running
 * program.  NULL with a malloc'd *err when sandboxing is impossible. */
struct exec *exec_new(int slots, const struct exec_callbacks *cb, char **err);
/* Kills every box still running (no on_exit for them), stops the thread. */
void exec_free(struct exec *ex);

/* Queues a run.  0; -EBUSY when no slot is free; -ENOENT for an unknown
 * runtime; -EEXIST when that run_id is live; -EINVAL for a bad spec.  A
 * missing interpreter is reported through on_exit (runtime_unavailable). */
int exec_start(struct exec *ex, const struct exec_spec *spec);
/* Writes one JSON line to the run's stdin (a newline is added if missing);
 * also ends an input_request wait.  -ENOENT if the run has no live box. */
int exec_send(struct exec *ex, const char *run_id, const char *json_line);
/* Closes the run's stdin once queued lines are written.  -ENOENT as above. */
int exec_close_stdin(struct exec *ex, const char *run_id);
/* SIGTERM to the box, SIGKILL after kill_grace_ms; on_exit says "canceled". */
int exec_cancel(struct exec *ex, const char *run_id);
/* The host uid that a box's root maps to: files a box must write (storage
 * directories) belong to it. */
unsigned exec_box_uid(struct exec *ex);

/* Starts the warm pools (runtime.h) now, with their boxes' directories
 * under work_root; without it they start at the first exec_start and follow
 * its work_root.  Any thread. */
#define EXEC_WARM 1
void exec_prewarm(struct exec *ex, const char *work_root);

/* Counters since exec_new (any thread). */
struct exec_stats {
    int64_t warm_starts;   /* runs whose first iteration took a warm box */
    int64_t cold_starts;   /* runs spawned a box of their own */
    int warm_ready;        /* warm boxes waiting now */
};
void exec_get_stats(struct exec *ex, struct exec_stats *out);

/* Lets up to n (<= 4 per slot) accepted starts wait inside exec for a
 * slot, beyond the runs in the slots (default 0): a caller that refills
 * the slots after each on_exit then never leaves one idle during its own
 * round trip.  A waiting run is started, in order, as soon as a slot frees;
 * exec_send/close_stdin queue for it, exec_cancel ends it at once. */
#define EXEC_MAX_BACKLOG_PER_SLOT 4
void exec_set_backlog(struct exec *ex, int n);

/* Slots not taken by a run (plus room in the backlog). */
int exec_free_slots(struct exec *ex);
/* The number of execution slots (fixed at exec_new). */
int exec_slots(const struct exec *ex);

/* Frees a result and removes exec's copies of its artifacts. */
void exec_result_release(struct exec_result *res);

#endif
