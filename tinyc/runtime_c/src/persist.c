/* Two-slot persistence of the training state: see tinyc/persist.h. */
#include "tinyc/persist.h"

#define CHUNK 64u /* bytes read at a time while checking a payload (stack) */

uint32_t tinyc_crc32(uint32_t crc, const void *data, uint32_t size)
{
    const uint8_t *p = (const uint8_t *)data;
    uint32_t i;
    int b;
    crc = ~crc;
    for (i = 0; i < size; ++i) {
        crc ^= p[i];
        for (b = 0; b < 8; ++b) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* The CRC of a slot's stored payload; 0 on success. */
static int stored_crc(const tinyc_storage *s, uint32_t base, uint32_t size, uint32_t *crc)
{
    uint8_t buf[CHUNK];
    uint32_t at = 0, c = 0;
    while (at < size) {
        const uint32_t n = size - at < CHUNK ? size - at : CHUNK;
        if (s->read(s->ctx, base + TINYC_PERSIST_HEADER_BYTES + at, buf, n) != 0) {
            return -1;
        }
        c = tinyc_crc32(c, buf, n);
        at += n;
    }
    *crc = c;
    return 0;
}

/* A slot's status (TINYC_SLOT_*), its sequence number and payload CRC; -1 on a storage error. */
static int slot_status(const tinyc_storage *s, int slot, uint32_t model_hash, uint32_t spec_hash, uint32_t size,
                       uint32_t *sequence)
{
    uint8_t h[TINYC_PERSIST_HEADER_BYTES];
    const uint32_t base = (uint32_t)slot * s->slot_size;
    uint32_t crc;
    *sequence = 0;
    if (s->read(s->ctx, base, h, sizeof h) != 0) {
        return -1;
    }
    if (get32(h) != TINYC_PERSIST_MAGIC) {
        return TINYC_SLOT_EMPTY;
    }
    if (tinyc_crc32(0, h, 28) != get32(h + 28) || get32(h + 4) != TINYC_PERSIST_VERSION ||
        get32(h + 20) > s->slot_size - TINYC_PERSIST_HEADER_BYTES) {
        return TINYC_SLOT_CORRUPT;
    }
    *sequence = get32(h + 16);
    if (stored_crc(s, base, get32(h + 20), &crc) != 0) {
        return -1;
    }
    if (crc != get32(h + 24)) {
        return TINYC_SLOT_CORRUPT;
    }
    if (get32(h + 8) != model_hash || get32(h + 12) != spec_hash || get32(h + 20) != size) {
        return TINYC_SLOT_FOREIGN;
    }
    return TINYC_SLOT_VALID;
}

/* a is newer than b (sequence numbers modulo 2^32) */
static int newer(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) > 0;
}

int tinyc_persist_scan(const tinyc_storage *s, uint32_t model_hash, uint32_t spec_hash, uint32_t size,
                       tinyc_persist_info *info)
{
    int k, best = -1;
    for (k = 0; k < 2; ++k) {
        info->status[k] = slot_status(s, k, model_hash, spec_hash, size, &info->sequence[k]);
        if (info->status[k] == TINYC_SLOT_VALID && (best < 0 || newer(info->sequence[k], info->sequence[best]))) {
            best = k;
        }
    }
    info->slot = best;
    return best;
}

int tinyc_persist_load(const tinyc_storage *s, uint32_t model_hash, uint32_t spec_hash, uint32_t size,
                       tinyc_state_pieces pieces, tinyc_persist_info *info)
{
    uint32_t k, n, at = TINYC_PERSIST_HEADER_BYTES;
    uint8_t *data;
    const int slot = tinyc_persist_scan(s, model_hash, spec_hash, size, info);
    if (info->status[0] < 0 || info->status[1] < 0) {
        return -2;
    }
    if (slot < 0) {
        return -1;
    }
    for (k = 0; (n = pieces(k, &data)) != 0; ++k) {
        if (s->read(s->ctx, (uint32_t)slot * s->slot_size + at, data, n) != 0) {
            return -2;
        }
        at += n;
    }
    return slot;
}

int tinyc_persist_commit(const tinyc_storage *s, uint32_t model_hash, uint32_t spec_hash, uint32_t size,
                         tinyc_state_pieces pieces, tinyc_persist_info *info)
{
    uint8_t h[TINYC_PERSIST_HEADER_BYTES];
    uint32_t k, n, crc = 0, at = TINYC_PERSIST_HEADER_BYTES, check;
    uint8_t *data;
    const int newest = tinyc_persist_scan(s, model_hash, spec_hash, size, info);
    const int slot = newest == 0 ? 1 : 0;
    const uint32_t base = (uint32_t)slot * s->slot_size;
    if (info->status[0] < 0 || info->status[1] < 0 || size > s->slot_size - TINYC_PERSIST_HEADER_BYTES) {
        return -2;
    }
    if (s->erase(s->ctx, base, s->slot_size) != 0) {
        return -2;
    }
    for (k = 0; (n = pieces(k, &data)) != 0; ++k) {
        if (s->program(s->ctx, base + at, data, n) != 0) {
            return -2;
        }
        crc = tinyc_crc32(crc, data, n);
        at += n;
    }
    if (at - TINYC_PERSIST_HEADER_BYTES != size || stored_crc(s, base, size, &check) != 0 || check != crc) {
        return -2;
    }
    put32(h, TINYC_PERSIST_MAGIC);
    put32(h + 4, TINYC_PERSIST_VERSION);
    put32(h + 8, model_hash);
    put32(h + 12, spec_hash);
    put32(h + 16, newest < 0 ? 1u : info->sequence[newest] + 1u);
    put32(h + 20, size);
    put32(h + 24, crc);
    put32(h + 28, tinyc_crc32(0, h, 28));
    /* the header last, its magic word last of all: the slot turns valid only
     * when every other byte is in place */
    if (s->program(s->ctx, base + 4, h + 4, TINYC_PERSIST_HEADER_BYTES - 4) != 0 ||
        s->program(s->ctx, base, h, 4) != 0) {
        return -2;
    }
    info->status[slot] = TINYC_SLOT_VALID;
    info->sequence[slot] = get32(h + 16);
    info->slot = slot;
    return slot;
}
