/*
 * vits-edge: a QEMU TCG plugin that counts, per translated block, the AArch64 instructions a program
 * executes, by class (NEON fp32, fp16, int8 dot products, widening multiplies, loads, stores, scalar...),
 * split into segments by a marker the program sends (a lseek(-1, MAGIC + n, 0) call), and writes them to a
 * text file at exit. exporter/pi/counts.py builds it with the host's C compiler and reads what it writes;
 * exporter/pi/cost.py turns the counts into cycles with a model of each Raspberry Pi core.
 *
 * SPDX-License-Identifier: MIT (like the rest of vits-edge). The declarations below are written from QEMU's
 * documented plugin API (version 1, QEMU 7.2's include/qemu/qemu-plugin.h); that header is GPL-2.0-or-later and
 * is not copied here. QEMU loads this file as a plugin at run time: nothing of QEMU is compiled into it.
 *
 * Arguments: out=PATH (the counts file); threads=split to count the first thread's executions apart from the
 * other threads' (a callback per block executed; without it an inline add: all threads' executions together);
 * disas=PATH to write each distinct instruction word once with its class and QEMU's disassembly.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* -- QEMU's plugin API, version 1: only what this plugin uses ------------------------------------------- */
typedef uint64_t qemu_plugin_id_t;
typedef struct {
    const char *target_name;
    struct { int min; int cur; } version;
    bool system_emulation;
    union { struct { int smp_vcpus; int max_vcpus; } system; };
} qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                                              uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                                              uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);
#define EXPORTED __attribute__((visibility("default")))
EXPORTED int qemu_plugin_version = 1;

/* -- instruction classes ------------------------------------------------------------------------------- */
/* "_Q": a 128-bit vector operation; "_D": a 64-bit one (or a widening "long" operation, which reads 64-bit
 * halves). Keep in step with CLASSES in exporter/pi/counts.py. */
enum {
    BRANCH, INT, IMUL, LOAD, STORE, LOAD_V, STORE_V, FP_SCALAR, FP16_SCALAR,
    FP32_D, FP32_Q, FP16_D, FP16_Q, DOT_D, DOT_Q, MUL_D, MUL_Q, MULL, PADAL_D, PADAL_Q, SIMD_D, SIMD_Q,
    SYSTEM, N_CLASSES
};

static int fp_scalar(uint32_t d) { return ((d >> 22) & 3) == 3 ? FP16_SCALAR : FP_SCALAR; }

/* Advanced SIMD, vector forms (bit 31 = 0, bits 28:25 = 0111): the Arm ARM's C4.1.95 tables. */
static int simd_vector(uint32_t d)
{
    bool q = (d >> 30) & 1;
    unsigned size = (d >> 22) & 3;
    if ((d >> 24) & 1) {                                  /* 0x0F: by element, or immediate forms */
        if ((d >> 10) & 1)
            return q ? SIMD_Q : SIMD_D;                   /* modified immediate, shift by immediate */
        unsigned op = (d >> 12) & 0xF;                     /* vector x indexed element */
        if (op == 0x1 || op == 0x5 || op == 0x9)           /* FMLA, FMLS, FMUL(X) by element */
            return size == 0 ? (q ? FP16_Q : FP16_D) : (q ? FP32_Q : FP32_D);
        if (op == 0xE || op == 0xF)                        /* SDOT/UDOT, SUDOT/USDOT by element */
            return q ? DOT_Q : DOT_D;
        if (op == 0x2 || op == 0x3 || op == 0x6 || op == 0x7 || op == 0xA || op == 0xB)
            return MULL;                                   /* S/U MLAL, MLSL, MULL, SQDML* by element */
        if (op == 0x0 || op == 0x4 || op == 0x8 || op == 0xC || op == 0xD)
            return q ? MUL_Q : MUL_D;                      /* MLA, MLS, MUL, SQDMULH, SQRDMULH */
        return q ? SIMD_Q : SIMD_D;
    }
    if ((d >> 21) & 1) {
        if ((d >> 10) & 1) {                               /* three same */
            unsigned op = (d >> 11) & 0x1F;
            if (op >= 0x18)                                /* FP: FADD, FMUL, FMLA, FMAX, FCM*, FDIV... */
                return q ? FP32_Q : FP32_D;
            if (op == 0x12 || op == 0x13 || op == 0x16)    /* MLA/MLS, MUL/PMUL, SQ(R)DMULH */
                return q ? MUL_Q : MUL_D;
            return q ? SIMD_Q : SIMD_D;
        }
        if (((d >> 10) & 3) == 0) {                        /* three different */
            unsigned op = (d >> 12) & 0xF;
            if (op >= 0x8)                                 /* S/U MLAL, MLSL, MULL, SQDML*, PMULL */
                return MULL;
            return q ? SIMD_Q : SIMD_D;                    /* ADDL, ADDW, ABAL, ADDHN... */
        }
        if (((d >> 17) & 0xF) == 0 && ((d >> 12) & 0x1F) == 0x6)
            return q ? PADAL_Q : PADAL_D;                  /* two-register misc: SADALP, UADALP */
        return q ? SIMD_Q : SIMD_D;                        /* misc, across lanes, crypto */
    }
    if ((d & 0x0060C400) == 0x00400400)                    /* three same (FP16): bits 22:21 = 10, 15:14 = 00 */
        return q ? FP16_Q : FP16_D;
    if ((d & 0x00008400) == 0x00008400) {                  /* three same extra */
        unsigned op = (d >> 11) & 0xF;
        if (op == 0x2 || op == 0x3 || op == 0x4 || op == 0x5)  /* SDOT/UDOT, USDOT, S/U/US MMLA */
            return q ? DOT_Q : DOT_D;
        return q ? SIMD_Q : SIMD_D;
    }
    return q ? SIMD_Q : SIMD_D;                            /* copy, permute, extract, table */
}

