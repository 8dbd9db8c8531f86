/* The database writer lock (store/wlock.h): mutual exclusion across
 * processes, a holder killed mid-hold, a holder that is stuck, a damaged file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "store/wlock.h"

#define PROCS 4
#define ITERS 2000

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/meao-wlock-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db-wlock", dir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[200];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void reap(pid_t pid, int want_status)
{
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), want_status);
}

/* A child that takes the lock, says so on fd, and then waits to be killed. */
static pid_t holder(int fd)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct meao_wlock *l;
        if (meao_wlock_open(path, &l) != MEAO_OK || meao_wlock_acquire(l, -1, NULL) != MEAO_OK)
            _exit(1);
        if (write(fd, "h", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    return pid;
}

static void wait_held(int fd)
{
    char c;
    assert_int_equal(read(fd, &c, 1), 1);
}

/* Unsynchronised read-modify-write of a shared counter under the lock from
 * several processes: any overlap would lose increments. */
static void excludes_across_processes(void **state)
{
    volatile uint64_t *counter;
    pid_t pids[PROCS];
    (void)state;
    counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(counter != MAP_FAILED);
    *counter = 0;
    for (int i = 0; i < PROCS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            struct meao_wlock *l;
            if (meao_wlock_open(path, &l) != MEAO_OK)
                _exit(1);
            for (int k = 0; k < ITERS; k++) {
                uint64_t v;
                if (meao_wlock_acquire(l, -1, NULL) != MEAO_OK)
                    _exit(2);
                v = *counter;
                if (k % 64 == 0)
                    usleep(10); /* give the others a chance to overlap, were they let in */
                *counter = v + 1;
                meao_wlock_release(l);
            }
            meao_wlock_close(l);
            _exit(0);
        }
    }
    for (int i = 0; i < PROCS; i++)
        reap(pids[i], 0);
    assert_int_equal(*counter, (uint64_t)PROCS * ITERS);
    munmap((void *)counter, 4096);
}

/* Two handles in one process (the loop and a pool thread) exclude each
 * other too, and a released lock is free for the other handle at once. */
static void two_handles_in_one_process(void **state)
{
    struct meao_wlock *a, *b;
    (void)state;
    assert_int_equal(meao_wlock_open(path, &a), MEAO_OK);
    assert_int_equal(meao_wlock_open(path, &b), MEAO_OK);
    assert_int_equal(meao_wlock_acquire(a, -1, NULL), MEAO_OK);
    assert_int_equal(meao_wlock_acquire(b, 0, NULL), MEAO_E_DB); /* held: no wait at all */
    meao_wlock_release(a);
    assert_int_equal(meao_wlock_acquire(b, 0, NULL), MEAO_OK);
    meao_wlock_release(b);
    meao_wlock_close(a);
    meao_wlock_close(b);
}

/* kill -9 of the holder: the next locker recovers the lock (EOWNERDEAD),
 * is told so, and the lock works normally afterwards. */
static void holder_killed_mid_hold(void **state)
{
    struct meao_wlock *l;
    bool recovered = false;
    int p[2];
    pid_t pid;
    (void)state;
    assert_int_equal(pipe(p), 0);
    pid = holder(p[1]);
    wait_held(p[0]);
    assert_int_equal(meao_wlock_open(path, &l), MEAO_OK);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_int_equal(meao_wlock_acquire(l, 10000, &recovered), MEAO_OK);
    assert_true(recovered);
    meao_wlock_release(l);
    assert_int_equal(meao_wlock_acquire(l, 10000, &recovered), MEAO_OK);
    assert_false(recovered);
    meao_wlock_release(l);
    meao_wlock_close(l);
    close(p[0]);
    close(p[1]);
}

/* A waiter blocked while the holder is killed is woken and gets the lock. */
static void waiter_wakes_when_holder_dies(void **state)
{
    int p[2], q[2];
    pid_t h, w;
    (void)state;
    assert_int_equal(pipe(p), 0);
    assert_int_equal(pipe(q), 0);
    h = holder(p[1]);
    wait_held(p[0]);
    w = fork();
    assert_true(w >= 0);
    if (w == 0) {
        struct meao_wlock *l;
        bool recovered = false;
        if (meao_wlock_open(path, &l) != MEAO_OK || write(q[1], "w", 1) != 1)
            _exit(1);
        if (meao_wlock_acquire(l, -1, &recovered) != MEAO_OK)
            _exit(2);
        meao_wlock_release(l);
        _exit(recovered ? 0 : 3);
    }
    wait_held(q[0]); /* the waiter is about to block (or already is) */
    assert_int_equal(kill(h, SIGKILL), 0);
    assert_int_equal(waitpid(h, NULL, 0), h);
    reap(w, 0);
    close(p[0]);
    close(p[1]);
    close(q[0]);
    close(q[1]);
}

/* A holder that is alive but never lets go: waiters give up with MEAO_E_DB
 * after their timeout instead of hanging. */
static void stuck_holder_times_out(void **state)
{
    struct meao_wlock *l;
    int p[2];
    pid_t pid;
    (void)state;
    assert_int_equal(pipe(p), 0);
    pid = holder(p[1]);
    wait_held(p[0]);
    assert_int_equal(meao_wlock_open(path, &l), MEAO_OK);
    assert_int_equal(meao_wlock_acquire(l, 20, NULL), MEAO_E_DB);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_int_equal(meao_wlock_acquire(l, 10000, NULL), MEAO_OK);
    meao_wlock_release(l);
    meao_wlock_close(l);
    close(p[0]);
    close(p[1]);
}

/* A file that is not a lock of this boot (garbage, an older version, a
 * mutex word from before a reboot) is re-initialised, not trusted. */
static void damaged_file_is_reinitialised(void **state)
{
    struct meao_wlock *l;
    unsigned char junk[4096];
    int fd;
    (void)state;
    memset(junk, 0xff, sizeof junk);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);
    assert_int_equal(meao_wlock_open(path, &l), MEAO_OK);
    assert_int_equal(meao_wlock_acquire(l, 0, NULL), MEAO_OK);
    meao_wlock_release(l);
    meao_wlock_close(l);
}

static void unopenable_path_fails_cleanly(void **state)
{
    struct meao_wlock *l = (struct meao_wlock *)1;
    char bad[200];
    (void)state;
    snprintf(bad, sizeof bad, "%s/missing/dir/x-wlock", dir);
    assert_int_equal(meao_wlock_open(bad, &l), MEAO_E_IO);
    assert_null(l);
    meao_wlock_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(excludes_across_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(two_handles_in_one_process, setup, teardown),
        cmocka_unit_test_setup_teardown(holder_killed_mid_hold, setup, teardown),
        cmocka_unit_test_setup_teardown(waiter_wakes_when_holder_dies, setup, teardown),
        cmocka_unit_test_setup_teardown(stuck_holder_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(damaged_file_is_reinitialised, setup, teardown),
        cmocka_unit_test_setup_teardown(unopenable_path_fails_cleanly, setup, teardown),
    };
    meao_log_init("test_wlock", MEAO_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
