/* A Corstone-300 class board (Arm MPS3 with the AN552 image, or the Corstone-300 FVP: SSE-300 with a Cortex-M55 +
 * Helium and an Ethos-U55-128): the tsptq device program on its Cortex-M55 over CMSDK UART0, timed with the DWT
 * cycle counter. The Ethos-U55 is not used: the tsptq C runtime has no Ethos-U driver (docs/npu.md).
 *
 * - UART0: CMSDK APB UART at 0x49303000, RX interrupt IRQ 33 (the SSE-300 MPS3 map of Arm's ML evaluation kit,
 *   corstone-sse-300.cmake: CMSDK_UART0_BASE, UARTRX0_IRQn; the same as QEMU's mps3-an547).
 * - Ticks: DWT CYCCNT core cycles (tick_unit "cycles"), extended to 64 bits (common/cortex_m.c); the MPS3 FPGA
 *   image clocks the core at 32 MHz.
 * - RESET: NVIC_SystemReset.
 * - Memory: corstone-300.ld.
 */
#include "cmsdk_uart.h"
#include "cortex_m.h"

#define UART0_BASE 0x49303000u
#define UART0_RX_IRQ 33
#define CORE_HZ 32000000u

void UART0RX_Handler(void);
void UART0RX_Handler(void) { tq_cmsdk_uart_rx_isr(); }

static const tq_board board = {
    "corstone-300", "cycles", CORE_HZ, TQ_CM_MODEL_BUF, TQ_MODEL_CAPACITY, tq_cm_arena, TQ_ARENA_CAPACITY,
    tq_cmsdk_uart_write, tq_cm_cycles, tq_cm_cycles32, tq_cm_system_reset,
};

int main(void) {
    tq_cmsdk_uart_init(UART0_BASE, UART0_RX_IRQ, CORE_HZ, 115200u);
    tq_cm_cycles_init();
    tq_cm_run(&board, tq_cmsdk_uart_getc, tq_cmsdk_uart_wait);
}