static int classify(uint32_t d)
{
    unsigned op0 = (d >> 25) & 0xF;
    if ((op0 & 0xE) == 0x8)                                /* data processing, immediate */
        return INT;
    if ((op0 & 0xE) == 0xA) {                              /* branches, exceptions, system */
        if ((d & 0xFFC00000) == 0xD5000000 || (d & 0xFF000000) == 0xD4000000)
            return SYSTEM;
        return BRANCH;
    }
    if ((op0 & 0x5) == 0x4) {                              /* loads and stores */
        bool vec = (d >> 26) & 1, load;
        unsigned group = (d >> 27) & 7;
        if (group == 7) {                                  /* register forms: opc in bits 23:22 */
            unsigned opc = (d >> 22) & 3;
            load = vec ? (opc & 1) : opc != 0;
        } else if (group == 3) {
            load = true;                                   /* literal */
        } else {
            load = (d >> 22) & 1;                          /* pairs, structures, exclusives: the L bit */
        }
        return vec ? (load ? LOAD_V : STORE_V) : (load ? LOAD : STORE);
    }
    if ((op0 & 0x7) == 0x5) {                              /* data processing, register */
        if ((d & 0x1F000000) == 0x1B000000)                /* MADD, MSUB, SMULL, UMULH... */
            return IMUL;
        if ((d & 0x5FE0F800) == 0x1AC00800)                /* SDIV, UDIV */
            return IMUL;
        return INT;
    }
    if ((op0 & 0x7) == 0x7) {                              /* scalar FP and Advanced SIMD */
        if ((d & 0x9E000000) == 0x0E000000)
            return simd_vector(d);
        if ((d & 0x5F000000) == 0x1E000000 || (d & 0x5F000000) == 0x1F000000)
            return fp_scalar(d);                           /* FP data processing, FMADD... */
        return SIMD_D;                                     /* Advanced SIMD scalar, crypto */
    }
    return SYSTEM;                                         /* unallocated, SVE, SME: no Pi runs them */
}

/* -- translated blocks ------------------------------------------------------------------------------------ */
typedef struct Block {
    uint64_t vaddr;
    uint32_t n_insns, hash;
    uint32_t classes[N_CLASSES];
    uint64_t main_execs;       /* executions by vCPU 0, the program's first thread */
    uint64_t other_execs;      /* by every other thread (onnxruntime's pool) */
    int64_t id;                /* -1 until written to the file */
    struct Block *next;
} Block;

