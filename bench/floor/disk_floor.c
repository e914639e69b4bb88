/* disk_floor FILE N: the floor of `lightvm bench disk`. N 4 KiB requests on
 * FILE as the blkbench guest makes them (a pread, then a pwrite of it back,
 * at the same scattered offsets), each timed; prints one duration in ns a
 * line. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define BS 4096

static uint64_t now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: disk_floor FILE N\n");
        return 2;
    }
    long n = atol(argv[2]);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0 || n < 2) {
        perror(argv[1]);
        return 1;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    uint64_t blocks = (uint64_t)size / BS, b = 0;
    static char buf[BS] __attribute__((aligned(4096)));
    uint64_t *t = calloc((size_t)n, sizeof *t);
    if (!t || blocks < 2)
        return 1;
    for (long i = 0; i + 1 < n; i += 2) {
        b = (b + 7919) % blocks;
        uint64_t t0 = now();
        if (pread(fd, buf, BS, (off_t)(b * BS)) != BS)
            return 1;
        uint64_t t1 = now();
        if (pwrite(fd, buf, BS, (off_t)(b * BS)) != BS)
            return 1;
        uint64_t t2 = now();
        t[i] = t1 - t0;
        t[i + 1] = t2 - t1;
    }
    for (long i = 0; i < n; i++)
        printf("%lu\n", (unsigned long)t[i]);
    return 0;
}
