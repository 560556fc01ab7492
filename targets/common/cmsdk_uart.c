/* The CMSDK APB UART driver of the MPS2/MPS3 boards (cmsdk_uart.h). */
#include "cmsdk_uart.h"

#include "cortex_m.h"

#define UART_DATA(b) REG32((b) + 0x00u)
#define UART_STATE(b) REG32((b) + 0x04u)    /* bit 0: TX buffer full, bit 1: RX buffer full */
#define UART_CTRL(b) REG32((b) + 0x08u)     /* bit 0: TX enable, bit 1: RX enable, bit 3: RX interrupt enable */
#define UART_INTCLEAR(b) REG32((b) + 0x0Cu) /* write 1 to bit 1: clear the RX interrupt */
#define UART_BAUDDIV(b) REG32((b) + 0x10u)
#define UART_STATE_TXFULL 1u
#define UART_STATE_RXFULL 2u

static uint32_t uart_base;

/* Received bytes go through a ring filled by the RX interrupt; the main loop sleeps (WFI) while it is empty, so an
 * idle board costs QEMU no host CPU (a polling loop keeps a host core at 100%). QEMU's CMSDK UART holds one byte and
 * takes the next from the socket only on a later iteration of QEMU's main loop: 5-15 KB/s into the board, whatever
 * the guest does (a model baked into the image with TQ_EMBEDDED_MODEL loads instantly instead). */
#define RX_RING 4096u /* a power of two, more than a whole frame */
static volatile uint8_t rx_ring[RX_RING];
static volatile uint32_t rx_head, rx_tail;

void tq_cmsdk_uart_rx_isr(void) {
    const uint32_t b = uart_base;
    UART_INTCLEAR(b) = 2u; /* first: a byte that arrives after the loop below raises the interrupt again */
    while (UART_STATE(b) & UART_STATE_RXFULL) {
        uint8_t byte = (uint8_t)UART_DATA(b);
        uint32_t head = rx_head;
        if (head - rx_tail < RX_RING) { /* full: dropped (the host's CRC check and retry recover it) */
            rx_ring[head & (RX_RING - 1u)] = byte;
            rx_head = head + 1u;
        }
    }
}

void tq_cmsdk_uart_init(uint32_t base, int rx_irq, uint32_t core_hz, uint32_t baud) {
    uart_base = base;
    UART_CTRL(base) = 0;
    UART_BAUDDIV(base) = core_hz / baud; /* QEMU ignores the rate; a real MPS2/MPS3 needs it (>= 16) */
    UART_INTCLEAR(base) = 0xFu;
    UART_CTRL(base) = 3u | 8u; /* TX, RX, RX interrupt */
    REG32(0xE000E100u + 4u * ((uint32_t)rx_irq / 32u)) = 1u << ((uint32_t)rx_irq % 32u); /* NVIC ISERn */
}

void tq_cmsdk_uart_write(const uint8_t *bytes, size_t n) {
    const uint32_t b = uart_base;
    while (n--) {
        while (UART_STATE(b) & UART_STATE_TXFULL) {
        }
        UART_DATA(b) = *bytes++;
    }
}

int tq_cmsdk_uart_getc(void) {
    uint8_t byte;
    if (rx_tail == rx_head) return -1;
    byte = rx_ring[rx_tail & (RX_RING - 1u)];
    rx_tail++;
    return byte;
}

/* With interrupts masked, an RX interrupt between the test and WFI still wakes it (it is pending), and is taken
 * right after cpsie. */
void tq_cmsdk_uart_wait(void) {
    __asm__ volatile("cpsid i" ::: "memory");
    if (rx_head == rx_tail) __asm__ volatile("dsb\n\twfi" ::: "memory");
    __asm__ volatile("cpsie i\n\tisb" ::: "memory");
}
