/* Start-up code for the corstone-300 firmware (Cortex-M55): the vector table and Reset_Handler (common/cortex_m.c's
 * tq_cm_start: FPU and MVE on, .data copied, .bss zeroed, then main). SysTick extends the DWT cycle counter; faults
 * stop the core (no semihosting on a board without a debugger attached). */
#include "cortex_m.h"

void Reset_Handler(void);
void UART0RX_Handler(void); /* board.c */

void Reset_Handler(void) { tq_cm_start(NULL, NULL); }

/* Cortex-M55 system exceptions, then the SSE-300's external interrupts up to UART0 RX (IRQ 33). */
__attribute__((section(".isr_vector"), used)) void (*const tq_vector_table[16 + 64])(void) = {
    TQ_CM_SYSTEM_VECTORS(Reset_Handler, tq_cm_default_handler, tq_cm_default_handler, tq_cm_default_handler,
                         tq_cm_default_handler, tq_cm_default_handler, tq_cm_default_handler, tq_cm_cycles_systick),
    [16 ... 16 + 32] = tq_cm_default_handler,
    [16 + 33] = UART0RX_Handler,
    [16 + 34 ... 16 + 63] = tq_cm_default_handler,
};