#define BUCKETS (1u << 16)
static Block *buckets[BUCKETS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;
static int64_t next_id;
static unsigned segments;
static FILE *disas;                /* disas=PATH: each distinct instruction word once, its class and QEMU's
                                      disassembly (how the decoder below is checked) */
static uint32_t *seen_words;
static size_t seen_size;
static bool split_threads;         /* threads=split: count the first thread and the others apart (a callback per
                                      block); otherwise an inline add, several times faster, exact at one thread */

#define MARKER_SYSCALL 62          /* lseek on aarch64 */
#define MARKER_MAGIC 0x7E5E0000ull

/* Whether ``word`` was seen before (an open-addressing set; called under the lock). */
static bool seen(uint32_t word)
{
    if (!seen_words) {
        seen_size = 1u << 20;
        seen_words = calloc(seen_size, sizeof *seen_words);
    }
    size_t i = (word * 2654435761u) & (seen_size - 1);
    for (; seen_words[i]; i = (i + 1) & (seen_size - 1))
        if (seen_words[i] == word + 1)
            return true;
    seen_words[i] = word + 1;  /* 0 marks an empty slot (word 0xFFFFFFFF is unallocated) */
    return false;
}

static void on_exec(unsigned int vcpu_index, void *userdata)
{
    Block *b = userdata;
    if (vcpu_index == 0)
        b->main_execs++;
    else
        __atomic_fetch_add(&b->other_execs, 1, __ATOMIC_RELAXED);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
    uint32_t classes[N_CLASSES] = {0}, hash = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        uint32_t d;
        memcpy(&d, qemu_plugin_insn_data(qemu_plugin_tb_get_insn(tb, i)), 4);
        classes[classify(d)]++;
        hash = (hash ^ d) * 16777619u;
    }
    unsigned bucket = (unsigned)((vaddr >> 2) ^ hash) & (BUCKETS - 1);
    pthread_mutex_lock(&lock);
    Block *b = buckets[bucket];
    while (b && !(b->vaddr == vaddr && b->n_insns == n && b->hash == hash))
        b = b->next;
    if (!b) {
        b = calloc(1, sizeof *b);
        b->vaddr = vaddr;
        b->n_insns = (uint32_t)n;
        b->hash = hash;
        memcpy(b->classes, classes, sizeof classes);
        b->id = -1;
        b->next = buckets[bucket];
        buckets[bucket] = b;
    }
    if (disas) {
        for (size_t i = 0; i < n; i++) {
            struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
            uint32_t d;
            memcpy(&d, qemu_plugin_insn_data(insn), 4);
            if (!seen(d)) {
                char *text = qemu_plugin_insn_disas(insn);
                fprintf(disas, "%08x\t%d\t%s\n", d, classify(d), text ? text : "?");
                free(text);
            }
        }
    }
    pthread_mutex_unlock(&lock);
    if (split_threads)
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, QEMU_PLUGIN_CB_NO_REGS, b);
    else
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->main_execs, 1);
}

/* Write every block executed since the last segment, and zero their counts. */
static void flush_segment(const char *name, uint64_t arg)
{
    pthread_mutex_lock(&lock);
    fprintf(out, "seg %u %s %" PRIu64 "\n", segments++, name, arg);
    for (unsigned i = 0; i < BUCKETS; i++) {
        for (Block *b = buckets[i]; b; b = b->next) {
            uint64_t m = b->main_execs, o = __atomic_exchange_n(&b->other_execs, 0, __ATOMIC_RELAXED);
            b->main_execs = 0;
            if (!m && !o)
                continue;
            if (b->id < 0) {
                b->id = next_id++;
                fprintf(out, "tb %" PRId64 " %" PRIx64 " %u", b->id, b->vaddr, b->n_insns);
                for (int c = 0; c < N_CLASSES; c++)
                    fprintf(out, " %u", b->classes[c]);
                fputc('\n', out);
            }
            fprintf(out, "x %" PRId64 " %" PRIu64 " %" PRIu64 "\n", b->id, m, o);
        }
    }
    fflush(out);
    pthread_mutex_unlock(&lock);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    (void)id; (void)vcpu_index; (void)a3; (void)a4; (void)a5; (void)a6; (void)a7; (void)a8;
    if (num == MARKER_SYSCALL && a1 == UINT64_MAX && (a2 & ~0xFFFFull) == MARKER_MAGIC)
        flush_segment("mark", a2 & 0xFFFF);
}

static void on_exit_(qemu_plugin_id_t id, void *userdata)
{
    (void)id; (void)userdata;
    flush_segment("exit", 0);
    fprintf(out, "end %d\n", N_CLASSES);
    fclose(out);
    if (disas)
        fclose(disas);
}

EXPORTED int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "out=", 4) == 0)
            path = argv[i] + 4;
        else if (strcmp(argv[i], "threads=split") == 0)
            split_threads = true;
        else if (strncmp(argv[i], "disas=", 6) == 0 && !(disas = fopen(argv[i] + 6, "w")))
            return -1;
    if (!path || strcmp(info->target_name, "aarch64") != 0 || info->system_emulation) {
        fprintf(stderr, "insnclass: needs out=PATH, and aarch64 user-mode emulation\n");
        return -1;
    }
    out = fopen(path, "w");
    if (!out) {
        perror(path);
        return -1;
    }
    fprintf(out, "insnclass 1 classes %d\n", N_CLASSES);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_exit_, NULL);
    return 0;
}
