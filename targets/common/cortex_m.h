/* What the Cortex-M firmwares share (cortex_m.c): mps2-an386 (Cortex-M4F), mps3-an547 (Cortex-M55),
 * stm32f746g-disco and nucleo-h743zi (Cortex-M7). A board keeps its vector table, UART, clocks, memory map and errata; this file gives it
 *
 * - the core's registers (Armv7-M Architecture Reference Manual: B3.2 system control block, B3.3 SysTick, B3.4
 *   NVIC, C1.6 DEMCR, C1.8 DWT; PM0253 "STM32F7 and STM32H7 programming manual" section 4.3 SCB and 4.8 cache
 *   maintenance for the Cortex-M7 parts) and TQ_CM_SYSTEM_VECTORS, the 16 system entries of a vector table;
 * - tq_cm_start, the body of a Reset_Handler: FPU on, .data copied from flash, .bss zeroed, then main, with a
 *   board hook before and after the memory set-up (VTOR, errata, caches, fault enables);
 * - tick counters: tq_cm_systick_start (SysTick on the core clock, an interrupt every 2^24 ticks) and the DWT CYCCNT
 *   cycle counter extended to 64 bits by that interrupt (tq_cm_cycles*); QEMU models no DWT, so the QEMU
 *   boards count SysTick wraps instead (tq_cm_systick_ticks);
 * - tq_cm_system_reset (NVIC_SystemReset through SCB->AIRCR SYSRESETREQ) and tq_cm_default_handler;
 * - the device: the upload buffer and the arena (sized by -DTQ_MODEL_CAPACITY / -DTQ_ARENA_CAPACITY in
 *   target.toml, placed by the linker script's .model_buf and .arena sections), and tq_cm_run, the main loop that
 *   commits the model baked in with TQ_EMBEDDED_MODEL and feeds every received byte to tq_device_feed.
 */
#ifndef TQ_CORTEX_M_H
#define TQ_CORTEX_M_H

#include <stddef.h>
#include <stdint.h>

#include "tq_device.h"

#define REG32(addr) (*(volatile uint32_t *)(addr))

/* System control space (Armv7-M ARM B3.2, B3.3, B3.4) */
#define SYST_CSR REG32(0xE000E010u) /* bit 0 ENABLE, bit 1 TICKINT, bit 2 CLKSOURCE (1: core clock) */
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)
#define NVIC_ISER0 REG32(0xE000E100u)
#define SCB_ICSR REG32(0xE000ED04u) /* bit 26: PENDSTSET, SysTick pending */
#define SCB_VTOR REG32(0xE000ED08u)
#define SCB_AIRCR REG32(0xE000ED0Cu)
#define SCB_CCR REG32(0xE000ED14u)   /* Cortex-M7: bit 16 DC data cache enable, bit 17 IC instruction cache enable */
#define SCB_SHCSR REG32(0xE000ED24u) /* system handler control: enable MemManage/BusFault/UsageFault */
#define SCB_CFSR REG32(0xE000ED28u)  /* configurable fault status */
#define SCB_CCSIDR REG32(0xE000ED80u)
#define SCB_CSSELR REG32(0xE000ED84u)
#define SCB_CPACR REG32(0xE000ED88u) /* coprocessor access control (CP10/CP11 full access: the FPU) */
#define SCB_ICIALLU REG32(0xE000EF50u)
#define SCB_DCISW REG32(0xE000EF60u)
/* DWT cycle counter (Armv7-M ARM C1.6, C1.8; PM0253) */
#define DEMCR REG32(0xE000EDFCu)    /* bit 24 TRCENA */
#define DWT_CTRL REG32(0xE0001000u) /* bit 0 CYCCNTENA */
#define DWT_CYCCNT REG32(0xE0001004u)
#define DWT_LAR REG32(0xE0001FB0u) /* the Cortex-M7 DWT is locked until 0xC5ACCE55 is written here */

/* The 16 system entries of an Armv7-M vector table (Armv7-M ARM B1.5.3); a board's table adds its IRQs after them. */
#define TQ_CM_SYSTEM_VECTORS(reset, nmi, hardfault, memmanage, busfault, usagefault, other, systick) \
    (void (*)(void))(uintptr_t)&_estack, /* initial main stack pointer */                            \
    reset, nmi, hardfault, memmanage, busfault, usagefault,                                          \
    0, 0, 0, 0, /* reserved */                                                                       \
    other,      /* SVCall */                                                                         \
    other,      /* DebugMonitor */                                                                   \
    0,          /* reserved */                                                                       \
    other,      /* PendSV */                                                                         \
    systick
extern uint32_t _estack; /* the linker script's top of the main stack */

/* The Reset_Handler body: FPU on, before_memory(), .data copied, .bss zeroed, after_memory(), main() (hooks may be
 * NULL; before_memory runs with .data/.bss not yet set up). */
void tq_cm_start(void (*before_memory)(void), void (*after_memory)(void)) __attribute__((noreturn));
/* Cortex-M7: invalidate, then enable the L1 instruction and data caches (PM0253 4.8). */
void tq_cm7_caches_enable(void);
/* A fault or an unexpected exception: stop (the host's timeouts report a board that stopped answering). */
void tq_cm_default_handler(void);
/* NVIC_SystemReset (SCB AIRCR SYSRESETREQ); the caller has made sure the reply left the UART. */
void tq_cm_system_reset(void) __attribute__((noreturn));

/* SysTick on the core clock, period 2^24 ticks, interrupt on each wrap. */
void tq_cm_systick_start(void);
/* SysTick counting as the tick source (tick_unit "systick": QEMU's boards, which model no DWT): the board's
 * SysTick_Handler calls tq_cm_systick_wrap, tq_cm_systick_ticks is the 64-bit tick count since
 * tq_cm_systick_start. */
void tq_cm_systick_wrap(void);
uint64_t tq_cm_systick_ticks(void);
/* DWT CYCCNT core cycles (tick_unit "cycles"), extended to 64 bits: tq_cm_cycles_init also starts SysTick, whose
 * handler must be tq_cm_cycles_systick, so that no 32-bit wrap is missed during a long inference. */
void tq_cm_cycles_init(void);
uint64_t tq_cm_cycles(void);
uint32_t tq_cm_cycles32(void);
void tq_cm_cycles_systick(void);

/* The upload buffer (none when TQ_MODEL_CAPACITY is 0: uploads are refused with TOO_BIG) and the tensor arena. */
#if !defined(TQ_MODEL_CAPACITY) || !defined(TQ_ARENA_CAPACITY)
#error "target.toml's cflags define TQ_MODEL_CAPACITY and TQ_ARENA_CAPACITY (HELLO reports them)"
#endif
#if TQ_MODEL_CAPACITY > 0
extern uint8_t tq_cm_model_buf[];
#define TQ_CM_MODEL_BUF tq_cm_model_buf
#else
#define TQ_CM_MODEL_BUF NULL
#endif
extern uint8_t tq_cm_arena[];

/* The device program: tq_device_init (BOOT), the TQ_EMBEDDED_MODEL commit, then every byte read_byte returns
 * (-1: none) to tq_device_feed; idle (may be NULL) runs when there is none. */
void tq_cm_run(const tq_board *board, int (*read_byte)(void), void (*idle)(void)) __attribute__((noreturn));

#endif
