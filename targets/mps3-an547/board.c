/* The mps3-an547 board (QEMU's Arm MPS3 + AN547 FPGA image: Cortex-M55 with Helium (MVE), SSE-300): the tsptq device
 * program over CMSDK UART0, timed with SysTick.
 *
 * - UART0: CMSDK APB UART at 0x49303000, RX interrupt IRQ 33 (common/cmsdk_uart.c; the
 *   number QEMU 7.2 raises, checked by tests/test_board_mps2.py's runs), QEMU's -serial.
 * - Ticks: SysTick on the core clock (CORE_HZ), extended to 64 bits (common/cortex_m.c). Under `qemu-system-arm
 *   -icount shift=0` every instruction is 1 ns of virtual time, so a tick is an instruction count / (1e9 / CORE_HZ):
 *   deterministic, not cycles (target.toml's instructions_per_tick).
 * - RESET: NVIC_SystemReset; QEMU resets the machine and reloads the -kernel image.
 * - Memory: mps3-an547.ld.
 */
#include "cmsdk_uart.h"
#include "cortex_m.h"

#define UART0_BASE 0x49303000u
#define UART0_RX_IRQ 33
#define CORE_HZ 32000000u

const char tq_board_name[] = "mps3-an547";

void UART0RX_Handler(void);
void UART0RX_Handler(void) { tq_cmsdk_uart_rx_isr(); }

static uint32_t board_clock(void) { return (uint32_t)tq_cm_systick_ticks(); }

static const tq_board board = {
    "mps3-an547", "systick", CORE_HZ, TQ_CM_MODEL_BUF, TQ_MODEL_CAPACITY, tq_cm_arena, TQ_ARENA_CAPACITY,
    tq_cmsdk_uart_write, tq_cm_systick_ticks, board_clock, tq_cm_system_reset,
};

int main(void) {
    tq_cmsdk_uart_init(UART0_BASE, UART0_RX_IRQ, CORE_HZ, 115200u);
    tq_cm_systick_start();
    tq_cm_run(&board, tq_cmsdk_uart_getc, tq_cmsdk_uart_wait);
}
