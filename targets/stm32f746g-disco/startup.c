/* Start-up code for the STM32F746G-DISCO firmware (STM32F746NG, Cortex-M7): the vector table and Reset_Handler
 * (common/cortex_m.c's tq_cm_start: FPU on, then VTOR here, .data copied from flash, .bss zeroed, L1 caches on, then
 * main). The table holds the 16 system exceptions only: the firmware enables no peripheral interrupt (the UART is
 * polled), just SysTick, which extends the DWT cycle counter.
 *
 * Registers: Cortex-M7 system control block (Arm v7-M ARM B3.2; PM0253 "STM32F7 and STM32H7 programming manual"
 * section 4.3 SCB and 4.8 cache maintenance), defined in common/cortex_m.h. */
#include "cortex_m.h"

void Reset_Handler(void);

static void vector_table_in_flash(void) {
    SCB_VTOR = 0x08000000u; /* the table is fetched through the boot alias at reset; point VTOR at flash */
}

void Reset_Handler(void) { tq_cm_start(vector_table_in_flash, tq_cm7_caches_enable); }

__attribute__((section(".isr_vector"), used)) void (*const tq_vector_table[16])(void) = {
    TQ_CM_SYSTEM_VECTORS(Reset_Handler, tq_cm_default_handler, tq_cm_default_handler, tq_cm_default_handler,
                         tq_cm_default_handler, tq_cm_default_handler, tq_cm_default_handler, tq_cm_cycles_systick),
};
