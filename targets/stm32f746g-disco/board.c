/* The STM32F746G-DISCO board (STM32F746NGH6, Cortex-M7): the tsptq device program over USART1, the ST-LINK virtual
 * COM port, timed with the DWT cycle counter. Register-level, no vendor HAL.
 *
 * - Clock: the reset clock, HSI 16 MHz, no PLL (RM0385 5.2: HSI is the system clock after reset; AHB and APB
 *   prescalers are 1). The cycle counts do not depend on it (at 16 MHz the flash needs no wait state); for wall time
 *   divide by 16 MHz.
 * - USART1 at 115200 8N1, polled: TX on PA9, RX on PB7, both AF7 (UM1907 "Discovery kit for STM32F7 Series with
 *   STM32F746NG", ST-LINK/V2-1 virtual COM port; PA10 is the USB OTG FS ID pin on this board, not the VCP).
 * - Ticks: DWT CYCCNT (core cycles, tick_unit "cycles"), extended to 64 bits in software; SysTick interrupts every
 *   2^24 cycles so that no 32-bit wrap is missed during a long inference.
 * - RESET: NVIC_SystemReset (SCB AIRCR SYSRESETREQ), after the last reply byte left the USART.
 * - Model: baked into flash with TQ_EMBEDDED_MODEL and committed at boot. The upload buffer is TQ_MODEL_CAPACITY
 *   bytes of RAM, 0 in target.toml: uploads are then refused (TOO_BIG) and the board runs only the flashed model.
 * The USART driver, the cycle counter, the buffers and the main loop are common/stm32_usart.c and common/cortex_m.c;
 * this file has the board's clocks, pins and USART1.
 */
#include "stm32_usart.h"

/* RCC (RM0385 5.3): base 0x40023800 */
#define RCC_AHB1ENR REG32(0x40023830u) /* 5.3.10: bit 0 GPIOAEN, bit 1 GPIOBEN */
#define RCC_APB2ENR REG32(0x40023844u) /* 5.3.14: bit 4 USART1EN */
/* GPIO (RM0385 6.4 "GPIO registers"): GPIOA 0x40020000, GPIOB 0x40020400 */
#define GPIOA_BASE 0x40020000u
#define GPIOB_BASE 0x40020400u
/* USART1 (RM0385 "USART registers"): base 0x40011000 */
#define USART1_BASE 0x40011000u

#define CORE_HZ 16000000u

static void usart1_pins(void) {
    RCC_AHB1ENR |= (1u << 0) | (1u << 1);
    RCC_APB2ENR |= 1u << 4;
    (void)RCC_APB2ENR; /* a read back: the clock is on before the first register access */
    /* PA9: alternate function 7 (USART1_TX), high speed */
    GPIO_MODER(GPIOA_BASE) = (GPIO_MODER(GPIOA_BASE) & ~(3u << 18)) | (2u << 18);
    GPIO_OSPEEDR(GPIOA_BASE) |= 3u << 18;
    GPIO_AFRH(GPIOA_BASE) = (GPIO_AFRH(GPIOA_BASE) & ~(0xFu << 4)) | (7u << 4);
    /* PB7: alternate function 7 (USART1_RX), pull-up so that an unconnected line idles high */
    GPIO_MODER(GPIOB_BASE) = (GPIO_MODER(GPIOB_BASE) & ~(3u << 14)) | (2u << 14);
    GPIO_PUPDR(GPIOB_BASE) = (GPIO_PUPDR(GPIOB_BASE) & ~(3u << 14)) | (1u << 14);
    GPIO_AFRL(GPIOB_BASE) = (GPIO_AFRL(GPIOB_BASE) & ~(0xFu << 28)) | (7u << 28);
}

int main(void) {
    usart1_pins();
    /* the USART1 kernel clock is PCLK2, the 16 MHz HSI after reset (RM0385 "USART baud rate generation") */
    tq_stm32_run("stm32f746g-disco", CORE_HZ, USART1_BASE, CORE_HZ);
}
