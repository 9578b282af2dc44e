// bastion's two-row dot products (two_row_dots.patch), compiled from the patched
// arch/x86/quants.c for the target on the compiler's command line, and checked bit for bit
// against the one-row kernel of the same build. The wheel is built with -march=native, so on
// an AVX-512 machine its library never runs the AVX2 path (maddubs instead of VNNI) that CPUs
// such as AMD Zen 2/3 and Intel's client cores take: tests/integration/llm/test_two_row_dots.py
// builds this with -mavx2 -mfma -mf16c and no AVX-512 and runs it, also on qemu's Haswell.
// Prints one line per case and "N mismatches" last; exits 1 on any mismatch.
#include "arch/x86/quants.c"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// the tables libggml-cpu defines and fills in ggml_cpu_init(), here so that nothing of that
// library (built for this machine's CPU) runs: this program runs on an emulated AVX2 CPU too
float ggml_table_f32_f16[1 << 16];
float ggml_table_f32_e8m0_half[1 << 8];
float ggml_table_f32_ue4m3[1 << 8];

typedef void (*dot_fn)(int, float *, size_t, const void *, size_t, const void *, size_t, int);
typedef void (*quant_fn)(const float *, void *, int64_t);

static uint32_t g_state = 12345u;

static float uniform(void) {  // in [-1, 1): a fixed LCG, the same numbers on every machine
    g_state = g_state * 1664525u + 1013904223u;
    return (float) (g_state >> 8) / 8388608.0f - 1.0f;
}

static int check(const char * name, dot_fn dot, quant_fn qx, size_t x_block, quant_fn qy,
                 size_t y_block, int blk, int k) {
    const int nb = k / blk;
    const size_t bx = (size_t) nb * x_block, by = (size_t) nb * y_block;
    float * w = malloc(sizeof(float) * 2 * k);
    float * a = malloc(sizeof(float) * 2 * k);
    char * x = malloc(2 * bx);
    char * y = malloc(2 * by);
    for (int i = 0; i < 2 * k; ++i) {
        w[i] = uniform();
        a[i] = uniform() * 4.0f;
    }
    for (int r = 0; r < 2; ++r) {
        qx(w + (size_t) r * k, x + r * bx, k);
        qy(a + (size_t) r * k, y + r * by, k);
    }
    const size_t bs = 5;  // the output stride between batch rows, as in a result matrix
    float two[10], one[10];
    for (int i = 0; i < 10; ++i) {
        two[i] = -1234.5f;
        one[i] = -1234.5f;
    }
    dot(k, two, bs, x, bx, y, by, 2);
    for (int r = 0; r < 2; ++r) {      // weight row
        for (int c = 0; c < 2; ++c) {  // batch row
            dot(k, one + c * bs + r, 0, x + r * bx, bx, y + c * by, by, 1);
        }
    }
    int bad = 0;
    const int at[4] = {0, 1, (int) bs, (int) bs + 1};
    for (int i = 0; i < 4; ++i) {
        bad += memcmp(&two[at[i]], &one[at[i]], sizeof(float)) != 0;
        bad += one[at[i]] == 0.0f || one[at[i]] == -1234.5f;  // computed, and not trivially
    }
    bad += one[0] == one[1] || one[0] == one[bs];  // a row taken twice would pass otherwise
    printf("%s K=%d: %s (%.6g %.6g %.6g %.6g)\n", name, k, bad ? "MISMATCH" : "bit-identical",
           two[0], two[1], two[bs], two[bs + 1]);
    free(w);
    free(a);
    free(x);
    free(y);
    return bad;
}

int main(void) {
    for (int i = 0; i < (1 << 16); ++i) {
        ggml_table_f32_f16[i] = ggml_fp16_to_fp32((ggml_fp16_t) i);  // libggml-base's
    }
    int bad = 0;
    const int ks[] = {64, 576, 1536, 2048};
    for (int rep = 0; rep < 10; ++rep) {
        for (unsigned i = 0; i < sizeof(ks) / sizeof(ks[0]); ++i) {
            bad += check("q4_0", ggml_vec_dot_q4_0_q8_0, (quant_fn) quantize_row_q4_0_ref,
                         sizeof(block_q4_0), (quant_fn) quantize_row_q8_0_ref,
                         sizeof(block_q8_0), QK8_0, ks[i]);
            bad += check("q4_1", ggml_vec_dot_q4_1_q8_1, (quant_fn) quantize_row_q4_1_ref,
                         sizeof(block_q4_1), (quant_fn) quantize_row_q8_1_ref,
                         sizeof(block_q8_1), QK8_1, ks[i]);
            bad += check("q8_0", ggml_vec_dot_q8_0_q8_0, (quant_fn) quantize_row_q8_0_ref,
                         sizeof(block_q8_0), (quant_fn) quantize_row_q8_0_ref,
                         sizeof(block_q8_0), QK8_0, ks[i]);
        }
    }
#if defined(__AVX512F__) || defined(__AVX512VNNI__) || defined(__AVXVNNI__)
    printf("built with AVX-512 or VNNI: the AVX2-only path was not checked\n");
#endif
    printf("%d mismatches\n", bad);
    return bad ? 1 : 0;
}
