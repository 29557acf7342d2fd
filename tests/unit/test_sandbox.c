/* test_sandbox — sandbox.c directly: a box starts, sees the layout it
 * should, cannot see or change the host, and its whole tree dies with it. */
#include "t.h"

#include "sandbox.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sandbox_sys *sys;
static char tmpdir[] = "/tmp/quern-tsb-XXXXXX";

static void quiet(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "  [sandbox] %s\n", msg);
}

static char *init_path(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return xstrdup("build/quern-init");
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    return xasprintf("%s/../quern-init", exe);
}

static struct sandbox_sys *get_sys(void)
{
    if (!sys) {
        char *err = NULL, *ip = init_path();
        if (!mkdtemp(tmpdir))
            abort();
        sys = sandbox_sys_new(2, ip, quiet, NULL, &err);
        if (!sys)
            fprintf(stderr, "sandbox_sys_new: %s\n", err);
        free(err);
        free(ip);
    }
    return sys;
}

/* Runs sh -c script in a box; returns the wait status, stdout in *out. */
static int run_sh(const char *script, bool network, char **out, struct sandbox_usage *u)
{
    struct sandbox_sys *s = get_sys();
    if (!s)
        return -1;
    int in[2], o[2], ctl[2], st[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(o, O_CLOEXEC) || pipe2(ctl, O_CLOEXEC) || pipe2(st, O_CLOEXEC))
        abort();
    char *scratch = xasprintf("%s/scratch", tmpdir);
    mkdir(scratch, 0755);
    if (chown(scratch, sandbox_host_uid(s), sandbox_host_uid(s)) < 0)
        abort();
    struct sandbox_mount m[] = {{scratch, "/scratch", true}};
    const char *argv[] = {"quern-init", "/bin/sh", "-c", script, NULL};
    const char *envp[] = {"PATH=/usr/bin:/bin", "HOME=/scratch", NULL};
    const char *sn[] = {"TOKEN"}, *sv[] = {"s3cret"};
    struct sandbox_params p = {
        .slot = 0, .argv = argv, .envp = envp, .mounts = m, .nmounts = 1, .cwd = "/scratch",
        .nsecrets = 1, .secret_names = sn, .secret_values = sv, .network = network,
        .memory_limit_bytes = 64 << 20, .max_procs = 16, .max_file_bytes = 1 << 20,
        .max_open_files = 64, .cpu_seconds = 10,
        .fd_stdin = in[0], .fd_stdout = o[1], .fd_stderr = o[1], .fd_control = ctl[1],
        .fd_status = st[1],
    };
    struct sandbox_proc pr;
    char *err = NULL;
    int rc = sandbox_spawn(s, &p, &pr, &err);
    close(in[0]);
    close(o[1]);
    close(ctl[1]);
    close(st[1]);
    close(in[1]);
    int ws = -1;
    if (rc == 0) {
        struct buf b;
        buf_init(&b);
        char chunk[4096];
        ssize_t n;
        while ((n = read(o[0], chunk, sizeof(chunk))) > 0)
            buf_append(&b, chunk, (size_t)n);
        n = read(st[0], chunk, sizeof(chunk) - 1);
        if (n > 0 && chunk[0] == 'E') {
            chunk[n] = 0;
            fprintf(stderr, "  status: %s", chunk);
        }
        struct sandbox_usage uu;
        sandbox_reap(s, &pr, &ws, u ? u : &uu);
        *out = buf_steal(&b);
    } else {
        fprintf(stderr, "spawn: %s\n", err);
        *out = xstrdup("");
    }
    free(err);
    close(o[0]);
    close(ctl[0]);
    close(st[0]);
    free(scratch);
    return ws;
}

TEST(box_runs_and_sees_its_layout)
{
    char *out = NULL;
    int ws = run_sh("id -u; echo pid=$$; cat /run/secrets/TOKEN; echo; pwd; ls /", false, &out, NULL);
    CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    CHECK(strstr(out, "0\n") == out);
    CHECK(strstr(out, "pid=2\n") != NULL);  /* quern-init is 1 */
    CHECK(strstr(out, "s3cret") != NULL);
    CHECK(strstr(out, "/scratch\n") != NULL);
    CHECK(strstr(out, "home") == NULL);
    if (t_failed_checks)
        fprintf(stderr, "%s\n", out);
    free(out);
}

TEST(host_is_out_of_reach)
{
    char *out = NULL;
    int ws = run_sh("cat /etc/shadow >/dev/null 2>&1 && echo SHADOW;"
                    "cat /proc/1/environ | tr '\\0' '\\n' | grep -q PATH= && echo ENVIRON_HAS_PATH;"
                    "touch /usr/x 2>/dev/null && echo WROTE_USR;"
                    "touch /x 2>/dev/null && echo WROTE_ROOT;"
                    "touch /etc/x 2>/dev/null && echo WROTE_ETC;"
                    "ls /root >/dev/null 2>&1 && echo ROOT_VISIBLE;"
                    "touch /tmp/ok && echo TMP_OK; touch ok && echo SCRATCH_OK",
                    false, &out, NULL);
    CHECK(WIFEXITED(ws));
    CHECK(strstr(out, "SHADOW") == NULL);
    CHECK(strstr(out, "WROTE") == NULL);
    CHECK(strstr(out, "ROOT_VISIBLE") == NULL);
    CHECK(strstr(out, "TMP_OK") != NULL);
    CHECK(strstr(out, "SCRATCH_OK") != NULL);
    if (t_failed_checks)
        fprintf(stderr, "%s\n", out);
    free(out);
}

TEST(exit_status_and_signal)
{
    char *out = NULL;
    int ws = run_sh("exit 7", false, &out, NULL);
    CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 7);
    free(out);
    ws = run_sh("kill -9 $$", false, &out, NULL);
    CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 128 + 9);
    free(out);
}

TEST(memory_limit_kills)
{
    char *out = NULL;
    struct sandbox_usage u;
    int ws = run_sh("a=x; while true; do a=$a$a; done", false, &out, &u);
    CHECK(!(WIFEXITED(ws) && WEXITSTATUS(ws) == 0));
    CHECK(u.oom_killed);
    CHECK(u.peak_memory_kb > 1000);
    free(out);
}

TEST(teardown)
{
    if (sys) {
        sandbox_sys_free(sys);
        sys = NULL;
        char *cmd = xasprintf("rm -rf %s", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "cleanup failed\n");
        free(cmd);
    }
}
