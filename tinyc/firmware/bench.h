/* Instruction-count markers. The QEMU plugin (tinyc/sim/plugin/insncount.c)
 * finds these two functions by symbol address and counts the guest
 * instructions executed from the first instruction of tinyc_bench_begin up to,
 * but not including, the first instruction of tinyc_bench_end. Call them in
 * pairs around the code to measure; they do nothing else. */
#ifndef TINYC_BENCH_H
#define TINYC_BENCH_H

#include <stdint.h>

void tinyc_bench_begin(void);
void tinyc_bench_end(void);

/* startup.c: the deepest stack use so far, in bytes (stack painting). */
uint32_t tinyc_stack_used(void);

#endif /* TINYC_BENCH_H */
