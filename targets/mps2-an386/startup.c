/* Start-up code for the mps2-an386 firmware (Cortex-M4F): the vector table, Reset_Handler (common/cortex_m.c's
 * tq_cm_start: FPU on, the fault handlers enabled, .data copied from flash, .bss zeroed, then main) and the SysTick
 * handler that extends the 24-bit SysTick to 64 bits. Faults are reported through semihosting
 * (common/qemu_fault.c). */
#include "cortex_m.h"
#include "qemu_fault.h"

void Reset_Handler(void);
void SysTick_Handler(void);
void UART0RX_Handler(void); /* board.c */

void SysTick_Handler(void) { tq_cm_systick_wrap(); }

void Reset_Handler(void) { tq_cm_start(tq_qemu_faults_enable, NULL); }

/* Cortex-M4 system exceptions, then mps2-an386's 32 external interrupts: only UART0 RX (IRQ 0) is enabled. */
__attribute__((section(".isr_vector"), used)) void (*const tq_vector_table[16 + 32])(void) = {
    TQ_CM_SYSTEM_VECTORS(Reset_Handler, NMI_Handler, HardFault_Handler, MemManage_Handler, BusFault_Handler,
                         UsageFault_Handler, Default_Handler, SysTick_Handler),
    UART0RX_Handler, /* IRQ 0 */
    [17 ... 16 + 31] = Default_Handler,
};
