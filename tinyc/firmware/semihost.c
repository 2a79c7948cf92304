/* Arm semihosting calls (see semihost.h). On M-profile cores a semihosting
 * request is `bkpt 0xAB` with the operation in r0 and a pointer to its argument
 * block in r1; the result comes back in r0. Thumb-1 safe (ARMv6-M). */
#include "semihost.h"

#define SYS_OPEN 0x01
#define SYS_CLOSE 0x02
#define SYS_WRITE0 0x04
#define SYS_WRITE 0x05
#define SYS_READ 0x06
#define SYS_SEEK 0x0A
#define SYS_FLEN 0x0C
#define SYS_EXIT 0x18
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

static int sh_call(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static uint32_t sh_strlen(const char *s)
{
    uint32_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    return n;
}

static int sh_mode(const char *mode)
{
    /* Semihosting numbers the fopen() modes in this order. */
    static const char *const modes[12] = {"r", "rb", "r+", "r+b", "w", "wb", "w+", "w+b", "a", "ab", "a+", "a+b"};
    int i;
    for (i = 0; i < 12; i++) {
        const char *a = modes[i];
        const char *b = mode;
        while (*a != '\0' && *a == *b) {
            a++;
            b++;
        }
        if (*a == '\0' && *b == '\0') {
            return i;
        }
    }
    if (mode[0] == 'r' && mode[1] == 'b' && mode[2] == '+' && mode[3] == '\0') {
        return 3;
    }
    if (mode[0] == 'w' && mode[1] == 'b' && mode[2] == '+' && mode[3] == '\0') {
        return 7;
    }
    if (mode[0] == 'a' && mode[1] == 'b' && mode[2] == '+' && mode[3] == '\0') {
        return 11;
    }
    return -1;
}

int tinyc_sh_open(const char *path, const char *mode)
{
    uint32_t args[3];
    int m = sh_mode(mode);
    if (m < 0) {
        return -1;
    }
    args[0] = (uint32_t)(uintptr_t)path;
    args[1] = (uint32_t)m;
    args[2] = sh_strlen(path);
    return sh_call(SYS_OPEN, args);
}

int tinyc_sh_read(int handle, void *buf, uint32_t len)
{
    uint32_t args[3];
    args[0] = (uint32_t)handle;
    args[1] = (uint32_t)(uintptr_t)buf;
    args[2] = len;
    return sh_call(SYS_READ, args);
}

int tinyc_sh_write(int handle, const void *buf, uint32_t len)
{
    uint32_t args[3];
    args[0] = (uint32_t)handle;
    args[1] = (uint32_t)(uintptr_t)buf;
    args[2] = len;
    return sh_call(SYS_WRITE, args);
}

int tinyc_sh_seek(int handle, uint32_t position)
{
    uint32_t args[2];
    args[0] = (uint32_t)handle;
    args[1] = position;
    return sh_call(SYS_SEEK, args);
}

int tinyc_sh_close(int handle)
{
    uint32_t args[1];
    args[0] = (uint32_t)handle;
    return sh_call(SYS_CLOSE, args);
}

int tinyc_sh_flen(int handle)
{
    uint32_t args[1];
    args[0] = (uint32_t)handle;
    return sh_call(SYS_FLEN, args);
}

void tinyc_sh_write0(const char *s)
{
    (void)sh_call(SYS_WRITE0, s);
}

void tinyc_sh_exit(int code)
{
    uint32_t args[2];
    args[0] = ADP_STOPPED_APPLICATION_EXIT;
    args[1] = (uint32_t)code;
    (void)sh_call(SYS_EXIT_EXTENDED, args);
    /* A debugger without SYS_EXIT_EXTENDED: fall back to plain SYS_EXIT
     * (0 or 1 survive), then stop here. */
    (void)sh_call(SYS_EXIT, (const void *)(uintptr_t)(code == 0 ? ADP_STOPPED_APPLICATION_EXIT : 0x20024));
    for (;;) {
    }
}
