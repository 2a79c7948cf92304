/* tinyc persistent storage on a QEMU stand-in: a host file, persist.bin in
 * the emulator's working directory, through semihosting, that behaves as NOR
 * flash does: erase sets bytes to 0xFF, programming only clears bits (the new
 * byte is the old AND the written one).  The file is created erased on first
 * use.  A power cut (the emulator stopped) leaves every write the firmware
 * finished and none it had not started. */
#include "storage.h"

#include "semihost.h"

#define CHUNK 64u

typedef struct {
    int handle;
    uint32_t size;
} sh_flash;

static sh_flash flash = {-1, 0};

static int seek_to(uint32_t offset)
{
    return tinyc_sh_seek(flash.handle, offset) == 0 ? 0 : -1;
}

static int sh_read(void *ctx, uint32_t offset, void *dst, uint32_t size)
{
    (void)ctx;
    if (offset + size > flash.size || seek_to(offset) != 0) {
        return -1;
    }
    return tinyc_sh_read(flash.handle, dst, size) == 0 ? 0 : -1;
}

static int sh_erase(void *ctx, uint32_t offset, uint32_t size)
{
    uint8_t ff[CHUNK];
    uint32_t i;
    (void)ctx;
    for (i = 0; i < CHUNK; ++i) {
        ff[i] = 0xFF;
    }
    if (offset + size > flash.size || seek_to(offset) != 0) {
        return -1;
    }
    while (size != 0) {
        const uint32_t n = size < CHUNK ? size : CHUNK;
        if (tinyc_sh_write(flash.handle, ff, n) != 0) {
            return -1;
        }
        size -= n;
    }
    return 0;
}

static int sh_program(void *ctx, uint32_t offset, const void *src, uint32_t size)
{
    uint8_t buf[CHUNK];
    const uint8_t *s = (const uint8_t *)src;
    uint32_t i;
    (void)ctx;
    if (offset + size > flash.size) {
        return -1;
    }
    while (size != 0) {
        const uint32_t n = size < CHUNK ? size : CHUNK;
        if (seek_to(offset) != 0 || tinyc_sh_read(flash.handle, buf, n) != 0) {
            return -1;
        }
        for (i = 0; i < n; ++i) {
            buf[i] &= s[i];
        }
        if (seek_to(offset) != 0 || tinyc_sh_write(flash.handle, buf, n) != 0) {
            return -1;
        }
        offset += n;
        s += n;
        size -= n;
    }
    return 0;
}

int tinyc_storage_open(tinyc_storage *s, uint32_t slot_size)
{
    flash.size = 2u * slot_size;
    flash.handle = tinyc_sh_open("persist.bin", "r+b");
    if (flash.handle < 0) {
        flash.handle = tinyc_sh_open("persist.bin", "w+b");
        if (flash.handle < 0 || sh_erase(0, 0, flash.size) != 0) {
            return -1;
        }
    } else if ((uint32_t)tinyc_sh_flen(flash.handle) < flash.size) {
        /* a shorter file (another model's): the missing bytes read as erased */
        const uint32_t have = (uint32_t)tinyc_sh_flen(flash.handle);
        if (sh_erase(0, have, flash.size - have) != 0) {
            return -1;
        }
    }
    s->read = sh_read;
    s->erase = sh_erase;
    s->program = sh_program;
    s->ctx = &flash;
    s->slot_size = slot_size;
    return 0;
}
