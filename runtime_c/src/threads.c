/* tsptq runtime: the static thread pool behind tsptq_set_threads (TSPTQ_THREADS=1 builds: POSIX threads, Linux hosts
 * and boards; compiled to nothing otherwise). No allocation: at most TSPTQ_MAX_THREADS - 1 workers, their ids, their
 * scratch and the one job slot are static. One job runs at a time (a second caller runs its op alone: the outputs
 * are the same either way).
 *
 * A job is published through one atomic word, (job counter << 8) | parts, after its function, context, thread count
 * and part counter. Every thread, the caller included, claims parts from the counter (a CAS on (job counter << 8) | next part,
 * so a worker late for a job never claims a part of the next one) until none is left: a worker that the OS has not
 * scheduled yet (more threads than free cores) costs nothing, the caller runs its part. Workers poll the word for a
 * while (the gap between two split ops of an invoke is short: a sleep and a wake-up per op would cost more than the
 * split saves on a small ViT), then sleep on a condition variable; the caller wakes them only when one sleeps (the
 * sleepers count and the word are both seq_cst, so either the worker sees the new word or the caller sees the
 * sleeper). The caller returns when the finished-parts count reaches the part count (acquire: the workers' output
 * bytes are visible after it). */
#if defined(TSPTQ_THREADS) && TSPTQ_THREADS
#define _POSIX_C_SOURCE 200809L /* pthread_attr_*, sched_yield under -std=c99 */
#include <pthread.h>
#include <sched.h>
#include <time.h>
#endif

#include "runtime.h"
#include "threads.h"

#if TSPTQ_THREADS

#if TSPTQ_MAX_THREADS < 2 || TSPTQ_MAX_THREADS > 63
#error "TSPTQ_MAX_THREADS: 2..63 in a TSPTQ_THREADS build (the job word holds up to 4 parts a thread in 8 bits)"
#endif

#ifndef TSPTQ_THREAD_SPIN_US
/* How long a worker polls the job word after its last part before it sleeps, and the caller polls the finished count
 * before it yields, in microseconds: long enough to bridge the ops that run on one thread between two split ops, short
 * enough not to take a shared core from other work for long (the pause instruction's length varies 10x between
 * CPUs: the bound is in time, read every 64 polls). */
#define TSPTQ_THREAD_SPIN_US 50
#endif
/* Worker stack: the AMX products take ~215 KB, the AVX-512 VNNI ones ~100 KB; musl's default is 128 KB. */
#define TQP_STACK (2u << 20)

static pthread_mutex_t tqp_mu = PTHREAD_MUTEX_INITIALIZER;  /* sleeping, waking, starting workers */
static pthread_cond_t tqp_wake = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t tqp_use = PTHREAD_MUTEX_INITIALIZER; /* held by the caller whose job runs */
static pthread_t tqp_tid[TSPTQ_MAX_THREADS];
static uint32_t tqp_started;          /* workers 1..tqp_started run (written under tqp_mu and tqp_use) */
static uint32_t tqp_word;             /* atomic: (job counter << 8) | parts */
static uint32_t tqp_next;             /* atomic: (job counter << 8) | the next unclaimed part */
static uint32_t tqp_threads;          /* atomic: the job's thread count (workers t < it join; a stale read is harmless:
                                       * which thread runs a part never changes the bytes) */
static uint32_t tqp_first[TSPTQ_MAX_THREADS]; /* the word when worker t started: jobs before it are not its own */
static uint32_t tqp_sleepers;         /* atomic */
static uint32_t tqp_done;             /* atomic: parts of the running job finished */
static tq_task_fn tqp_fn;
static void *tqp_ctx;
static int tqp_atfork;
static uint64_t tqp_scratch[TSPTQ_MAX_THREADS - 1][(TSPTQ_THREAD_SCRATCH + 7) / 8] __attribute__((aligned(64)));
static uint32_t tqp_jobs;             /* atomic: jobs run split over the pool (tq_pool_jobs) */

