/*
 * fork_exec: the paper's "process" baseline, in C. Each iteration forks,
 * execs a static binary (default: build/true next to this program) with
 * the given arguments and an empty environment, and waits for it; the
 * child must exit with status 0. Prints per-iteration times in
 * milliseconds as JSON on stdout: {"samples_ms":[...]}.
 *
 * The children's stdout goes to this program's stderr, so that nothing a
 * child prints can corrupt the JSON (set up once, outside the timed loop).
 * The same loop times other peers, e.g. one `crun run` per iteration.
 *
 * usage: fork_exec iterations [binary [args...]]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100;
    const char *bin = argc > 2 ? argv[2] : "true";
    if (n <= 0) {
        fprintf(stderr, "fork_exec: iterations must be positive\n");
        return 2;
    }
    double *samples = calloc((size_t)n, sizeof *samples);
    /* argv[0] of the child is the binary, then the arguments after it. */
    int child_argc = argc > 2 ? argc - 2 : 1;
    char **child_argv = calloc((size_t)child_argc + 1, sizeof *child_argv);
    if (!samples || !child_argv)
        return 1;
    child_argv[0] = (char *)bin;
    for (int i = 1; i < child_argc; i++)
        child_argv[i] = argv[2 + i];
    char *child_env[] = {NULL};

    /* Keep stdout for the JSON; the children write theirs to stderr. */
    fflush(stdout);
    int json_fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    FILE *json = json_fd < 0 ? NULL : fdopen(json_fd, "w");
    if (!json || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
        fprintf(stderr, "fork_exec: redirecting stdout: %s\n", strerror(errno));
        return 1;
    }

    for (int i = 0; i < n; i++) {
        double t0 = now_ms();
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "fork_exec: fork: %s\n", strerror(errno));
            return 1;
        }
        if (pid == 0) {
            execve(bin, child_argv, child_env);
            _exit(127);
        }
        int status;
        if (waitpid(pid, &status, 0) < 0) {
            fprintf(stderr, "fork_exec: waitpid: %s\n", strerror(errno));
            return 1;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (WIFEXITED(status))
                fprintf(stderr, "fork_exec: %s exited with status %d (iteration %d)\n", bin, WEXITSTATUS(status), i);
            else
                fprintf(stderr, "fork_exec: %s was killed by signal %d (iteration %d)\n", bin, WTERMSIG(status), i);
            return 1;
        }
        samples[i] = now_ms() - t0;
    }
    fprintf(json, "{\"samples_ms\":[");
    for (int i = 0; i < n; i++)
        fprintf(json, "%s%.4f", i ? "," : "", samples[i]);
    fprintf(json, "]}\n");
    return fclose(json) == 0 ? 0 : 1;
}
