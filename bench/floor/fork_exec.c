/*
 * fork_exec: the paper's "process" baseline, in C. Each iteration forks,
 * execs a static binary (default: build/true next to this program) and
 * waits for it. Prints per-iteration times in milliseconds as JSON:
 * {"samples_ms":[...]}.
 *
 * usage: fork_exec iterations [binary]
 */
#define _GNU_SOURCE
#include <errno.h>
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
    if (!samples)
        return 1;
    char *child_argv[] = {(char *)bin, NULL};
    char *child_env[] = {NULL};
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
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "fork_exec: %s did not exit 0\n", bin);
            return 1;
        }
        samples[i] = now_ms() - t0;
    }
    printf("{\"samples_ms\":[");
    for (int i = 0; i < n; i++)
        printf("%s%.4f", i ? "," : "", samples[i]);
    printf("]}\n");
    return 0;
}