static inline void tqp_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Claim and run the parts of job `w` that are left, on thread t. */
static void tqp_claim(uint32_t w, uint32_t t) {
    for (;;) {
        uint32_t c = __atomic_load_n(&tqp_next, __ATOMIC_ACQUIRE);
        if ((c >> 8) != (w >> 8) || (c & 0xFFu) >= (w & 0xFFu)) return; /* another job's counter, or none left */
        if (!__atomic_compare_exchange_n(&tqp_next, &c, c + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
        tqp_fn(tqp_ctx, c & 0xFFu, t); /* fn and ctx stay put until the finished count reaches the parts */
        __atomic_add_fetch(&tqp_done, 1, __ATOMIC_RELEASE);
    }
}

static uint64_t tqp_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Poll i of a wait that started at *t0 (0: not read yet): 1 while it may go on polling. */
static int tqp_spin(uint32_t i, uint64_t *t0) {
    if (i % 64) return 1;
    if (!*t0) {
        *t0 = tqp_now_us();
        return 1;
    }
    return tqp_now_us() - *t0 < TSPTQ_THREAD_SPIN_US;
}

static void *tqp_worker(void *arg) {
    const uint32_t t = (uint32_t)(uintptr_t)arg;
    uint32_t seen = __atomic_load_n(&tqp_first[t], __ATOMIC_ACQUIRE);
    for (;;) {
        uint32_t w, spins = 0;
        uint64_t t0 = 0;
        while ((w = __atomic_load_n(&tqp_word, __ATOMIC_ACQUIRE)) == seen) {
            if (tqp_spin(spins++, &t0)) {
                tqp_relax();
                continue;
            }
            pthread_mutex_lock(&tqp_mu);
            __atomic_add_fetch(&tqp_sleepers, 1, __ATOMIC_SEQ_CST);
            while (__atomic_load_n(&tqp_word, __ATOMIC_SEQ_CST) == seen) pthread_cond_wait(&tqp_wake, &tqp_mu);
            __atomic_sub_fetch(&tqp_sleepers, 1, __ATOMIC_SEQ_CST);
            pthread_mutex_unlock(&tqp_mu);
            spins = 0;
            t0 = 0;
        }
        seen = w;
        if (t < __atomic_load_n(&tqp_threads, __ATOMIC_RELAXED)) tqp_claim(w, t); /* a job for more than t threads */
    }
    return NULL;
}

/* fork: the prepare handler takes the pool's locks (in the order tq_pool_reserve takes them), so no job, no worker
 * start and no worker going to sleep is half done when the process is copied; the parent lets them go; the child,
 * which has none of the parent's workers, starts again from none with fresh locks and condition (a worker's wait
 * may have been under way in the parent: the copied condition's bookkeeping is not the child's). */
static void tqp_prepare(void) {
    pthread_mutex_lock(&tqp_use);
    pthread_mutex_lock(&tqp_mu);
}

static void tqp_parent(void) {
    pthread_mutex_unlock(&tqp_mu);
    pthread_mutex_unlock(&tqp_use);
}

static void tqp_child(void) {
    pthread_mutex_init(&tqp_use, NULL);
    pthread_mutex_init(&tqp_mu, NULL);
    pthread_cond_init(&tqp_wake, NULL);
    tqp_started = 0;
    tqp_sleepers = 0;
}

static int tqp_start(uint32_t n) {
    pthread_attr_t attr;
    size_t stack = 0;
    int ok = 1;
    if (pthread_attr_init(&attr)) return 0;
    if (!pthread_attr_getstacksize(&attr, &stack) && stack < TQP_STACK) pthread_attr_setstacksize(&attr, TQP_STACK);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&tqp_mu);
    if (!tqp_atfork) tqp_atfork = pthread_atfork(tqp_prepare, tqp_parent, tqp_child) == 0;
    while (ok && tqp_started + 1 < n) {
        const uint32_t t = tqp_started + 1;
        __atomic_store_n(&tqp_first[t], __atomic_load_n(&tqp_word, __ATOMIC_SEQ_CST), __ATOMIC_RELEASE);
        if (pthread_create(&tqp_tid[t], &attr, tqp_worker, (void *)(uintptr_t)t)) ok = 0;
        else tqp_started = t;
    }
    pthread_mutex_unlock(&tqp_mu);
    pthread_attr_destroy(&attr);
    return ok;
}

int tq_pool_reserve(uint32_t n) {
    int ok;
    if (n > TSPTQ_MAX_THREADS) return 0;
    if (n <= 1) return 1;
    pthread_mutex_lock(&tqp_use); /* no job runs while workers start: their first word is not a running job's */
    ok = tqp_started + 1 >= n || tqp_start(n);
    pthread_mutex_unlock(&tqp_use);
    return ok;
}

int tq_pool_run(uint32_t threads, uint32_t n, tq_task_fn fn, void *ctx) {
    uint32_t w, spins = 0;
    uint64_t t0 = 0;
    if (threads < 2 || threads > TSPTQ_MAX_THREADS || n < 1 || n > 255) return 0;
    if (pthread_mutex_trylock(&tqp_use)) return 0;
    if (tqp_started + 1 < threads) {
        pthread_mutex_unlock(&tqp_use);
        return 0;
    }
    tqp_fn = fn;
    tqp_ctx = ctx;
    __atomic_store_n(&tqp_done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&tqp_threads, threads, __ATOMIC_RELAXED);
    w = ((__atomic_load_n(&tqp_word, __ATOMIC_RELAXED) >> 8) + 1) << 8;
    __atomic_store_n(&tqp_next, w, __ATOMIC_RELEASE); /* after fn, ctx: a claim sees them */
    w |= n;
    __atomic_store_n(&tqp_word, w, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&tqp_sleepers, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&tqp_mu);
        pthread_cond_broadcast(&tqp_wake);
        pthread_mutex_unlock(&tqp_mu);
    }
    __atomic_add_fetch(&tqp_jobs, 1, __ATOMIC_RELAXED);
    tqp_claim(w, 0);
    while (__atomic_load_n(&tqp_done, __ATOMIC_ACQUIRE) != n) { /* parts claimed by workers, still running */
        if (tqp_spin(spins++, &t0)) tqp_relax();
        else sched_yield(); /* that worker lost its core */
    }
    pthread_mutex_unlock(&tqp_use);
    return 1;
}

uint32_t tq_pool_jobs(void) { return __atomic_load_n(&tqp_jobs, __ATOMIC_RELAXED); }

int32_t *tq_pool_scratch(uint32_t t) {
    return (int32_t *)(void *)tqp_scratch[t >= 1 && t < TSPTQ_MAX_THREADS ? t - 1 : 0];
}

#else
typedef int tq_threads_unused; /* ISO C: a translation unit declares something */
#endif
