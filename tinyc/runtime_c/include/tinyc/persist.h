/* tinyc persistent training state: what on-device training learned, kept in
 * two slots (A and B) of a non-volatile storage so that a power cut at any
 * instant leaves either the previous or the new state, never a mix.
 *
 * A slot is a 32-byte header followed by the payload (the training state, in
 * the pieces the model gives: NAME_train_state_piece).  Header, eight
 * little-endian uint32:
 *   magic "TNYC" (0x43594E54), format version (1), model hash, update-set hash,
 *   sequence number, payload size, payload CRC-32, CRC-32 of the previous 28 bytes.
 * CRC-32 is the IEEE one (reflected, polynomial 0xEDB88320; zlib's crc32).
 *
 * A commit erases the slot that does not hold the newest valid state, writes
 * the payload into it, and writes the header last: until the header's last
 * byte is written the slot is not valid, so the newest valid slot stays the
 * old one.  A boot loads the valid slot of this model and update set with the
 * highest sequence number (compared modulo 2^32), after checking its payload's
 * CRC and before touching the parameters; with none, the parameters stay the
 * model's own (the flash values).  A slot with a bad CRC is reported corrupt
 * and skipped; a valid slot of another model or update set is reported
 * foreign and never loaded.
 *
 * Storage goes through tinyc_storage: read, erase (to 0xFF, whole erase units)
 * and program (bits 1 -> 0 only, as NOR flash does) at offsets from the start
 * of the region that holds both slots (slot A at 0, slot B at slot_size). */
#ifndef TINYC_PERSIST_H
#define TINYC_PERSIST_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TINYC_PERSIST_MAGIC 0x43594E54u
#define TINYC_PERSIST_VERSION 1u
#define TINYC_PERSIST_HEADER_BYTES 32u

typedef struct tinyc_storage {
    /* Each returns 0 on success, nonzero on failure. */
    int (*read)(void *ctx, uint32_t offset, void *dst, uint32_t size);
    int (*erase)(void *ctx, uint32_t offset, uint32_t size);
    int (*program)(void *ctx, uint32_t offset, const void *src, uint32_t size);
    void *ctx;
    uint32_t slot_size; /* bytes per slot: the header and the payload fit, a multiple of the erase unit */
} tinyc_storage;

/* The k-th piece of the state (k = 0, 1, ...): sets *data to its bytes in
 * SRAM and returns their count; 0 past the last piece. */
typedef uint32_t (*tinyc_state_pieces)(uint32_t k, uint8_t **data);

/* What a slot holds. */
enum {
    TINYC_SLOT_EMPTY = 0,   /* no header (erased, or never written) */
    TINYC_SLOT_CORRUPT = 1, /* a header or payload whose CRC does not match */
    TINYC_SLOT_FOREIGN = 2, /* valid, but another model, update set or size */
    TINYC_SLOT_VALID = 3,   /* valid, this model and update set */
};

typedef struct tinyc_persist_info {
    int32_t status[2];   /* TINYC_SLOT_* of slots A and B */
    uint32_t sequence[2]; /* their sequence numbers (headers whose CRC matches) */
    int32_t slot;        /* the slot loaded / written: 0 (A), 1 (B), or -1 */
} tinyc_persist_info;

/* Reads both slots' state into info.  Returns the newest valid slot, or -1. */
int tinyc_persist_scan(const tinyc_storage *s, uint32_t model_hash, uint32_t spec_hash, uint32_t size,
                       tinyc_persist_info *info);

/* Loads the newest valid slot into the pieces (after checking it).  Returns the
 * slot loaded (0 or 1), -1 when no slot is valid (nothing changed), -2 on a
 * storage error. */
int tinyc_persist_load(const tinyc_storage *s, uint32_t model_hash, uint32_t spec_hash, uint32_t size,
                       tinyc_state_pieces pieces, tinyc_persist_info *info);

/* Writes the pieces' current bytes (size in all) as the new newest state, into
 * the other slot than the newest valid one.  Returns the slot written, or -2
 * on a storage error (or a read-back that differs): the previous state stays. */
int tinyc_persist_commit(const tinyc_storage *s, uint32_t model_hash, uint32_t spec_hash, uint32_t size,
                         tinyc_state_pieces pieces, tinyc_persist_info *info);

/* CRC-32 (IEEE) of size bytes, continuing from crc (start with 0). */
uint32_t tinyc_crc32(uint32_t crc, const void *data, uint32_t size);

#ifdef __cplusplus
}
#endif

#endif /* TINYC_PERSIST_H */
