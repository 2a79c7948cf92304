/* Private: the wide weight layout of tinyc_conv2d_wide_s8 and
 * tinyc_fully_connected_wide_s8 (tinyc/kernels/conv.py widen).
 *
 * Weights [N][K] as int16 pairs in int32 words: per output channel pair
 * (2j, 2j + 1), per group of 4 values (4g .. 4g + 3), 4 words: channel 2j's
 * values 4g and 4g + 2 (low half, high half), its 4g + 1 and 4g + 3, then
 * channel 2j + 1's two words.  K is padded to a multiple of 4 and N to a
 * multiple of 2 with zeros.  An SMLAD of a weight word with the matching word
 * of int16 input pairs (even values, odd values) adds two products. */
#ifndef TINYC_WIDE_H
#define TINYC_WIDE_H

#include <stdint.h>

/* Weight (o, i); `groups` = ceil(K / 4). */
static inline int32_t tinyc_wide_weight(const int32_t *w, int32_t groups, int32_t o, int32_t i)
{
    const uint32_t word = (uint32_t)w[((o >> 1) * groups + (i >> 2)) * 4 + 2 * (o & 1) + (i & 1)];
    const uint32_t half = (i & 2) ? word >> 16 : word & 0xFFFFu;
    return (int32_t)(half ^ 0x8000u) - 0x8000;
}

#endif /* TINYC_WIDE_H */
