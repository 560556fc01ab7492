/* Fault reporting of the firmwares that run under qemu-system-arm (mps2-an386, mps3-an547): through Arm
 * semihosting (QEMU runs with -semihosting-config enable=on,target=native), a fault prints
 * "tsptq <board>: <fault> at pc 0x... cfsr 0x..." on QEMU's stderr and exits QEMU with status 1, so the host sees the
 * link close at once with the reason, instead of a board that silently stops answering. */
#ifndef TQ_QEMU_FAULT_H
#define TQ_QEMU_FAULT_H

#include <stdint.h>

extern const char tq_board_name[]; /* the board's, in its board.c */

/* The vector table's fault entries (each reports its fault and the faulting pc). */
void NMI_Handler(void);
void HardFault_Handler(void);
void MemManage_Handler(void);
void BusFault_Handler(void);
void UsageFault_Handler(void);
void Default_Handler(void);
/* Enable the MemManage, BusFault and UsageFault exceptions (each gets its own message, not a HardFault). */
void tq_qemu_faults_enable(void);

/* Arm semihosting, for these firmwares and the bare-metal test and benchmark programs QEMU runs: operation `op`
 * (SYS_OPEN 0x01, SYS_CLOSE 0x02, SYS_WRITE0 0x04, SYS_READ 0x06, SYS_FLEN 0x0C, SYS_EXIT 0x18) on its argument. */
int tq_semihost(int op, const void *arg);
/* SYS_WRITE0: a NUL-terminated text to QEMU's stderr. */
void tq_semihost_write0(const char *text);
/* SYS_EXIT: QEMU exits with 0 for 0x20026 (ADP_Stopped_ApplicationExit), with 1 for 0x20023 (RunTimeErrorUnknown). */
void tq_semihost_exit(uint32_t reason) __attribute__((noreturn));

#endif
