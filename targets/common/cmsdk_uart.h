/* The Arm CMSDK APB UART of QEMU's MPS2/MPS3 boards (mps2-an386 UART0 at 0x40004000, mps3-an547 UART0 at
 * 0x49303000): received bytes go through the RX interrupt into a ring, bytes are sent by polling TXFULL. Only one
 * UART per firmware. Registers: Arm CMSDK technical reference, "APB UART"; QEMU hw/char/cmsdk-apb-uart.c. */
#ifndef TQ_CMSDK_UART_H
#define TQ_CMSDK_UART_H

#include <stddef.h>
#include <stdint.h>

/* Enable the UART at `base` (RX interrupt on) and its RX interrupt `rx_irq` in the NVIC. */
void tq_cmsdk_uart_init(uint32_t base, int rx_irq, uint32_t core_hz, uint32_t baud);
/* The body of the board's RX interrupt handler. */
void tq_cmsdk_uart_rx_isr(void);
void tq_cmsdk_uart_write(const uint8_t *bytes, size_t n);
/* The next received byte, or -1. */
int tq_cmsdk_uart_getc(void);
/* Sleep (WFI) until a byte arrives. */
void tq_cmsdk_uart_wait(void);

#endif
