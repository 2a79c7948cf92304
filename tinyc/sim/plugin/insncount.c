/*
 * tinyc instruction counter: a QEMU TCG plugin (plugin API version 1, as in
 * QEMU 7.2) that counts the guest instructions executed between two marker
 * functions of a tinyc firmware.
 *
 * Usage:
 *   qemu-system-arm ... -icount shift=0 \
 *       -plugin insncount.so,begin=0xADDR,end=0xADDR[,mode=insn|tb] -d plugin -D log.txt
 * with ADDR the addresses of tinyc_bench_begin and tinyc_bench_end (Thumb bit
 * clear). For every execution of the begin marker followed by the end marker
 * it prints one line "tinyc-insns N" (through qemu_plugin_outs, i.e. to the -D
 * log); at exit it prints "tinyc-pairs K" (K lines were printed).
 *
 * What N counts: the guest instructions executed from the first instruction
 * of tinyc_bench_begin (included) up to the first instruction of
 * tinyc_bench_end (excluded). For a call sequence
 *     bl tinyc_bench_begin ; <code> ; bl tinyc_bench_end
 * that is the begin marker's body (`bx lr`: 1 instruction), <code>, and the
 * `bl` that calls the end marker (plus whatever moves arguments around it).
 * Every instruction counts 1, whatever it does (a taken conditional, an
 * instruction whose condition fails in an IT block, a load, a MAC, an FPU or
 * MVE instruction alike); instructions of exception handlers that run in
 * between count too. A begin with no end before the next begin restarts the
 * measurement; an end without a begin is ignored.
 *
 * Power cuts (tinyc's persistence tests): with limit=N the emulator stops
 * dead, as if the power failed, at the start of the first translation block
 * that begins once N or more instructions have run since reset (it prints
 * "tinyc-cut N'" with the count reached and exits with status 0); with at=1
 * every begin marker also prints "tinyc-at N": the instructions run since
 * reset before it (to place such cuts).
 *
 * Modes:
 *   insn (default)  an inline counter add before every instruction: exact
 *                   even when a translation block stops half-way (a fault).
 *   tb              one inline add of the block's length per translation
 *                   block, the markers' positions inside their block
 *                   subtracted: the same numbers whenever blocks run to their
 *                   end (always, in code that does not fault), and faster.
 * The counts do not depend on the host or its load: QEMU runs the guest with
 * -icount on one vCPU, and the code between the markers touches no device.
 *
 * Debian ships QEMU with plugin support but without qemu-plugin.h, so the few
 * declarations used here are written out below; they match QEMU 7.2's
 * include/qemu/qemu-plugin.h (QEMU_PLUGIN_VERSION 1).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))

/* ---- from QEMU 7.2's qemu-plugin.h (API version 1) ---- */
typedef uint64_t qemu_plugin_id_t;

typedef struct qemu_info_t {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;

struct qemu_plugin_tb;
struct qemu_plugin_insn;

enum qemu_plugin_cb_flags {
    QEMU_PLUGIN_CB_NO_REGS,
    QEMU_PLUGIN_CB_R_REGS,
    QEMU_PLUGIN_CB_RW_REGS,
};

enum qemu_plugin_op {
    QEMU_PLUGIN_INLINE_ADD_U64,
};

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op, void *ptr,
                                                uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);
/* ---- end of the QEMU declarations ---- */

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

/* One vCPU runs at a time under -icount, so plain variables are enough. */
static uint64_t executed;    /* instructions executed so far (see the modes) */
static uint64_t begin_addr;
static uint64_t end_addr;
static bool per_tb;
static bool in_pair;
static uint64_t begin_count; /* instructions before the begin marker's first one */
static uint64_t pairs;
static uint64_t limit;       /* 0: none */
static bool print_at;

/* The instructions executed before the marker instruction that is running
 * now. In insn mode the userdata is 0: the inline add of this very
 * instruction may run before or after this callback, but it does so the same
 * way at both markers, so the difference is the same. In tb mode the block's
 * inline add already counted the marker and the rest of its block: userdata
 * holds how many instructions that is. */
