/* Arm semihosting for tinyc firmware: file I/O and exit through the debugger
 * (QEMU with -semihosting-config enable=on,target=native). No libc needed.
 *
 * Return values follow the semihosting calls themselves:
 *   tinyc_sh_open   a handle >= 0, or -1;
 *   tinyc_sh_read   the number of bytes NOT read (0: all read; len: end of file);
 *   tinyc_sh_write  the number of bytes NOT written (0: all written);
 *   tinyc_sh_seek   0, or a negative value (position: bytes from the start);
 *   tinyc_sh_close  0, or -1;
 *   tinyc_sh_flen   the file's length in bytes, or -1.
 * Paths are relative to the emulator's working directory. */
#ifndef TINYC_SEMIHOST_H
#define TINYC_SEMIHOST_H

#include <stdint.h>

#define TINYC_SH_STDOUT_PATH ":tt"

/* mode: an fopen() mode string: "r", "rb", "r+", "r+b", "w", "wb", "w+", "w+b",
 * "a", "ab", "a+", "a+b". */
int tinyc_sh_open(const char *path, const char *mode);
int tinyc_sh_read(int handle, void *buf, uint32_t len);
int tinyc_sh_write(int handle, const void *buf, uint32_t len);
int tinyc_sh_seek(int handle, uint32_t position);
int tinyc_sh_close(int handle);
int tinyc_sh_flen(int handle);
/* Writes a NUL-terminated string to the debug console (QEMU: its stderr). */
void tinyc_sh_write0(const char *s);
/* Ends the program; QEMU exits with status code & 0xFF (SYS_EXIT_EXTENDED). */
void tinyc_sh_exit(int code) __attribute__((noreturn));

#endif /* TINYC_SEMIHOST_H */
