// Q4_1 weights times int8 activations, as llama.cpp multiplies its Q4_1 files (Q4_1 x
// Q8_1), for decode-sized inputs. Each block of 32 input features of a row of x is
// quantized to int8 with its own step dx (max |x| / 127); a block's dot product with 32
// 4-bit codes is then an exact integer sum, and each output is
//
//     y[t, n] = sum over blocks g, in order, of
//               s[n, g] dx[t, g] dot(q[n, g], xq[t, g])  +  (z[n, g] - 8 s[n, g]) xs[t, g]
//
// for the weight W = (q - 8) s + z of torch's int4 convention (s, z bfloat16) and
// xs = dx * sum(xq). Every output follows this one order of float operations (the two
// terms in their own accumulators, added last), so a row's bits depend on that row and
// the weight only: not on the other rows of the call, the threads, or which of the code
// paths below ran (VNNI's vpdpbusd, AVX2's maddubs + madd, or plain C++ give the same
// integer sums). toolkit/kernels/q4_1_linear.py holds the layout and the torch twin.
//
// Layout: 8 output rows share each vector (lane i = row n0 + i). ``codes`` uint8
// [N/8, K/32, 4, 8, 4]: for row group r, block g and step p, lane i's 4 bytes b hold
// q[n0 + i, 32g + 4p + b] in their low nibble and q[n0 + i, 32g + 16 + 4p + b] in the high
// one; ``scales_zeros`` bfloat16 [N/8, K/32, 2, 8]: the group's 8 scales, then its 8 zeros.

#include "int8_blocks.h"
#include "ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace toolkit_ops {
namespace {

constexpr int64_t kBlock = kInt8Block;  // input features per block
constexpr int64_t kGroupBytes = 128;    // codes of one row group's block: 8 rows x 32 / 2
constexpr int64_t kGroupGrain = 8;      // row groups per parallel chunk, at least

#if defined(__AVX2__)

inline __m256 bf16x8_to_f32(const uint16_t* p) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

// Row group ``group`` (8 outputs) for ROWS rows of x.
template <int ROWS>
void q4_1_group(const uint8_t* codes, const uint16_t* scales_zeros, const int8_t* xq,
                const float* dx, const float* xs, int64_t num_blocks, int64_t k,
                float (*out)[kLanes]) {
  constexpr int kChains = chains_for(ROWS);
  __m256 dots[ROWS], minimums[ROWS];
  for (int r = 0; r < ROWS; ++r) {
    dots[r] = _mm256_setzero_ps();
    minimums[r] = _mm256_setzero_ps();
  }
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  for (int64_t g = 0; g < num_blocks; ++g) {
    const uint8_t* block = codes + g * kGroupBytes;
    __m256i lo[4], hi[4];
    for (int p = 0; p < 4; ++p) {
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32 * p));
      lo[p] = _mm256_and_si256(bytes, low4);
      hi[p] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
    }
    const __m256 scale = bf16x8_to_f32(scales_zeros + g * 16);
    const __m256 zero = bf16x8_to_f32(scales_zeros + g * 16 + 8);
    const __m256 minimum = _mm256_fnmadd_ps(_mm256_set1_ps(8.f), scale, zero);
    for (int r = 0; r < ROWS; ++r) {
      int32_t words[8];
      std::memcpy(words, xq + r * k + g * kBlock, sizeof(words));
      __m256i chains[kChains];
      for (int c = 0; c < kChains; ++c) chains[c] = _mm256_setzero_si256();
      for (int p = 0; p < 4; ++p) {
        chains[p % kChains] = dot4(chains[p % kChains], lo[p], words[p]);
        chains[p % kChains] = dot4(chains[p % kChains], hi[p], words[4 + p]);
      }
      __m256i sums = chains[0];
      for (int c = 1; c < kChains; ++c) sums = _mm256_add_epi32(sums, chains[c]);
      const __m256 step = _mm256_mul_ps(scale, _mm256_set1_ps(dx[r * num_blocks + g]));
      dots[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), step, dots[r]);
      minimums[r] = _mm256_fmadd_ps(minimum, _mm256_set1_ps(xs[r * num_blocks + g]),
                                    minimums[r]);
    }
  }
  for (int r = 0; r < ROWS; ++r) _mm256_storeu_ps(out[r], _mm256_add_ps(dots[r], minimums[r]));
}

#else

