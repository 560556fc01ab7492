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
 *   bytes of AXI SRAM, 0 in target.toml: uploads are then refused (TOO_BIG) and the board runs only the flashed model.
 * The USART driver, the cycle counter, the buffers and the main loop are common/stm32_usart.c and common/cortex_m.c;
 * this file has the board's clocks, pins and USART3.
 */
#include "stm32_usart.h"

/* RCC (RM0433 "RCC registers"): base 0x58024400 */
#define RCC_AHB4ENR REG32(0x580244E0u)  /* RCC_AHB4ENR: bit 3 GPIODEN */
#define RCC_APB1LENR REG32(0x580244E8u) /* RCC_APB1LENR: bit 18 USART3EN */
/* GPIO (RM0433 "GPIO registers"): GPIOD 0x58020C00 */
#define GPIOD_BASE 0x58020C00u
/* USART3 (RM0433 "USART registers"): base 0x40004800; FIFO mode off after reset (CR1 FIFOEN = 0) */
#define USART3_BASE 0x40004800u

#define CORE_HZ 64000000u

static void usart3_pins(void) {
    RCC_AHB4ENR |= 1u << 3;
    RCC_APB1LENR |= 1u << 18;
    (void)RCC_APB1LENR; /* a read back: the clock is on before the first register access */
    /* PD8: AF7 (USART3_TX), high speed; PD9: AF7 (USART3_RX) with a pull-up */
    GPIO_MODER(GPIOD_BASE) = (GPIO_MODER(GPIOD_BASE) & ~(0xFu << 16)) | (0xAu << 16);
    GPIO_OSPEEDR(GPIOD_BASE) |= 3u << 16;
    GPIO_PUPDR(GPIOD_BASE) = (GPIO_PUPDR(GPIOD_BASE) & ~(3u << 18)) | (1u << 18);
    GPIO_AFRH(GPIOD_BASE) = (GPIO_AFRH(GPIOD_BASE) & ~0xFFu) | 0x77u;
}

int main(void) {
    usart3_pins();
    /* the USART3 kernel clock is rcc_pclk1 (RCC_D2CCIP2R USART234578SEL = 0), 64 MHz after reset */
    tq_stm32_run("nucleo-h743zi", CORE_HZ, USART3_BASE, CORE_HZ);
}
