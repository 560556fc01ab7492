/* Start-up code for the NUCLEO-H743ZI firmware (STM32H743ZI, Cortex-M7): the vector table and Reset_Handler
 * (common/cortex_m.c's tq_cm_start: FPU on, then VTOR and the AXI SRAM erratum here, .data copied from flash, .bss
 * zeroed, L1 caches on, then main). The table holds the 16 system exceptions only: the firmware enables no
 * peripheral interrupt (the UART is polled), just SysTick, which extends the DWT cycle counter.
 *
 * Registers: Cortex-M7 system control block (Arm v7-M ARM B3.2; PM0253 "STM32F7 and STM32H7 programming manual"
 * section 4.3 SCB and 4.8 cache maintenance), defined in common/cortex_m.h. */
#include "cortex_m.h"

#define DBGMCU_IDCODE REG32(0x5C001000u) /* RM0433 DBGMCU_IDCODE: REV_ID in bits 31:16, 0x1003 = Y */
#define AXI_TARG7_FN_MOD REG32(0x51008108u) /* AXI interconnect GPV: AXI SRAM target issuing */

void Reset_Handler(void);

static void before_memory(void) {
    SCB_VTOR = 0x08000000u; /* the boot address option bytes map flash at reset; point VTOR at it anyway */
    /* Errata ES0392 2.2.9 (revision Y): reads from the AXI SRAM may be corrupted unless the AXI switch matrix issues
     * one read at a time to it; the same workaround as ST's SystemInit. Before .data and .bss: both are in it. */
    if ((DBGMCU_IDCODE & 0xFFFF0000u) < 0x20000000u) AXI_TARG7_FN_MOD = 1u;
}

void Reset_Handler(void) { tq_cm_start(before_memory, tq_cm7_caches_enable); }

__attribute__((section(".isr_vector"), used)) void (*const tq_vector_table[16])(void) = {
    TQ_CM_SYSTEM_VECTORS(Reset_Handler, tq_cm_default_handler, tq_cm_default_handler, tq_cm_default_handler,
                         tq_cm_default_handler, tq_cm_default_handler, tq_cm_default_handler, tq_cm_cycles_systick),
};
