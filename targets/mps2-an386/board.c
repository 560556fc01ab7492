/* The mps2-an386 board (QEMU's Arm MPS2 + AN386 FPGA image: Cortex-M4F at 25 MHz): the tsptq device program over
 * CMSDK UART0, timed with SysTick.
 *
 * - UART0 (CMSDK APB UART at 0x40004000): received bytes through the RX interrupt (IRQ 0) into a ring, sent by
 *   polling TXFULL. QEMU connects it to -serial (a TCP socket here).
 * - Ticks: SysTick counts the core clock (25 MHz) down from 2^24 - 1 and interrupts on each wrap; startup.c's handler
 *   counts the wraps, giving a 64-bit tick count (measured: a 100M-instruction loop reads 2,500,000 ticks). Under `qemu-system-arm -icount shift=0` every instruction advances
 *   the virtual clock by 1 ns, so one SysTick tick (40 ns at 25 MHz) is exactly 40 instructions: the counts are
 *   deterministic instruction counts / 40, not cycles (QEMU models no cycle timing). The per-op profiler uses the
 *   low 32 bits.
 * - RESET: NVIC_SystemReset (SCB->AIRCR SYSRESETREQ). QEMU 7.2 resets the whole machine on it (it does not exit,
 *   -no-reboot is not given): the -kernel image is loaded again, the CPU restarts from the vector table, the UART's
 *   TCP connection stays open; main() sends BOOT about 50 ms after the reply and commits the flashed model again.
 * - Memory: the tq_device (with its tsptq_model) in RAM; the upload buffer and the arena in PSRAM (mps2-an386.ld).
 * - TQ_EMBEDDED_MODEL: a model baked into the image (tsptq.deploy.targets generates tq_embedded_model in .rodata, i.e. the
 *   "flash" at 0x0) is committed at boot; an upload replaces it until the next reset.
 * The buffers, the reset, the SysTick set-up and the main loop are common/cortex_m.c; this file has UART0 and the
 * SysTick tick count.
 */
#include "cortex_m.h"

/* CMSDK APB UART (Arm CMSDK technical reference, "APB UART"); QEMU hw/char/cmsdk-apb-uart.c */
#define UART0_BASE 0x40004000u
#define UART_DATA REG32(UART0_BASE + 0x00u)
#define UART_STATE REG32(UART0_BASE + 0x04u) /* bit 0: TX buffer full, bit 1: RX buffer full */
#define UART_CTRL REG32(UART0_BASE + 0x08u)  /* bit 0: TX enable, bit 1: RX enable, bit 3: RX interrupt enable */
#define UART_INTCLEAR REG32(UART0_BASE + 0x0Cu) /* write 1 to bit 1: clear the RX interrupt */
#define UART_BAUDDIV REG32(UART0_BASE + 0x10u)
#define UART_STATE_TXFULL 1u
#define UART_STATE_RXFULL 2u

#define UART0_RX_IRQ 0 /* mps2-an386 interrupt map: UART0 RX is IRQ 0, TX IRQ 1 */
#define CORE_HZ 25000000u
#define BAUD 115200u

extern volatile uint32_t tq_systick_wraps; /* startup.c */

/* Received bytes go through a ring filled by the RX interrupt; the main loop sleeps (WFI) while it is empty, so an
 * idle board costs QEMU no host CPU (a polling loop keeps a host core at 100%). QEMU's CMSDK UART holds one byte and
 * takes the next from the socket only on a later iteration of QEMU's main loop: 5-15 KB/s into the board, whatever
 * the guest does (a model baked into the image with TQ_EMBEDDED_MODEL loads instantly instead). */
#define RX_RING 4096u /* a power of two, more than a whole frame */
static volatile uint8_t rx_ring[RX_RING];
static volatile uint32_t rx_head, rx_tail;

void UART0RX_Handler(void);
void UART0RX_Handler(void) {
    UART_INTCLEAR = 2u; /* first: a byte that arrives after the loop below raises the interrupt again */
    while (UART_STATE & UART_STATE_RXFULL) {
        uint8_t byte = (uint8_t)UART_DATA;
        uint32_t head = rx_head;
        if (head - rx_tail < RX_RING) { /* full: dropped (the host's CRC check and retry recover it) */
            rx_ring[head & (RX_RING - 1u)] = byte;
            rx_head = head + 1u;
        }
    }
}

static void uart_init(void) {
    UART_CTRL = 0;
    UART_BAUDDIV = CORE_HZ / BAUD; /* QEMU ignores the rate; a real MPS2 needs it (>= 16) */
    UART_INTCLEAR = 0xFu;
    UART_CTRL = 3u | 8u; /* TX, RX, RX interrupt */
    NVIC_ISER0 = 1u << UART0_RX_IRQ;
}

static void uart_write(const uint8_t *bytes, size_t n) {
    while (n--) {
        while (UART_STATE & UART_STATE_TXFULL) {
        }
        UART_DATA = *bytes++;
    }
}

/* 64-bit ticks since boot: the wrap count and the down-counter read together with interrupts off; a wrap that is
 * pending but not yet counted is added by hand (the counter is read again after it, so the two agree).
 * SysTick pends its interrupt as the counter goes from 1 to 0, so the period runs 0, RVR, ..., 1: the position in it
 * is (2^24 - cvr) mod 2^24, and 0 right after the wrap was counted. (The 0 read before the first reload after
 * enabling reads as position 0 of period 0: monotonic too.) */
static uint64_t board_ticks(void) {
    uint32_t primask, wraps, cvr;
    __asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
    wraps = tq_systick_wraps;
    cvr = SYST_CVR;
    if (SCB_ICSR & (1u << 26)) {
        cvr = SYST_CVR;
        wraps++;
    }
    __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
    return ((uint64_t)wraps << 24) + ((0x01000000u - cvr) & 0x00FFFFFFu);
}

static uint32_t board_clock(void) { return (uint32_t)board_ticks(); }

/* The next received byte from the ring, or -1. */
static int rx_getc(void) {
    uint8_t byte;
    if (rx_tail == rx_head) return -1;
    byte = rx_ring[rx_tail & (RX_RING - 1u)];
    rx_tail++;
    return byte;
}

/* Sleep until a byte arrives: with interrupts masked, an RX interrupt between the test and WFI still wakes it (it is
 * pending), and is taken right after cpsie. */
static void rx_wait(void) {
    __asm__ volatile("cpsid i" ::: "memory");
    if (rx_head == rx_tail) __asm__ volatile("dsb\n\twfi" ::: "memory");
    __asm__ volatile("cpsie i\n\tisb" ::: "memory");
}

/* RESET: NVIC_SystemReset at once: every byte of the reply was handed to the UART by uart_write (QEMU sends it at
 * once). */
static const tq_board board = {
    "mps2-an386", "systick", CORE_HZ, TQ_CM_MODEL_BUF, TQ_MODEL_CAPACITY, tq_cm_arena, TQ_ARENA_CAPACITY,
    uart_write, board_ticks, board_clock, tq_cm_system_reset,
};

int main(void) {
    uart_init();
    tq_cm_systick_start();
    tq_cm_run(&board, rx_getc, rx_wait);
}
