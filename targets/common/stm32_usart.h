/* What the two STM32 boards share (stm32_usart.c): stm32f746g-disco (STM32F746NG) and nucleo-h743zi (STM32H743ZI).
 * Their GPIO ports and USARTs are the same blocks with the same register offsets (RM0385 6.4 "GPIO registers" and
 * "USART registers"; RM0433 "GPIO registers" and "USART registers", the USART with FIFO mode off after reset, CR1
 * FIFOEN = 0); a board keeps its base addresses, clock enables, pins and clocks.
 *
 * tq_stm32_run is a board's main loop: its USART, polled at 115200 8N1, as the device's link, DWT CYCCNT core cycles
 * as its ticks (tick_unit "cycles"), RESET as NVIC_SystemReset after the last reply byte left the USART. */
#ifndef TQ_STM32_USART_H
#define TQ_STM32_USART_H

#include "cortex_m.h"

/* GPIO port registers at a port's base */
#define GPIO_MODER(b) REG32((b) + 0x00u)
#define GPIO_OSPEEDR(b) REG32((b) + 0x08u)
#define GPIO_PUPDR(b) REG32((b) + 0x0Cu)
#define GPIO_AFRL(b) REG32((b) + 0x20u)
#define GPIO_AFRH(b) REG32((b) + 0x24u)

/* Runs the device program on the USART at usart_base (its clock enabled, its pins set to their alternate function)
 * whose kernel clock is usart_hz; core_hz is the rate of the cycle counter HELLO reports. */
void tq_stm32_run(const char *board_name, uint32_t core_hz, uint32_t usart_base, uint32_t usart_hz)
    __attribute__((noreturn));

#endif
