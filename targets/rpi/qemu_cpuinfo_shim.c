/* LD_PRELOAD shim for the emulated Raspberry Pi userland (tsptq.deploy.pi_userland), emulation only.
 *
 * Under qemu-aarch64 user mode a program reads the HOST's /proc/cpuinfo (x86 here). ARM CPU detection (the cpuinfo
 * library inside LiteRT's XNNPACK and ruy kernels) finds no ARM processor in it and crashes with a NULL dereference
 * (QEMU 7.2; later QEMUs emulate the file). This shim sends every open of /proc/cpuinfo to the file named by
 * $TSPTQ_CPUINFO: a Raspberry Pi 4's (targets/rpi/pi4_cpuinfo.txt). A real Pi needs none of this. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef FILE *(*fopen_fn)(const char *, const char *);

static const char *redirect(const char *path) {
    const char *to = getenv("TSPTQ_CPUINFO");
    return path && to && strcmp(path, "/proc/cpuinfo") == 0 ? to : path;
}

/* the mode argument exists only when the flags create a file */
#define MODE_ARG(flags, mode)                                                   \
    do {                                                                        \
        va_list ap;                                                             \
        va_start(ap, flags);                                                    \
        mode = ((flags) & O_CREAT) || ((flags) & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0; \
        va_end(ap);                                                             \
    } while (0)

int open(const char *path, int flags, ...) {
    static open_fn real;
    mode_t mode;
    MODE_ARG(flags, mode);
    if (!real) real = (open_fn)dlsym(RTLD_NEXT, "open");
    return real(redirect(path), flags, mode);
}

int open64(const char *path, int flags, ...) {
    static open_fn real;
    mode_t mode;
    MODE_ARG(flags, mode);
    if (!real) real = (open_fn)dlsym(RTLD_NEXT, "open64");
    return real(redirect(path), flags, mode);
}

int openat(int dir, const char *path, int flags, ...) {
    static openat_fn real;
    mode_t mode;
    MODE_ARG(flags, mode);
    if (!real) real = (openat_fn)dlsym(RTLD_NEXT, "openat");
    return real(dir, redirect(path), flags, mode);
}

FILE *fopen(const char *path, const char *how) {
    static fopen_fn real;
    if (!real) real = (fopen_fn)dlsym(RTLD_NEXT, "fopen");
    return real(redirect(path), how);
}

FILE *fopen64(const char *path, const char *how) {
    static fopen_fn real;
    if (!real) real = (fopen_fn)dlsym(RTLD_NEXT, "fopen64");
    return real(redirect(path), how);
}
