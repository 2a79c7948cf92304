/* Startup code for tinyc firmware on Cortex-M (ARMv6-M, ARMv7-M, ARMv7E-M,
 * ARMv8-M mainline, ARMv8.1-M): the vector table, Reset_Handler, a fault
 * handler that reports and exits through semihosting, stack painting and
 * tinyc_stack_used(), and fallback mem* functions (the build links -nostdlib).
 *
 * Exit codes of the fault handler: 128 + the exception number, e.g.
 *   NMI 130, HardFault 131, MemManage 132, BusFault 133, UsageFault 134,
 *   SecureFault 135, SVCall 139, DebugMonitor 140, PendSV 142, SysTick 143,
 *   external interrupts 144 + n (255 at most);
 * with one line on the semihosting console (QEMU's stderr) naming the
 * exception and the stacked PC. Only Thumb-1 instructions are used outside
 * the FPU/ARMv8-M blocks, so the same file builds for cortex-m0plus. */
#include <stddef.h>
#include <stdint.h>

#include "semihost.h"

extern uint32_t _sidata; /* load address of .data in flash */
extern uint32_t _sdata;
extern uint32_t _edata;
extern uint32_t _sbss;
extern uint32_t _ebss;
extern uint32_t _sstack; /* lowest address of the stack region */
extern uint32_t _estack; /* initial stack pointer: top of the stack region */

int main(void);
void Reset_Handler(void) __attribute__((noreturn));
void Default_Handler(void) __attribute__((naked, noreturn));
void tinyc_fault(const uint32_t *frame, uint32_t exception) __attribute__((noreturn, used));
uint32_t tinyc_stack_used(void);

#if defined(__ARM_ARCH_8M_MAIN__) || defined(__ARM_ARCH_8_1M_MAIN__)
#define TINYC_HAS_MSPLIM 1
#define TINYC_SHCSR_FAULTS (0xFu << 16) /* MEMFAULTENA, BUSFAULTENA, USGFAULTENA, SECUREFAULTENA */
#else
#define TINYC_HAS_MSPLIM 0
#define TINYC_SHCSR_FAULTS (0x7u << 16) /* MEMFAULTENA, BUSFAULTENA, USGFAULTENA */
#endif
#if TINYC_HAS_MSPLIM || defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__)
#define TINYC_HAS_CONFIGURABLE_FAULTS 1
#else
#define TINYC_HAS_CONFIGURABLE_FAULTS 0 /* ARMv6-M, ARMv8-M baseline: HardFault only */
#endif

#define TINYC_STACK_PATTERN 0xA5A5A5A5u
#define TINYC_IRQ_VECTORS 128u
#define TINYC_DH4 Default_Handler, Default_Handler, Default_Handler, Default_Handler
#define TINYC_DH32 TINYC_DH4, TINYC_DH4, TINYC_DH4, TINYC_DH4, TINYC_DH4, TINYC_DH4, TINYC_DH4, TINYC_DH4

typedef void (*tinyc_vector_t)(void);

/* Initial SP, 15 system exception vectors, then external interrupts. Every
 * handler but reset goes to Default_Handler. */
__attribute__((section(".isr_vector"), used)) const tinyc_vector_t tinyc_vectors[16 + TINYC_IRQ_VECTORS] = {
    (tinyc_vector_t)(uintptr_t)&_estack,
    Reset_Handler,
    Default_Handler, /* NMI */
    Default_Handler, /* HardFault */
    Default_Handler, /* MemManage */
    Default_Handler, /* BusFault */
    Default_Handler, /* UsageFault */
    Default_Handler, /* SecureFault (ARMv8-M), else reserved */
    0,
    0,
    0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,
    Default_Handler, /* PendSV */
    Default_Handler, /* SysTick */
    TINYC_DH32, TINYC_DH32, TINYC_DH32, TINYC_DH32, /* TINYC_IRQ_VECTORS external interrupts */
};

/* Copy and fill loops written with a compiler barrier in the body so that gcc
 * does not turn them into calls of memcpy / memset (which they implement).
 * Inlined, so that painting the stack below the SP touches no live frame. */
static inline __attribute__((always_inline)) void copy_words(uint32_t *dst, const uint32_t *src, const uint32_t *end)
{
    while (dst < end) {
        *dst++ = *src++;
        __asm__ volatile("" ::: "memory");
    }
}

static inline __attribute__((always_inline)) void fill_words(uint32_t *dst, const uint32_t *end, uint32_t value)
{
    while (dst < end) {
        *dst++ = value;
        __asm__ volatile("" ::: "memory");
    }
}

