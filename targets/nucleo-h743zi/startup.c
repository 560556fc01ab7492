/* Start-up code for the NUCLEO-H743ZI firmware (STM32H743ZI, Cortex-M7): the vector table and Reset_Handler
 * (FPU on, VTOR, .data copied from flash, .bss zeroed, L1 caches on, then main). The table holds the 16 system
 * exceptions only: the firmware enables no peripheral interrupt (the UART is polled), just SysTick.
 *
 * Registers: Cortex-M7 system control block (Arm v7-M ARM B3.2; PM0253 "STM32F7 and STM32H7 programming manual"
 * section 4.3 SCB and 4.8 cache maintenance). */
#include <stdint.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern int main(void);

void Reset_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void); /* board.c */

#define REG32(addr) (*(volatile uint32_t *)(addr))
#define SCB_VTOR REG32(0xE000ED08u)
#define SCB_CCR REG32(0xE000ED14u)   /* bit 16 DC: data cache enable, bit 17 IC: instruction cache enable */
#define SCB_CPACR REG32(0xE000ED88u) /* CP10/CP11 full access: the FPU */
#define SCB_CCSIDR REG32(0xE000ED80u)
#define SCB_CSSELR REG32(0xE000ED84u)
#define SCB_ICIALLU REG32(0xE000EF50u)
#define SCB_DCISW REG32(0xE000EF60u)
#define DBGMCU_IDCODE REG32(0x5C001000u) /* RM0433 DBGMCU_IDCODE: REV_ID in bits 31:16, 0x1003 = Y */
#define AXI_TARG7_FN_MOD REG32(0x51008108u) /* AXI interconnect GPV: AXI SRAM target issuing */

static inline void barriers(void) { __asm__ volatile("dsb\n\tisb" ::: "memory"); }

static void caches_enable(void) {
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

void Default_Handler(void) {
    for (;;) { /* a fault: the host's timeouts report a board that stopped answering; reset it */
    }
}

void Reset_Handler(void) {
    uint32_t *src, *dst;
    SCB_CPACR |= (3u << 20) | (3u << 22); /* first: -mfloat-abi=hard code may use the FPU anywhere */
    barriers();
    SCB_VTOR = 0x08000000u; /* the boot address option bytes map flash at reset; point VTOR at it anyway */
    /* Errata ES0392 2.2.9 (revision Y): reads from the AXI SRAM may be corrupted unless the AXI switch matrix issues
     * one read at a time to it; the same workaround as ST's SystemInit */
    if ((DBGMCU_IDCODE & 0xFFFF0000u) < 0x20000000u) AXI_TARG7_FN_MOD = 1u;
    for (src = &_sidata, dst = &_sdata; dst < &_edata;) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    caches_enable();
    main();
    for (;;) {
    }
}

__attribute__((section(".isr_vector"), used)) void (*const tq_vector_table[16])(void) = {
    (void (*)(void))(uintptr_t)&_estack, /* initial main stack pointer */
    Reset_Handler,
    Default_Handler, /* NMI */
    Default_Handler, /* HardFault */
    Default_Handler, /* MemManage */
    Default_Handler, /* BusFault */
    Default_Handler, /* UsageFault */
    0, 0, 0, 0,      /* reserved */
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,               /* reserved */
    Default_Handler, /* PendSV */
    SysTick_Handler,
};