template <int ROWS>
void q4_1_group(const uint8_t* codes, const uint16_t* scales_zeros, const int8_t* xq,
                const float* dx, const float* xs, int64_t num_blocks, int64_t k,
                float (*out)[kLanes]) {
  for (int64_t lane = 0; lane < kLanes; ++lane) {
    for (int r = 0; r < ROWS; ++r) {
      float dot_acc = 0.f, minimum_acc = 0.f;
      for (int64_t g = 0; g < num_blocks; ++g) {
        const uint8_t* block = codes + g * kGroupBytes;
        const int8_t* x = xq + r * k + g * kBlock;
        int32_t sum = 0;
        for (int p = 0; p < 4; ++p) {
          for (int b = 0; b < 4; ++b) {
            const uint8_t byte = block[32 * p + 4 * lane + b];
            sum += (byte & 0x0F) * x[4 * p + b] + (byte >> 4) * x[16 + 4 * p + b];
          }
        }
        const float scale = bf16_bits_to_f32(scales_zeros[g * 16 + lane]);
        const float zero = bf16_bits_to_f32(scales_zeros[g * 16 + 8 + lane]);
        const float minimum = std::fma(-8.f, scale, zero);
        dot_acc = std::fma(static_cast<float>(sum), scale * dx[r * num_blocks + g], dot_acc);
        minimum_acc = std::fma(minimum, xs[r * num_blocks + g], minimum_acc);
      }
      out[r][lane] = dot_acc + minimum_acc;
    }
  }
}

#endif

template <typename T>
void q4_1_linear_impl(const at::Tensor& x, const at::Tensor& codes,
                      const at::Tensor& scales_zeros, at::Tensor& out) {
  const int64_t num_rows = x.size(0);
  const int64_t k = x.size(1);
  const int64_t num_blocks = k / kBlock;
  std::vector<int8_t> xq(num_rows * k);
  std::vector<float> dx(num_rows * num_blocks), xs(num_rows * num_blocks);
  std::vector<int32_t> sums(num_rows * num_blocks);
  const T* x_data = static_cast<const T*>(x.data_ptr());
  for (int64_t t = 0; t < num_rows; ++t) {
    quantize_blocks(x_data + t * k, num_blocks, xq.data() + t * k, dx.data() + t * num_blocks,
                    sums.data() + t * num_blocks);
  }
  for (int64_t i = 0; i < num_rows * num_blocks; ++i) xs[i] = dx[i] * static_cast<float>(sums[i]);
  const uint8_t* code_data = codes.data_ptr<uint8_t>();
  const uint16_t* sz_data = reinterpret_cast<const uint16_t*>(scales_zeros.data_ptr());
  for_each_row_group<1>(codes.size(0), num_rows, kGroupGrain, static_cast<T*>(out.data_ptr()),
                        [&](auto rows, int64_t group, int64_t, int64_t t,
                            float (*group_out)[kMaxRows][kLanes]) {
    q4_1_group<decltype(rows)::value>(code_data + group * num_blocks * kGroupBytes,
                                      sz_data + group * num_blocks * 16, xq.data() + t * k,
                                      dx.data() + t * num_blocks, xs.data() + t * num_blocks,
                                      num_blocks, k, group_out[0]);
  });
}

}  // namespace

at::Tensor q4_1_linear(const at::Tensor& x, const at::Tensor& codes,
                       const at::Tensor& scales_zeros) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.size(1) % kBlock == 0,
              "q4_1_linear: contiguous x [T, K] with K a multiple of 32 expected");
  const int64_t num_blocks = x.size(1) / kBlock;
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.is_contiguous() && codes.dim() == 2 &&
                  codes.size(1) == num_blocks * kGroupBytes,
              "q4_1_linear: uint8 codes [N/8, K/32 * 128] expected");
  TORCH_CHECK(scales_zeros.scalar_type() == at::kBFloat16 && scales_zeros.is_contiguous() &&
                  scales_zeros.numel() == codes.size(0) * num_blocks * 16,
              "q4_1_linear: bfloat16 scales_zeros [N/8, K/32, 2, 8] expected");
  at::Tensor out = at::empty({x.size(0), codes.size(0) * kLanes}, x.options());
  TOOLKIT_DISPATCH(x.scalar_type(),
                   [&] { q4_1_linear_impl<scalar_t>(x, codes, scales_zeros, out); });
  return out;
}

}  // namespace toolkit_ops
