/* The NUCLEO-H743ZI / NUCLEO-H743ZI2 board (STM32H743ZI, Cortex-M7): the tsptq device program over USART3, the
 * ST-LINK virtual COM port, timed with the DWT cycle counter. Register-level, no vendor HAL.
 *
 * - Clock: the reset clock, HSI 64 MHz, no PLL (RM0433 "Reset and clock control": HSI with HSIDIV = 1 is sys_ck
 *   after reset; D1CPRE, HPRE and D2PPRE1 are 1, so rcc_pclk1 = 64 MHz; voltage scale 3 at reset supports it). The
 *   reset flash latency (7 wait states) is kept: safe, not fast. For wall time divide the cycles by 64 MHz.
 * - USART3 at 115200 8N1, polled: TX on PD8, RX on PD9, both AF7 (UM2407 "STM32H7 Nucleo-144 boards": the ST-LINK
 *   virtual COM port). Its kernel clock is rcc_pclk1 after reset (RCC_D2CCIP2R USART234578SEL = 0).
 * - Ticks: DWT CYCCNT (core cycles, tick_unit "cycles"), extended to 64 bits in software; SysTick interrupts every
 *   2^24 cycles so that no 32-bit wrap is missed during a long inference.
 * - RESET: NVIC_SystemReset (SCB AIRCR SYSRESETREQ), after the last reply byte left the USART.
 * - Model: baked into flash with TQ_EMBEDDED_MODEL and committed at boot. The upload buffer is TQ_MODEL_CAPACITY
 *   bytes of AXI SRAM, 0 by default: uploads are then refused (TOO_BIG) and the board runs only the flashed model.
 */
#include <stdint.h>

#include "tq_device.h"

#ifndef TQ_MODEL_CAPACITY
#define TQ_MODEL_CAPACITY 0u
#endif
#ifndef TQ_ARENA_CAPACITY
#define TQ_ARENA_CAPACITY (384u * 1024u)
#endif

#define REG32(addr) (*(volatile uint32_t *)(addr))

/* RCC (RM0433 "RCC registers"): base 0x58024400 */
#define RCC_AHB4ENR REG32(0x580244E0u)  /* RCC_AHB4ENR: bit 3 GPIODEN */
#define RCC_APB1LENR REG32(0x580244E8u) /* RCC_APB1LENR: bit 18 USART3EN */
/* GPIO (RM0433 "GPIO registers"): GPIOD 0x58020C00 */
#define GPIOD_BASE 0x58020C00u
#define GPIO_MODER(b) REG32((b) + 0x00u)
#define GPIO_OSPEEDR(b) REG32((b) + 0x08u)
#define GPIO_PUPDR(b) REG32((b) + 0x0Cu)
#define GPIO_AFRH(b) REG32((b) + 0x24u)
/* USART3 (RM0433 "USART registers"): base 0x40004800; FIFO mode off after reset (CR1 FIFOEN = 0) */
#define USART3_BASE 0x40004800u
#define USART_CR1 REG32(USART3_BASE + 0x00u) /* bit 0 UE, bit 2 RE, bit 3 TE */
#define USART_BRR REG32(USART3_BASE + 0x0Cu)
#define USART_ISR REG32(USART3_BASE + 0x1Cu) /* bit 3 ORE, bit 5 RXNE, bit 6 TC, bit 7 TXE */
#define USART_ICR REG32(USART3_BASE + 0x20u) /* bits 0-3: PE, FE, NE, ORE clear */
#define USART_RDR REG32(USART3_BASE + 0x24u)
#define USART_TDR REG32(USART3_BASE + 0x28u)
#define ISR_ERRORS 0x0Fu
#define ISR_RXNE (1u << 5)
#define ISR_TC (1u << 6)
#define ISR_TXE (1u << 7)
/* Cortex-M7 core (PM0253; Arm v7-M ARM C1.8 DWT) */
#define SYST_CSR REG32(0xE000E010u)
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)
#define SCB_AIRCR REG32(0xE000ED0Cu)
#define DEMCR REG32(0xE000EDFCu)    /* bit 24 TRCENA */
#define DWT_CTRL REG32(0xE0001000u) /* bit 0 CYCCNTENA */
#define DWT_CYCCNT REG32(0xE0001004u)
#define DWT_LAR REG32(0xE0001FB0u) /* the Cortex-M7 DWT is locked until 0xC5ACCE55 is written here */

#define CORE_HZ 64000000u
#define BAUD 115200u