static uint64_t before_marker(void *userdata)
{
    return executed - (uint64_t)(uintptr_t)userdata;
}

static void on_begin(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    begin_count = before_marker(userdata);
    in_pair = true;
    if (print_at) {
        char line[64];
        snprintf(line, sizeof line, "tinyc-at %" PRIu64 "\n", begin_count);
        qemu_plugin_outs(line);
    }
}

static void on_tb_start(unsigned int vcpu_index, void *userdata)
{
    char line[64];
    (void)vcpu_index;
    (void)userdata;
    if (executed >= limit) {
        snprintf(line, sizeof line, "tinyc-cut %" PRIu64 "\n", executed);
        qemu_plugin_outs(line);
        fflush(NULL);
        _exit(0); /* no clean-up: a power cut */
    }
}

static void on_end(unsigned int vcpu_index, void *userdata)
{
    char line[64];
    (void)vcpu_index;
    if (!in_pair) {
        return;
    }
    in_pair = false;
    pairs++;
    snprintf(line, sizeof line, "tinyc-insns %" PRIu64 "\n", before_marker(userdata) - begin_count);
    qemu_plugin_outs(line);
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    size_t i;
    (void)id;
    if (limit != 0) {
        /* registered before the block's inline add: it sees the count before the block */
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_start, QEMU_PLUGIN_CB_NO_REGS, NULL);
    }
    if (per_tb) {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, n);
    }
    for (i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t vaddr = qemu_plugin_insn_vaddr(insn);
        void *rest = (void *)(uintptr_t)(per_tb ? n - i : 0);
        if (!per_tb) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &executed, 1);
        }
        if (vaddr == begin_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_begin, QEMU_PLUGIN_CB_NO_REGS, rest);
        } else if (vaddr == end_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_end, QEMU_PLUGIN_CB_NO_REGS, rest);
        }
    }
}

static void on_atexit(qemu_plugin_id_t id, void *userdata)
{
    char line[64];
    (void)id;
    (void)userdata;
    snprintf(line, sizeof line, "tinyc-pairs %" PRIu64 "\n", pairs);
    qemu_plugin_outs(line);
}

static bool parse_addr(const char *text, uint64_t *out)
{
    char *stop = NULL;
    unsigned long long v;
    if (*text == '\0') {
        return false;
    }
    v = strtoull(text, &stop, 0);
    if (stop == NULL || *stop != '\0') {
        return false;
    }
    *out = (uint64_t)v & ~(uint64_t)1; /* a Thumb function address: bit 0 set */
    return true;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    bool have_begin = false;
    bool have_end = false;
    int i;
    (void)info;
    for (i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "begin=", 6) == 0) {
            have_begin = parse_addr(arg + 6, &begin_addr);
        } else if (strncmp(arg, "end=", 4) == 0) {
            have_end = parse_addr(arg + 4, &end_addr);
        } else if (strcmp(arg, "mode=insn") == 0) {
            per_tb = false;
        } else if (strcmp(arg, "mode=tb") == 0) {
            per_tb = true;
        } else if (strncmp(arg, "limit=", 6) == 0 && parse_addr(arg + 6, &limit) && limit != 0) {
            limit = strtoull(arg + 6, NULL, 0); /* parse_addr cleared bit 0 */
        } else if (strcmp(arg, "at=1") == 0) {
            print_at = true;
        } else {
            fprintf(stderr, "insncount: unknown argument '%s' (expected begin=0xADDR,end=0xADDR"
                            "[,mode=insn|tb][,limit=N][,at=1])\n", arg);
            return -1;
        }
    }
    if (!have_begin || !have_end || begin_addr == end_addr) {
        fprintf(stderr, "insncount: needs begin=0xADDR and end=0xADDR (two different addresses)\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, on_atexit, NULL);
    return 0;
}