void Reset_Handler(void)
{
    uint32_t sp;
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    /* Full access to CP10 and CP11 (FPU, and MVE on ARMv8.1-M) before any
     * floating-point or vector instruction runs. */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    copy_words(&_sdata, &_sidata, &_edata);
    fill_words(&_sbss, &_ebss, 0u);
    /* Paint the stack from its bottom up to the current SP (Reset_Handler's
     * frame is above it; nothing else runs meanwhile). */
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    fill_words(&_sstack, (uint32_t *)(sp & ~3u), TINYC_STACK_PATTERN);
#if TINYC_HAS_CONFIGURABLE_FAULTS
    /* Report MemManage, BusFault and UsageFault (and SecureFault) as
     * themselves rather than escalated to HardFault. */
    *(volatile uint32_t *)0xE000ED24u |= TINYC_SHCSR_FAULTS;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
#if TINYC_HAS_MSPLIM
    /* ARMv8-M mainline checks the stack limit in hardware: overflowing the
     * stack region raises a UsageFault (exit 134) instead of corrupting .bss. */
    __asm__ volatile("msr msplim, %0" : : "r"(&_sstack) : "memory");
#endif
    tinyc_sh_exit(main());
}

/* The deepest stack use so far, in bytes from the top of the stack (Reset_Handler's
 * own frame included): the distance from _estack down to the lowest word that
 * no longer holds the paint pattern. A word the code wrote with the pattern
 * itself goes unnoticed (4 bytes at worst, at the deepest point); the stack
 * region's size means the stack overflowed it (or came very close). */
uint32_t tinyc_stack_used(void)
{
    const volatile uint32_t *p = (const volatile uint32_t *)&_sstack;
    const uint32_t *top = &_estack;
    while ((const uint32_t *)p < top && *p == TINYC_STACK_PATTERN) {
        p++;
    }
    return (uint32_t)((uintptr_t)top - (uintptr_t)p);
}

static char *put_str(char *out, const char *s)
{
    while (*s != '\0') {
        *out++ = *s++;
    }
    return out;
}

static char *put_uint(char *out, uint32_t v)
{
    char tmp[10];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    while (n > 0) {
        *out++ = tmp[--n];
    }
    return out;
}

static char *put_hex(char *out, uint32_t v)
{
    int shift;
    *out++ = '0';
    *out++ = 'x';
    for (shift = 28; shift >= 0; shift -= 4) {
        *out++ = "0123456789abcdef"[(v >> shift) & 0xFu];
    }
    return out;
}

void tinyc_fault(const uint32_t *frame, uint32_t exception)
{
    static const char *const names[16] = {
        "thread", "reset", "NMI", "HardFault", "MemManage", "BusFault", "UsageFault", "SecureFault",
        "reserved", "reserved", "reserved", "SVCall", "DebugMonitor", "reserved", "PendSV", "SysTick",
    };
    char line[96];
    char *out = put_str(line, "tinyc: ");
    uint32_t code;
    exception &= 0x1FFu; /* IPSR's exception number field */
    code = 128u + exception;
    if (exception < 16u) {
        out = put_str(out, names[exception]);
    } else {
        out = put_str(out, "IRQ ");
        out = put_uint(out, exception - 16u);
    }
    out = put_str(out, " (exception ");
    out = put_uint(out, exception);
    out = put_str(out, ") at pc ");
    out = put_hex(out, frame[6]);
    out = put_str(out, "\n");
    *out = '\0';
    tinyc_sh_write0(line);
    tinyc_sh_exit((int)(code > 255u ? 255u : code));
}

/* Passes the exception frame (on the main stack: the firmware never uses the
 * process stack) and the exception number from IPSR to tinyc_fault. On
 * ARMv8-M the stack limit is lifted first: after a stack overflow the handler
 * itself runs below it. */
void Default_Handler(void)
{
    __asm__ volatile(
#if TINYC_HAS_MSPLIM
        "movs r0, #0\n\t"
        "msr msplim, r0\n\t"
#endif
        "mov r0, sp\n\t"
        "mrs r1, ipsr\n\t"
        "bl tinyc_fault\n\t");
}

typedef uint32_t tinyc_word_alias_t __attribute__((may_alias));

/* Fallbacks for the few libc functions gcc may call even with -ffreestanding
 * (structure copies, large initializers). Weak: a libc's versions win. */
__attribute__((weak)) void *memcpy(void *dst, const void *src, size_t n)
{
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0u) {
        while (n >= 4u) {
            *(tinyc_word_alias_t *)(void *)d = *(const tinyc_word_alias_t *)(const void *)s;
            d += 4;
            s += 4;
            n -= 4u;
            __asm__ volatile("" ::: "memory");
        }
    }
    while (n-- != 0u) {
        *d++ = *s++;
        __asm__ volatile("" ::: "memory");
    }
    return dst;
}

__attribute__((weak)) void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    if (d <= s || d >= s + n) {
        return memcpy(dst, src, n);
    }
    while (n-- != 0u) {
        d[n] = s[n];
        __asm__ volatile("" ::: "memory");
    }
    return dst;
}

__attribute__((weak)) void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = (unsigned char *)dst;
    while (n-- != 0u) {
        *d++ = (unsigned char)c;
        __asm__ volatile("" ::: "memory");
    }
    return dst;
}

__attribute__((weak)) int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = (const unsigned char *)a;
    const unsigned char *y = (const unsigned char *)b;
    size_t i;
    for (i = 0; i < n; i++) {
        if (x[i] != y[i]) {
            return (int)x[i] - (int)y[i];
        }
    }
    return 0;
}
