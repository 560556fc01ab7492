/* What the Cortex-M firmwares share: start-up, tick counters, reset, buffers and the device main loop (cortex_m.h).
 * Registers: Armv7-M Architecture Reference Manual B3.2 (SCB), B3.3 (SysTick), C1.8 (DWT); PM0253 4.3 and 4.8 for
 * the Cortex-M7 caches. */
#include "cortex_m.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss;
extern int main(void);

#ifdef TQ_EMBEDDED_MODEL
extern const uint8_t tq_embedded_model[];
extern const uint32_t tq_embedded_model_len;
#endif

/* ---- start-up ----------------------------------------------------------------------------------------------- */

static inline void barriers(void) { __asm__ volatile("dsb\n\tisb" ::: "memory"); }

void tq_cm_start(void (*before_memory)(void), void (*after_memory)(void)) {
    uint32_t *src, *dst;
    /* the FPU first: -mfloat-abi=hard code may use it anywhere, memcpy included */
    SCB_CPACR |= (3u << 20) | (3u << 22);
    barriers();
    if (before_memory) before_memory();
    for (src = &_sidata, dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    if (after_memory) after_memory();
    main();
    for (;;) {
    }
}

void tq_cm7_caches_enable(void) {
    uint32_t ccsidr, sets, ways, w;
    SCB_ICIALLU = 0; /* invalidate, then enable the I-cache */
    barriers();
    SCB_CCR |= 1u << 17;
    barriers();
    SCB_CSSELR = 0; /* level 1 data cache: invalidate every set and way, then enable */
    barriers();
    ccsidr = SCB_CCSIDR;
    sets = (ccsidr >> 13) & 0x7FFFu;
    ways = (ccsidr >> 3) & 0x3FFu;
    do {
        w = ways;
        do {
            SCB_DCISW = ((sets << 5) & 0x3FE0u) | ((w << 30) & 0xC0000000u);
        } while (w-- != 0u);
    } while (sets-- != 0u);
    __asm__ volatile("dsb" ::: "memory");
    SCB_CCR |= 1u << 16;
    barriers();
}

void tq_cm_default_handler(void) {
    for (;;) { /* a fault: the host's timeouts report a board that stopped answering; reset it */
    }
}

void tq_cm_system_reset(void) {
    __asm__ volatile("dsb" ::: "memory");
    SCB_AIRCR = (0x05FAu << 16) | (SCB_AIRCR & (7u << 8)) | (1u << 2); /* VECTKEY, PRIGROUP kept, SYSRESETREQ */
    __asm__ volatile("dsb" ::: "memory");
    for (;;) {
    }
}

/* ---- ticks ------------------------------------------------------------------------------------------------------ */

void tq_cm_systick_start(void) {
    SYST_CSR = 0;
    SYST_RVR = 0x00FFFFFFu; /* period 2^24 ticks */
    SYST_CVR = 0;           /* any write clears it; counting starts from the reload value */
    SYST_CSR = 7u;          /* core clock, interrupt on wrap, enabled */
}

static volatile uint32_t systick_wraps;

void tq_cm_systick_wrap(void) { systick_wraps++; }

/* 64-bit ticks since boot: the wrap count and the down-counter read together with interrupts off; a wrap that is
 * pending but not yet counted is added by hand (the counter is read again after it, so the two agree).
 * SysTick pends its interrupt as the counter goes from 1 to 0, so the period runs 0, RVR, ..., 1: the position in it
 * is (2^24 - cvr) mod 2^24, and 0 right after the wrap was counted. (The 0 read before the first reload after
 * enabling reads as position 0 of period 0: monotonic too.) */
uint64_t tq_cm_systick_ticks(void) {
    uint32_t primask, wraps, cvr;
    __asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
    wraps = systick_wraps;
    cvr = SYST_CVR;
    if (SCB_ICSR & (1u << 26)) {
        cvr = SYST_CVR;
        wraps++;
    }
    __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
    return ((uint64_t)wraps << 24) + ((0x01000000u - cvr) & 0x00FFFFFFu);
}

static volatile uint32_t cyc_high, cyc_last;

void tq_cm_cycles_init(void) {
    DEMCR |= 1u << 24;
    DWT_LAR = 0xC5ACCE55u;
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
    tq_cm_systick_start(); /* an interrupt every 2^24 cycles keeps the 64-bit extension current */
}

/* 64-bit cycles since boot: CYCCNT plus the wraps seen (interrupts off while the two are updated together). */
uint64_t tq_cm_cycles(void) {
    uint32_t primask, now;
    uint64_t t;
    __asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
    now = DWT_CYCCNT;
    if (now < cyc_last) cyc_high++;
    cyc_last = now;
    t = ((uint64_t)cyc_high << 32) | now;
    __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
    return t;
}

uint32_t tq_cm_cycles32(void) { return DWT_CYCCNT; }

void tq_cm_cycles_systick(void) { (void)tq_cm_cycles(); }

/* ---- the device ------------------------------------------------------------------------------------------------ */

#if TQ_MODEL_CAPACITY > 0
uint8_t tq_cm_model_buf[TQ_MODEL_CAPACITY] __attribute__((section(".model_buf"), aligned(16)));
#endif
uint8_t tq_cm_arena[TQ_ARENA_CAPACITY] __attribute__((section(".arena"), aligned(16)));
static tq_device dev;

void tq_cm_run(const tq_board *board, int (*read_byte)(void), void (*idle)(void)) {
    tq_device_init(&dev, board);
#ifdef TQ_EMBEDDED_MODEL
    (void)tq_device_set_model(&dev, tq_embedded_model, tq_embedded_model_len); /* a rejected one: HELLO shows none */
#endif
    for (;;) {
        int c = read_byte();
        if (c >= 0)
            tq_device_feed(&dev, (uint8_t)c);
        else if (idle)
            idle();
    }
}
