/* Fault reporting through semihosting under qemu-system-arm (qemu_fault.h). */
#include "qemu_fault.h"

#include "cortex_m.h"

int tq_semihost(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void tq_semihost_write0(const char *text) { tq_semihost(0x04, text); }

void tq_semihost_exit(uint32_t reason) {
    tq_semihost(0x18, (const void *)(uintptr_t)reason);
    for (;;) {
    }
}

static const char *const fault_names[] = {"NMI", "HardFault", "MemManage fault", "BusFault", "UsageFault",
                                          "unexpected exception"};

/* Reached from the handlers below with the fault's number and the exception frame (stacked r0-r3, r12, lr, pc,
 * xpsr) of the code that faulted. */
void tq_fault(uint32_t code, const uint32_t *frame);
void tq_fault(uint32_t code, const uint32_t *frame) {
    static char msg[128];
    static const char hex[] = "0123456789abcdef";
    const char *parts[4] = {"tsptq ", tq_board_name, ": ", fault_names[code < 6 ? code : 5]};
    uint32_t n = 0, k, pc = frame[6], cfsr = SCB_CFSR;
    int i;
    for (k = 0; k < 4; k++)
        for (i = 0; parts[k][i] && n < 80; i++) msg[n++] = parts[k][i];
    for (i = 0; " at pc 0x"[i]; i++) msg[n++] = " at pc 0x"[i];
    for (i = 28; i >= 0; i -= 4) msg[n++] = hex[(pc >> i) & 15];
    for (i = 0; " cfsr 0x"[i]; i++) msg[n++] = " cfsr 0x"[i];
    for (i = 28; i >= 0; i -= 4) msg[n++] = hex[(cfsr >> i) & 15];
    msg[n++] = '\n';
    msg[n] = 0;
    tq_semihost_write0(msg);
    tq_semihost_exit(0x20023); /* QEMU exits with 1 */
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

void tq_qemu_faults_enable(void) {
    SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18); /* the precise faults get their own message */
}
