/* tsptq runtime: whether this process may use the Intel AMX tiles (internal to src/ops, not an op: amx.h). Compiled
 * to nothing unless -DTSPTQ_USE_AMX (dot.h). Linux gives a process the tile data state (XFEATURE_XTILEDATA, 18) only
 * after arch_prctl(ARCH_REQ_XCOMP_PERM, 18); before that a tile instruction faults. The request is made the first
 * time a product asks (not at load time: a process that never runs one never holds the larger signal frames), once
 * per process; threads that race on it both make the same idempotent request. */
#if defined(TSPTQ_USE_AMX) && !defined(TSPTQ_REFERENCE_ONLY) && defined(__linux__)
#define _GNU_SOURCE /* syscall() */
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "dot.h"

#if defined(TQ_SIMD_AMX)
#include <cpuid.h>

#define TQA_ARCH_REQ_XCOMP_PERM 0x1023
#define TQA_XFEATURE_XTILEDATA 18

static int tqa_request(void) {
    unsigned int eax, ebx, ecx, edx;
    /* CPUID.(7, 0):EDX bit 24 AMX-TILE, bit 25 AMX-INT8 */
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !((edx >> 24) & 1) || !((edx >> 25) & 1)) return 0;
#if defined(__linux__) && defined(SYS_arch_prctl)
    return syscall(SYS_arch_prctl, TQA_ARCH_REQ_XCOMP_PERM, TQA_XFEATURE_XTILEDATA) == 0;
#else
    return 0; /* no known way to ask for the tile state: the VNNI path */
#endif
}

int tq_amx_ready(void) {
    static int state; /* 0: not asked yet; 1: granted; -1: refused */
    int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (!s) {
        s = tqa_request() ? 1 : -1;
        __atomic_store_n(&state, s, __ATOMIC_RELEASE);
    }
    return s > 0;
}
#else
typedef int tq_amx_unused; /* ISO C: a translation unit declares something */
#endif
