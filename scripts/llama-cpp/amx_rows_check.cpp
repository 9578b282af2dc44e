// bastion's multi-row VNNI kernels for llama.cpp's AMX backend (amx_small_batch.patch), checked
// bit for bit against llama.cpp's own one-row kernel on the same packed weights, for every type
// the AMX backend repacks that the patch gives rows to (Q4_0, Q4_1, Q8_0) and one that goes
// row by row (Q4_K). Runs on any CPU with AVX-512 VNNI (the AMX tiles are never used). Built
// and run by tests/integration/llm/test_amx_rows.py; `amx_rows_check bench` also times both.
#include "mmq.cpp"

#include "ggml-cpu.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

static bool g_bench = false;

template <typename TA, typename TB, int BLK, typename Q>
static int check(const char * name, Q quant_b, int K, int N, int M) {
    std::mt19937 g(42 + M);
    std::normal_distribution<float> d(0.f, 1.f);
    std::vector<float> W((size_t)N * K), X((size_t)M * K);
    for (auto & w : W) w = d(g);
    for (auto & x : X) x = d(g);
    const int KB = K / BLK;
    std::vector<TB> Bq((size_t)N * KB);
    quant_b(W.data(), Bq.data(), (int64_t)N * K);
    const int TILE_SIZE = get_tile_size<TB>();
    std::vector<char> packed((size_t)(N / TILE_N) * KB * TILE_SIZE + 64);
    convert_B_packed_format<TB, BLK>(packed.data(), Bq.data(), N, K);
    const int row_size_A = KB * sizeof(TA);
    std::vector<char> Aq((size_t)M * row_size_A);
    for (int m = 0; m < M; ++m) {
        from_float<TA>(X.data() + (size_t)m * K, Aq.data() + (size_t)m * row_size_A, K);
    }
    std::vector<float> one(M * (size_t)N, -1.f), rows(M * (size_t)N, -2.f);
    constexpr int BLOCK_N = 64;
    auto by_one_row = [&] {  // llama.cpp: one row at a time, its M == 1 kernel
        for (int m = 0; m < M; ++m) {
            for (int nb = 0; nb * BLOCK_N < N; ++nb) {
                const int size = std::min(BLOCK_N, N - nb * BLOCK_N);
                const char * b = packed.data() + PACKED_INDEX(nb * 4, 0, KB, TILE_SIZE);
                const char * a = Aq.data() + (size_t)m * row_size_A;
                float * c = one.data() + (size_t)m * N + nb * BLOCK_N;
                if (size == 64) {
                    tinygemm_kernel_vnni<TA, TB, float, 1, 64, BLK>::apply(KB, a, b, c, N);
                } else {
                    tinygemm_kernel_vnni<TA, TB, float, 1, 32, BLK>::apply(KB, a, b, c, N);
                }
            }
        }
    };
    auto by_rows = [&] {  // bastion: all M rows per block of weights
        for (int nb = 0; nb * BLOCK_N < N; ++nb) {
            const int size = std::min(BLOCK_N, N - nb * BLOCK_N);
            bastion_vnni_small_m<TA, TB, BLK>(M, size, KB, Aq.data(), row_size_A,
                packed.data() + PACKED_INDEX(nb * 4, 0, KB, TILE_SIZE), rows.data() + nb * BLOCK_N, N);
        }
    };
    by_one_row();
    by_rows();
    size_t zeros = 0;
    for (float v : one) {
        zeros += v == 0.f;
    }
    const bool same = zeros < one.size() / 100 &&  // (a check of zeros against zeros is none)
                      memcmp(one.data(), rows.data(), one.size() * sizeof(float)) == 0;
    printf("%-5s K=%-5d N=%-5d M=%d %s", name, K, N, M, same ? "bit-identical" : "MISMATCH");
    if (g_bench) {
        double t1 = 1e9, t2 = 1e9;
        for (int r = 0; r < 7; ++r) {
            auto s = std::chrono::steady_clock::now();
            for (int i = 0; i < 100; ++i) by_one_row();
            auto e = std::chrono::steady_clock::now();
            for (int i = 0; i < 100; ++i) by_rows();
            auto f = std::chrono::steady_clock::now();
            t1 = std::min(t1, std::chrono::duration<double, std::micro>(e - s).count() / 100);
            t2 = std::min(t2, std::chrono::duration<double, std::micro>(f - e).count() / 100);
        }
        printf("  one row x %d: %7.1f us  rows: %7.1f us  (%.2fx)", M, t1, t2, t2 / t1);
    }
    printf("\n");
    return same ? 0 : 1;
}

int main(int argc, char ** argv) {
    g_bench = argc > 1 && strcmp(argv[1], "bench") == 0;
    ggml_cpu_init();  // (fills the fp16 tables the kernels read scales through)
    int bad = 0;
    // the shipped model's shapes (hidden 576, feed-forward 1536); N = 1568 ends on a 32-column block
    for (int M : {2, 3, 4, 5, 8}) {
        for (int N : {1536, 1568}) {
            bad += check<block_q8_1, block_q4_1, QK4_1>("q4_1", quantize_row_q4_1_ref, 576, N, M);
            bad += check<block_q8_0, block_q4_0, QK4_0>("q4_0", quantize_row_q4_0_ref, 576, N, M);
            bad += check<block_q8_0, block_q8_0, QK8_0>("q8_0", quantize_row_q8_0_ref, 576, N, M);
        }
        bad += check<block_q8_K, block_q4_K, QK_K>("q4_K", quantize_row_q4_K_ref, 768, 1536, M);
    }
    printf("%d mismatches\n", bad);
    return bad ? 1 : 0;
}
