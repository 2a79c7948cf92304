/* Instruction-count markers (see bench.h). noipa keeps gcc from inlining them,
 * cloning them, merging the two identical bodies or assuming anything about
 * their effects across the call; the memory clobber keeps loads and stores
 * from moving across a marker call. `used` keeps the compiler from dropping
 * them; the linker keeps them when they are called. */
#include "bench.h"

__attribute__((noipa, noinline, used)) void tinyc_bench_begin(void)
{
    __asm__ volatile("" ::: "memory");
}

__attribute__((noipa, noinline, used)) void tinyc_bench_end(void)
{
    __asm__ volatile("" ::: "memory");
}
