/* tinyc persistent storage on STM32F4 / STM32F7: the PERSIST region of the
 * linker script (the last sectors of the internal flash, two slots of whole
 * sectors), erased and programmed through the flash controller's registers
 * (RM0090 section 3, RM0385 section 3: FLASH_KEYR, FLASH_SR, FLASH_CR; sector
 * erase with SER / SNB / STRT, byte programming with PG and PSIZE x8, which
 * every supply voltage allows).  Reads are plain loads from the mapped flash.
 *
 * Define TINYC_STM32F7 (tinyc does, for STM32F7 boards) for the F7's sector
 * map; otherwise the F4's.  This file is compiled and size-checked by tinyc's
 * tests but cannot be run here (no QEMU machine models the STM32 flash
 * controller): check a commit on the board before relying on it.  The code
 * runs from the same flash bank it programs: the core stalls during each
 * operation, which is safe because the slots never hold code.  With the F7's
 * caches enabled, invalidate the data cache over the slot after a commit. */
#include "storage.h"

#define FLASH_R 0x40023C00u
#define FLASH_KEYR (*(volatile uint32_t *)(FLASH_R + 0x04u))
#define FLASH_SR (*(volatile uint32_t *)(FLASH_R + 0x0Cu))
#define FLASH_CR (*(volatile uint32_t *)(FLASH_R + 0x10u))
#define KEY1 0x45670123u
#define KEY2 0xCDEF89ABu
#define SR_BSY (1u << 16)
#define SR_ERRORS 0xF2u /* OPERR, WRPERR, PGAERR, PGPERR, PGSERR (F4) / ERSERR (F7) */
#define CR_PG (1u << 0)
#define CR_SER (1u << 1)
#define CR_SNB_SHIFT 3
#define CR_STRT (1u << 16)
#define CR_LOCK (1u << 31)
#define FLASH_START 0x08000000u

extern const uint8_t _persist_start[]; /* the linker script's PERSIST region */
extern const uint8_t _persist_end[];

static uint32_t base;

/* The sector holding flash address a, where it starts and its size (single-bank 1 MB parts). */
static uint32_t sector_of(uint32_t a, uint32_t *start, uint32_t *size)
{
#ifdef TINYC_STM32F7
    static const uint32_t sizes[8] = {0x8000u, 0x8000u, 0x8000u, 0x8000u, 0x20000u, 0x40000u, 0x40000u, 0x40000u};
    const uint32_t count = 8;
#else
    static const uint32_t sizes[12] = {0x4000u, 0x4000u, 0x4000u, 0x4000u, 0x10000u, 0x20000u,
                                       0x20000u, 0x20000u, 0x20000u, 0x20000u, 0x20000u, 0x20000u};
    const uint32_t count = 12;
#endif
    uint32_t k, at = FLASH_START;
    for (k = 0; k + 1 < count && a >= at + sizes[k]; ++k) {
        at += sizes[k];
    }
    *start = at;
    *size = sizes[k];
    return k;
}

static int wait_done(void)
{
    uint32_t sr;
    while ((sr = FLASH_SR) & SR_BSY) {
    }
    FLASH_SR = sr & SR_ERRORS; /* the error flags clear when written 1 */
    return (sr & SR_ERRORS) ? -1 : 0;
}

static void unlock(void)
{
    if (FLASH_CR & CR_LOCK) {
        FLASH_KEYR = KEY1;
        FLASH_KEYR = KEY2;
    }
}

static int flash_read(void *ctx, uint32_t offset, void *dst, uint32_t size)
{
    const uint8_t *src = (const uint8_t *)(base + offset);
    uint8_t *d = (uint8_t *)dst;
    uint32_t i;
    (void)ctx;
    for (i = 0; i < size; ++i) {
        d[i] = src[i];
    }
    return 0;
}

static int flash_erase(void *ctx, uint32_t offset, uint32_t size)
{
    uint32_t a = base + offset, start, length;
    int fail = 0;
    (void)ctx;
    unlock();
    while (!fail && a < base + offset + size) { /* every sector the range touches */
        const uint32_t sector = sector_of(a, &start, &length);
        (void)wait_done();
        FLASH_CR = CR_SER | (sector << CR_SNB_SHIFT);
        FLASH_CR = CR_SER | (sector << CR_SNB_SHIFT) | CR_STRT;
        fail = wait_done();
        a = start + length;
    }
    FLASH_CR = CR_LOCK;
    return fail;
}

static int flash_program(void *ctx, uint32_t offset, const void *src, uint32_t size)
{
    volatile uint8_t *dst = (volatile uint8_t *)(base + offset);
    const uint8_t *s = (const uint8_t *)src;
    uint32_t i;
    int fail = 0;
    (void)ctx;
    unlock();
    (void)wait_done();
    FLASH_CR = CR_PG; /* PSIZE = 0: x8 */
    for (i = 0; i < size && !fail; ++i) {
        dst[i] = s[i];
        __asm__ volatile("dsb" ::: "memory");
        fail = wait_done();
    }
    FLASH_CR = CR_LOCK;
    return fail;
}

int tinyc_storage_open(tinyc_storage *s, uint32_t slot_size)
{
    const uint32_t region = (uint32_t)(_persist_end - _persist_start);
    if (region / 2u < slot_size) {
        return -1;
    }
    base = (uint32_t)_persist_start;
    s->read = flash_read;
    s->erase = flash_erase;
    s->program = flash_program;
    s->ctx = 0;
    s->slot_size = region / 2u;
    return 0;
}
