/* A host clock for per-op profiling through tsptq_set_profiler (not part of the core: POSIX clock_gettime).
 * Nanoseconds modulo 2^32: differences over less than 4.29 s are exact. Boards use DWT->CYCCNT or SysTick. */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <time.h>

uint32_t tsptq_host_clock_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
}
