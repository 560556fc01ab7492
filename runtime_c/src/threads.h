/* tsptq runtime: the static thread pool (internal; src/threads.c, built with TSPTQ_THREADS=1). */
#ifndef TSPTQ_THREADS_H
#define TSPTQ_THREADS_H

#include <stdint.h>

/* Bytes of scratch each worker has for an op's parts (static, TSPTQ_MAX_THREADS - 1 of them): an op whose scratch
 * (op->scratch_len: 4 * the row length for FC_2S, BMM_2S, SOFTMAX_2S; 6 * it for SOFTMAX_MASK_2S) is larger runs on
 * the caller's thread alone. */
#ifndef TSPTQ_THREAD_SCRATCH
#define TSPTQ_THREAD_SCRATCH 32768
#endif

/* A job: fn(ctx, part, thread) for every part < n, each on some thread (0: the caller, t >= 1: worker t). */
typedef void (*tq_task_fn)(void *ctx, uint32_t part, uint32_t thread);

/* Start workers 1..n-1 (those not running yet). 1: they run; 0: pthread_create failed (or n > TSPTQ_MAX_THREADS). */
int tq_pool_reserve(uint32_t n);
/* Run the job's n parts (1 <= n <= 255) on the caller and workers 1..threads-1 (2 <= threads <= TSPTQ_MAX_THREADS;
 * whichever claims a part first runs it), and return when all are done: 1. 0 when the pool is busy with another
 * caller's job (or a worker is missing): nothing ran, the caller runs the op alone. */
int tq_pool_run(uint32_t threads, uint32_t n, tq_task_fn fn, void *ctx);
/* Jobs run split over the pool since the process started (the tests check that an op with work to split is split). */
uint32_t tq_pool_jobs(void);
/* The static scratch of worker t (1 <= t < TSPTQ_MAX_THREADS), TSPTQ_THREAD_SCRATCH bytes, 64-byte aligned. */
int32_t *tq_pool_scratch(uint32_t t);

#endif
