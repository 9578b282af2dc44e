/* Force-included into every C++ file of llama.cpp when bastion builds llama-cpp-python
 * (scripts/llama-cpp/wheel.sh). Without it, llama.cpp's AMX kernels crash with SIGSEGV in their
 * first matrix multiply on CPUs with AMX when built by GCC 12 (Debian 12's compiler):
 *
 * GCC 12's _tile_loadconfig() passes its 64-byte tile configuration to `ldtilecfg` as an asm
 * memory operand of pointer size (8 bytes). The compiler therefore treats the stores that fill in
 * the rest of the configuration (rows and bytes per row of each tile) as dead and drops them, and
 * `ldtilecfg` reads stack garbage: a #GP fault, i.e. SIGSEGV (ggml_backend_amx_mul_mat; reported
 * upstream as ggml-org/llama.cpp#20824 and ollama/ollama#9061 without this cause).
 *
 * This redefines the intrinsic with a memory operand covering all 64 bytes. Clang's intrinsic is
 * a builtin with the right semantics and is left alone; other CPUs never see this code. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#undef _tile_loadconfig
#define _tile_loadconfig(config) \
    __asm__ volatile("ldtilecfg %0" : : "m"(*(const unsigned char(*)[64])(config)))
#endif
