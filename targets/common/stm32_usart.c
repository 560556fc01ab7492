/* The STM32F7 / STM32H7 USART as the device's link, polled (stm32_usart.h). */
#include "stm32_usart.h"

/* USART registers at its base (RM0385 and RM0433 "USART registers") */
#define USART_CR1(b) REG32((b) + 0x00u) /* bit 0 UE, bit 2 RE, bit 3 TE */
#define USART_BRR(b) REG32((b) + 0x0Cu)
#define USART_ISR(b) REG32((b) + 0x1Cu) /* bit 3 ORE, bit 5 RXNE, bit 6 TC, bit 7 TXE */
#define USART_ICR(b) REG32((b) + 0x20u) /* bits 0-3: PE, FE, NE, ORE clear */
#define USART_RDR(b) REG32((b) + 0x24u)
#define USART_TDR(b) REG32((b) + 0x28u)
#define ISR_ERRORS 0x0Fu
#define ISR_RXNE (1u << 5)
#define ISR_TC (1u << 6)
#define ISR_TXE (1u << 7)
#define BAUD 115200u

static uint32_t usart; /* the base of the board's USART */
static tq_board board;

static void usart_write(const uint8_t *bytes, size_t n) {
    while (n--) {
        while (!(USART_ISR(usart) & ISR_TXE)) {
        }
        USART_TDR(usart) = *bytes++;
    }
}

/* The next received byte, or -1; clears overrun/noise/framing errors (a lost byte fails its frame's CRC and the
 * host resends). */
static int usart_getc(void) {
    uint32_t isr = USART_ISR(usart);
    if (isr & ISR_ERRORS) USART_ICR(usart) = ISR_ERRORS;
    if (isr & ISR_RXNE) return (int)(USART_RDR(usart) & 0xFFu);
    return -1;
}

static void usart_reset(void) {
    while (!(USART_ISR(usart) & ISR_TC)) { /* the reply's last byte is on the wire */
    }
    tq_cm_system_reset();
}

void tq_stm32_run(const char *board_name, uint32_t core_hz, uint32_t usart_base, uint32_t usart_hz) {
    usart = usart_base;
    /* 115200 8N1, oversampling by 16, prescaler 1: BRR = usart_ker_ck / baud ("USART baud rate generation") */
    USART_CR1(usart) = 0;
    USART_BRR(usart) = (usart_hz + BAUD / 2u) / BAUD;
    USART_CR1(usart) = (1u << 0) | (1u << 2) | (1u << 3);
    tq_cm_cycles_init();
    board = (tq_board){board_name, "cycles", core_hz, TQ_CM_MODEL_BUF, TQ_MODEL_CAPACITY, tq_cm_arena,
                       TQ_ARENA_CAPACITY, usart_write, tq_cm_cycles, tq_cm_cycles32, usart_reset};
    tq_cm_run(&board, usart_getc, NULL);
}
