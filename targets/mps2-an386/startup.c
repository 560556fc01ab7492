/* Start-up code for the mps2-an386 firmware (Cortex-M4F): the vector table, Reset_Handler (common/cortex_m.c's
 * tq_cm_start: FPU on, the fault handlers enabled here, .data copied from flash, .bss zeroed, then main), the SysTick
 * handler that extends the 24-bit SysTick to 64 bits (board.c reads it), and the fault handlers.
 *
 * A fault is reported through Arm semihosting (QEMU runs with -semihosting-config enable=on,target=native): the
 * handler prints "tsptq mps2-an386: <fault> at pc 0x..." on QEMU's stderr and exits QEMU with status 1, so the host
 * sees the link close at once with the reason, instead of a board that silently stops answering. */
#include "cortex_m.h"

/* SysTick wraps since boot (one wrap = 2^24 core clock ticks); read by board.c. */
volatile uint32_t tq_systick_wraps;

void Reset_Handler(void);
void SysTick_Handler(void);
void NMI_Handler(void);
void HardFault_Handler(void);
void MemManage_Handler(void);
void BusFault_Handler(void);
void UsageFault_Handler(void);
void Default_Handler(void);
void UART0RX_Handler(void); /* board.c */

/* ---- semihosting (only used to report a fault) ------------------------------------------------------------------ */

static int semihost(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static const char *const fault_names[] = {"NMI", "HardFault", "MemManage fault", "BusFault", "UsageFault",
                                          "unexpected exception"};

/* Reached from the handlers below with the fault's number and the exception frame (stacked r0-r3, r12, lr, pc,
 * xpsr) of the code that faulted. */
void tq_fault(uint32_t code, const uint32_t *frame);
void tq_fault(uint32_t code, const uint32_t *frame) {
    static char msg[112];
    static const char hex[] = "0123456789abcdef";
    const char *parts[3] = {"tsptq mps2-an386: ", fault_names[code < 6 ? code : 5], " at pc 0x"};
    uint32_t n = 0, k, pc = frame[6], cfsr = SCB_CFSR;
    int i;
    for (k = 0; k < 3; k++)
        for (i = 0; parts[k][i] && n < 60; i++) msg[n++] = parts[k][i];
    for (i = 28; i >= 0; i -= 4) msg[n++] = hex[(pc >> i) & 15];
    for (i = 0; " cfsr 0x"[i]; i++) msg[n++] = " cfsr 0x"[i];
    for (i = 28; i >= 0; i -= 4) msg[n++] = hex[(cfsr >> i) & 15];
    msg[n++] = '\n';
    msg[n] = 0;
    semihost(0x04, msg);                   /* SYS_WRITE0 */
    semihost(0x18, (const void *)0x20023); /* SYS_EXIT, ADP_Stopped_RunTimeErrorUnknown: QEMU exits with 1 */
    for (;;) {
    }
}

/* Each handler passes its number and the frame from the stack in use (EXC_RETURN bit 2: MSP or PSP). */
#define FAULT_HANDLER(name, code)                                                                                \
    __attribute__((naked)) void name(void) {                                                                     \
        __asm__ volatile("movs r0, #" #code "\n\t"                                                               \
                         "tst lr, #4\n\t"                                                                        \
                         "ite eq\n\t"                                                                            \
                         "mrseq r1, msp\n\t"                                                                     \
                         "mrsne r1, psp\n\t"                                                                     \
                         "b tq_fault\n\t");                                                                      \
    }
FAULT_HANDLER(NMI_Handler, 0)
FAULT_HANDLER(HardFault_Handler, 1)
FAULT_HANDLER(MemManage_Handler, 2)
FAULT_HANDLER(BusFault_Handler, 3)
FAULT_HANDLER(UsageFault_Handler, 4)
FAULT_HANDLER(Default_Handler, 5)

void SysTick_Handler(void) { tq_systick_wraps++; }

static void fault_handlers_enable(void) {
    SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18); /* the precise faults get their own message */
}

void Reset_Handler(void) { tq_cm_start(fault_handlers_enable, NULL); }

/* Cortex-M4 system exceptions, then mps2-an386's 32 external interrupts: only UART0 RX (IRQ 0) is enabled. */
__attribute__((section(".isr_vector"), used)) void (*const tq_vector_table[16 + 32])(void) = {
    TQ_CM_SYSTEM_VECTORS(Reset_Handler, NMI_Handler, HardFault_Handler, MemManage_Handler, BusFault_Handler,
                         UsageFault_Handler, Default_Handler, SysTick_Handler),
    UART0RX_Handler, /* IRQ 0 */
    [17 ... 16 + 31] = Default_Handler,
};
