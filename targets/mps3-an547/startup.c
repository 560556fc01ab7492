/* Start-up code for the mps3-an547 firmware (Cortex-M55): the vector table, Reset_Handler (common/cortex_m.c's
 * tq_cm_start: FPU and MVE on, the fault handlers enabled, .data copied, .bss zeroed, then main) and the SysTick
 * handler that extends the 24-bit SysTick to 64 bits. Faults are reported through semihosting
 * (common/qemu_fault.c). */
#include "cortex_m.h"
#include "qemu_fault.h"

void Reset_Handler(void);
void SysTick_Handler(void);
void UART0RX_Handler(void); /* board.c */

void SysTick_Handler(void) { tq_cm_systick_wrap(); }

void Reset_Handler(void) { tq_cm_start(tq_qemu_faults_enable, NULL); }

/* Cortex-M55 system exceptions, then the AN547's external interrupts up to UART0 RX (IRQ 33 in QEMU 7.2, found by trying the UART's candidates). */
__attribute__((section(".isr_vector"), used)) void (*const tq_vector_table[16 + 64])(void) = {
    TQ_CM_SYSTEM_VECTORS(Reset_Handler, NMI_Handler, HardFault_Handler, MemManage_Handler, BusFault_Handler,
                         UsageFault_Handler, Default_Handler, SysTick_Handler),
    [16 ... 16 + 32] = Default_Handler,
    [16 + 33] = UART0RX_Handler,
    [16 + 34 ... 16 + 63] = Default_Handler,
};