#ifdef TQ_EMBEDDED_MODEL
extern const uint8_t tq_embedded_model[];
extern const uint32_t tq_embedded_model_len;
#endif

#if TQ_MODEL_CAPACITY > 0
static uint8_t model_buf[TQ_MODEL_CAPACITY] __attribute__((aligned(16)));
#define MODEL_BUF model_buf
#else
#define MODEL_BUF NULL
#endif
static uint8_t arena[TQ_ARENA_CAPACITY] __attribute__((section(".arena"), aligned(16)));
static tq_device dev;

static void uart_init(void) {
    RCC_AHB4ENR |= 1u << 3;
    RCC_APB1LENR |= 1u << 18;
    (void)RCC_APB1LENR; /* a read back: the clock is on before the first register access */
    /* PD8: AF7 (USART3_TX), high speed; PD9: AF7 (USART3_RX) with a pull-up */
    GPIO_MODER(GPIOD_BASE) = (GPIO_MODER(GPIOD_BASE) & ~(0xFu << 16)) | (0xAu << 16);
    GPIO_OSPEEDR(GPIOD_BASE) |= 3u << 16;
    GPIO_PUPDR(GPIOD_BASE) = (GPIO_PUPDR(GPIOD_BASE) & ~(3u << 18)) | (1u << 18);
    GPIO_AFRH(GPIOD_BASE) = (GPIO_AFRH(GPIOD_BASE) & ~0xFFu) | 0x77u;
    /* 115200 8N1, oversampling by 16, prescaler 1: BRR = usart_ker_ck / baud ("USART baud rate generation") */
    USART_CR1 = 0;
    USART_BRR = (CORE_HZ + BAUD / 2u) / BAUD;
    USART_CR1 = (1u << 0) | (1u << 2) | (1u << 3);
}

static void uart_write(const uint8_t *bytes, size_t n) {
    while (n--) {
        while (!(USART_ISR & ISR_TXE)) {
        }
        USART_TDR = *bytes++;
    }
}

/* The next received byte, or -1; clears overrun/noise/framing errors (a lost byte fails its frame's CRC and the
 * host resends). */
static int uart_getc(void) {
    uint32_t isr = USART_ISR;
    if (isr & ISR_ERRORS) USART_ICR = ISR_ERRORS;
    if (isr & ISR_RXNE) return (int)(USART_RDR & 0xFFu);
    return -1;
}

static volatile uint32_t cyc_high, cyc_last;

static void cycles_init(void) {
    DEMCR |= 1u << 24;
    DWT_LAR = 0xC5ACCE55u;
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
    SYST_RVR = 0x00FFFFFFu; /* an interrupt every 2^24 cycles keeps the 64-bit extension current */
    SYST_CVR = 0;
    SYST_CSR = 7u;
}

/* 64-bit cycles since boot: CYCCNT plus the wraps seen (interrupts off while the two are updated together). */
static uint64_t board_ticks(void) {
    uint32_t primask, now;
    uint64_t t;
    __asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
    now = DWT_CYCCNT;
    if (now < cyc_last) cyc_high++;
    cyc_last = now;
    t = ((uint64_t)cyc_high << 32) | now;
    __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
    return t;
}

void SysTick_Handler(void);
void SysTick_Handler(void) { (void)board_ticks(); }

static uint32_t board_clock(void) { return DWT_CYCCNT; }

static void board_reset(void) {
    while (!(USART_ISR & ISR_TC)) { /* the reply's last byte is on the wire */
    }
    __asm__ volatile("dsb" ::: "memory");
    SCB_AIRCR = (0x05FAu << 16) | (SCB_AIRCR & (7u << 8)) | (1u << 2);
    __asm__ volatile("dsb" ::: "memory");
    for (;;) {
    }
}

static const tq_board board = {
    "nucleo-h743zi", "cycles", CORE_HZ, MODEL_BUF, TQ_MODEL_CAPACITY, arena, TQ_ARENA_CAPACITY,
    uart_write, board_ticks, board_clock, board_reset,
};

int main(void) {
    uart_init();
    cycles_init();
    tq_device_init(&dev, &board);
#ifdef TQ_EMBEDDED_MODEL
    (void)tq_device_set_model(&dev, tq_embedded_model, tq_embedded_model_len); /* a rejected one: HELLO shows none */
#endif
    for (;;) {
        int c = uart_getc();
        if (c >= 0) tq_device_feed(&dev, (uint8_t)c);
    }
}
