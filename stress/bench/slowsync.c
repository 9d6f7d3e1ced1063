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
 *     gcc -O2 -shared -fPIC -o slowsync.so stress/bench/slowsync.c -ldl
 *     SLOW_SYNC_US=300 LD_PRELOAD="$PWD/slowsync.so" python -m stress.bench.core
 * Spawned worker processes inherit the environment, so they are slowed too.
 * A benchmark aid only: never built or loaded by the package.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static struct timespec pause_for = { 0, 1000 * 1000 };
static int (*real_fdatasync)(int);
static int (*real_fsync)(int);

/* Read the setting and find the real calls once, when the library loads and
 * before any thread can sync: no lazy set-up raced by two threads. */
__attribute__((constructor)) static void set_up(void)
{
    const char *s = getenv("SLOW_SYNC_US");
    long us = s ? atol(s) : 1000;
    pause_for.tv_sec = us / 1000000;
    pause_for.tv_nsec = (us % 1000000) * 1000;
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
}

/* Pause, then make the real call (S1); an EINTR shortens the pause, never the
 * sync. */
int fdatasync(int fd)
{
    nanosleep(&pause_for, NULL);
    return real_fdatasync(fd);
}

int fsync(int fd)
{
    nanosleep(&pause_for, NULL);
    return real_fsync(fd);
}
