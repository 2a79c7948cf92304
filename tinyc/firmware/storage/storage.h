/* tinyc storage ports: where a board keeps the persisted training state
 * (tinyc/persist.h).  tinyc copies one implementation into a training
 * firmware project: storage_semihost.c on the QEMU stand-ins (a host file),
 * storage_stm32.c on STM32F4 / F7 (the last sectors of the internal flash,
 * programmed through the flash controller's registers).  To keep the state
 * elsewhere (an external SPI flash, an EEPROM), replace that file with one
 * that defines tinyc_storage_open for it. */
#ifndef TINYC_STORAGE_H
#define TINYC_STORAGE_H

#include <stdint.h>

#include "tinyc/persist.h"

/* Fills s for two slots of at least slot_size bytes each.  Returns 0, or -1
 * when the storage is missing or too small. */
int tinyc_storage_open(tinyc_storage *s, uint32_t slot_size);

#endif /* TINYC_STORAGE_H */
