/* The mps2-an386 board (QEMU's Arm MPS2 + AN386 FPGA image: Cortex-M4F at 25 MHz): the tsptq device program over
 * CMSDK UART0, timed with SysTick.
 *
 * - UART0 (CMSDK APB UART at 0x40004000, RX interrupt IRQ 0): common/cmsdk_uart.c. QEMU connects it to -serial (a TCP
 *   socket here).
 * - Ticks: SysTick counts the core clock (25 MHz) down from 2^24 - 1 and interrupts on each wrap (common/cortex_m.c
 *   extends it to 64 bits; measured: a 100M-instruction loop reads 2,500,000 ticks). Under `qemu-system-arm -icount
 *   shift=0` every instruction advances the virtual clock by 1 ns, so one SysTick tick (40 ns at 25 MHz) is exactly
 *   40 instructions: the counts are deterministic instruction counts / 40, not cycles (QEMU models no cycle timing).
 *   The per-op profiler uses the low 32 bits.
 * - RESET: NVIC_SystemReset (SCB->AIRCR SYSRESETREQ). QEMU 7.2 resets the whole machine on it (it does not exit,
 *   -no-reboot is not given): the -kernel image is loaded again, the CPU restarts from the vector table, the UART's
 *   TCP connection stays open; main() sends BOOT about 50 ms after the reply and commits the flashed model again.
 * - Memory: the tq_device (with its tsptq_model) in RAM; the upload buffer and the arena in PSRAM (mps2-an386.ld).
 * - TQ_EMBEDDED_MODEL: a model baked into the image (tsptq.deploy.targets generates tq_embedded_model in .rodata, i.e. the
 *   "flash" at 0x0) is committed at boot; an upload replaces it until the next reset.
 */
#include "cmsdk_uart.h"
#include "cortex_m.h"

#define UART0_BASE 0x40004000u
#define UART0_RX_IRQ 0 /* mps2-an386 interrupt map: UART0 RX is IRQ 0, TX IRQ 1 */
#define CORE_HZ 25000000u

const char tq_board_name[] = "mps2-an386";

void UART0RX_Handler(void);
void UART0RX_Handler(void) { tq_cmsdk_uart_rx_isr(); }

static uint32_t board_clock(void) { return (uint32_t)tq_cm_systick_ticks(); }

/* RESET: NVIC_SystemReset at once: every byte of the reply was handed to the UART by tq_cmsdk_uart_write (QEMU sends
 * it at once). */
static const tq_board board = {
    "mps2-an386", "systick", CORE_HZ, TQ_CM_MODEL_BUF, TQ_MODEL_CAPACITY, tq_cm_arena, TQ_ARENA_CAPACITY,
    tq_cmsdk_uart_write, tq_cm_systick_ticks, board_clock, tq_cm_system_reset,
};

int main(void) {
    tq_cmsdk_uart_init(UART0_BASE, UART0_RX_IRQ, CORE_HZ, 115200u);
    tq_cm_systick_start();
    tq_cm_run(&board, tq_cmsdk_uart_getc, tq_cmsdk_uart_wait);
}
