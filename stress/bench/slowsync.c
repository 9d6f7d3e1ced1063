/* slowsync.c: an emulated slower disk for benchmarks that compare engines.
 *
 * Responsibility: make every fsync() and fdatasync() of a process take
 * SLOW_SYNC_US microseconds longer (default 1000) before the real call, so
 * that mvcc and sqlite3 (or lmdb) run against the same slower disk in one
 * benchmark run.  mvcc's own `sync_delay` knob (storage/wal.py) slows only
 * mvcc's WAL; this slows every engine in the process, through libc.
 *
 * Invariants
 * (S1) The real call is always made, after the pause: durability is unchanged.
 * (S2) Only the two sync calls are wrapped; nothing else of libc changes.
 *
 * Use (docs/benchmarks.md, "Counters and the disk's sync time"):
 *     gcc -O2 -shared -fPIC -o /tmp/slowsync.so stress/bench/slowsync.c -ldl
 *     SLOW_SYNC_US=300 LD_PRELOAD=/tmp/slowsync.so python -m stress.bench.core
 * Spawned worker processes inherit the environment, so they are slowed too.
 * A benchmark aid only: never built or loaded by the package.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static long delay_us = -1;

static void pause_before_sync(void)
{
    if (delay_us < 0) {
        const char *s = getenv("SLOW_SYNC_US");
        delay_us = s ? atol(s) : 1000;
    }
    struct timespec t = { delay_us / 1000000, (delay_us % 1000000) * 1000 };
    nanosleep(&t, NULL); /* an EINTR shortens the pause, never the sync (S1) */
}

/* One wrapper per call, made by one macro: look the real call up once, pause,
 * then make it (S1). */
#define SLOWED(name)                                                     \
    int name(int fd)                                                     \
    {                                                                    \
        static int (*real)(int);                                         \
        if (!real)                                                       \
            real = (int (*)(int))dlsym(RTLD_NEXT, #name);                \
        pause_before_sync();                                             \
        return real(fd);                                                 \
    }

SLOWED(fdatasync)
SLOWED(fsync)
