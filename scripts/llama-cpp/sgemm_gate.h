/* bastion: the smallest batch that llama.cpp's CPU backend gives to llamafile's sgemm, settable at
 * run time. Force-included into llama.cpp's C files by wheel.sh (CMAKE_C_FLAGS); without
 * GGML_USE_LLAMAFILE, and in C++, it does nothing.
 *
 * Why: ggml_compute_forward_mul_mat (ggml-cpu.c) multiplies every batch of two or more rows with
 * llamafile's tinyBLAS kernels, and one row with ggml's own dot products (sgemm returns false for
 * n < 2). On some CPUs tinyBLAS is slower than the dot products for small batches: on an AMD EPYC
 * (Zen 5, 2 cores) a step of 2 sequences on Q8_0 weights took 24.6 ms through tinyBLAS and 13.6 ms
 * through the dot products, while prompts (batches of 32) took 118 ms against 245 ms. So the
 * batch size where tinyBLAS starts is measured per CPU and model (bastion.llm.kernels) and set
 * with bastion_set_sgemm_min_n(); it starts at llama.cpp's own 2.
 *
 * How: the real llamafile_sgemm is declared here first; then the name is defined to a static
 * inline gate, so sgemm.h's declaration and ggml-cpu.c's two calls name the gate, which returns
 * false (llama.cpp's own fallback: the dot products) for a batch below the minimum. Every thread
 * of a step reads the same value, so all of them take the same path. */
#if defined(GGML_USE_LLAMAFILE) && !defined(__cplusplus) && !defined(BASTION_SGEMM_GATE)
#define BASTION_SGEMM_GATE 1
#include <stdbool.h>
#include <stdint.h>

struct ggml_compute_params;
bool llamafile_sgemm(const struct ggml_compute_params * params, int64_t, int64_t, int64_t,
                     const void *, int64_t, const void *, int64_t, void *, int64_t,
                     int, int, int);

/* one per library (weak: every C file of ggml-cpu defines it; hidden: not another library's) */
__attribute__((weak, visibility("hidden"))) int bastion_sgemm_min_n = 2;

/* how many multiplies the gate sent to the dot products (so a test can see it act) */
__attribute__((weak, visibility("hidden"))) long bastion_sgemm_declined = 0;

__attribute__((weak, visibility("default"))) void bastion_set_sgemm_min_n(int n) {
    __atomic_store_n(&bastion_sgemm_min_n, n < 2 ? 2 : n, __ATOMIC_RELAXED);
}

__attribute__((weak, visibility("default"))) int bastion_get_sgemm_min_n(void) {
    return __atomic_load_n(&bastion_sgemm_min_n, __ATOMIC_RELAXED);
}

__attribute__((weak, visibility("default"))) long bastion_get_sgemm_declined(void) {
    return __atomic_load_n(&bastion_sgemm_declined, __ATOMIC_RELAXED);
}

static inline bool bastion_gated_sgemm(const struct ggml_compute_params * params, int64_t m,
                                       int64_t n, int64_t k, const void * A, int64_t lda,
                                       const void * B, int64_t ldb, void * C, int64_t ldc,
                                       int Atype, int Btype, int Ctype) {
    if (n < __atomic_load_n(&bastion_sgemm_min_n, __ATOMIC_RELAXED)) {
        if (n >= 2) {  /* (below 2 rows llamafile_sgemm declines by itself) */
            __atomic_fetch_add(&bastion_sgemm_declined, 1, __ATOMIC_RELAXED);
        }
        return false;
    }
    return llamafile_sgemm(params, m, n, k, A, lda, B, ldb, C, ldc, Atype, Btype, Ctype);
}

#define llamafile_sgemm bastion_gated_sgemm
#endif
