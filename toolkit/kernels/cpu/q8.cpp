// int8 weights with one scale per output row (toolkit/quant/int8_lm_head.py's LM head)
// times int8 activations, as llama.cpp multiplies its Q8_0 output matrix (Q8_0 x Q8_0).
// Each block of 32 input features of a row of x is quantized to int8 with its own step dx
// (max |x| / 127, int8_blocks.h), so a block's dot product with the weight codes w is an
// exact integer sum, and each output is
//
//     y[t, n] = s[n] * (sum over blocks g, in order, of dx[t, g] dot(w[n, g], xq[t, g]))
//
// Every output follows this one order of float operations, so a row's bits depend on that
// row and the weight only: not on the other rows of the call, the threads, or which of the
// code paths below ran. The codes are stored offset by 128 (u = w + 128, 0..254) for
// vpdpbusd's unsigned x signed product; dot(w, xq) = dot(u, xq) - 128 sum(xq), exactly.
// toolkit/kernels/q8_linear.py holds the layout and the torch twin.
//
// Layout: 8 output rows share each vector (lane i = row n0 + i). ``codes`` uint8
// [N/8, K/32, 8, 8, 4]: for row group r, block g and step p, lane i's 4 bytes b hold
// u[n0 + i, 32g + 4p + b]; ``scales`` float32 [N].

#include "int8_blocks.h"
#include "ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace toolkit_ops {
namespace {

constexpr int64_t kBlock = kInt8Block;  // input features per block
constexpr int64_t kLanes = 8;           // output rows per vector
constexpr int64_t kSteps = 8;           // 4-byte steps per block
constexpr int64_t kGroupBytes = 256;    // codes of one row group's block: 8 rows x 32
constexpr int64_t kMaxRows = 4;         // rows of x that share each load of the codes
constexpr int64_t kGroupGrain = 16;     // row groups per parallel chunk, at least
constexpr int32_t kOffset = 128;        // u = w + kOffset

#if defined(__AVX2__)

// acc lanes += dot(u bytes, x bytes) for codes u in 0..255: dot4 where VNNI takes them
// whole, else their two nibbles apart (dot4's maddubs would saturate above 128).
inline __m256i dot4_bytes(__m256i acc, __m256i codes, int32_t x_bytes) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return dot4(acc, codes, x_bytes);
#else
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i lo = dot4(zero, _mm256_and_si256(codes, low4), x_bytes);
  const __m256i hi = dot4(zero, _mm256_and_si256(_mm256_srli_epi16(codes, 4), low4), x_bytes);
  return _mm256_add_epi32(acc, _mm256_add_epi32(lo, _mm256_slli_epi32(hi, 4)));
#endif
}

// Row group ``group`` (8 outputs) for ROWS rows of x.
template <int ROWS>
void q8_group(const uint8_t* codes, const float* scales, const int8_t* xq, const float* dx,
              const int32_t* offsets, int64_t num_blocks, int64_t k, float (*out)[kLanes]) {
  constexpr int kChains = chains_for(ROWS);
  __m256 acc[ROWS];
  for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < num_blocks; ++g) {
    const uint8_t* block = codes + g * kGroupBytes;
    __m256i u[kSteps];
    for (int p = 0; p < kSteps; ++p) {
      u[p] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32 * p));
    }
    for (int r = 0; r < ROWS; ++r) {
      int32_t words[kSteps];
      std::memcpy(words, xq + r * k + g * kBlock, sizeof(words));
      __m256i chains[kChains];
      chains[0] = _mm256_set1_epi32(-offsets[r * num_blocks + g]);
      for (int c = 1; c < kChains; ++c) chains[c] = _mm256_setzero_si256();
      for (int p = 0; p < kSteps; ++p) {
        chains[p % kChains] = dot4_bytes(chains[p % kChains], u[p], words[p]);
      }
      __m256i sums = chains[0];
      for (int c = 1; c < kChains; ++c) sums = _mm256_add_epi32(sums, chains[c]);
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(dx[r * num_blocks + g]),
                               acc[r]);
    }
  }
  const __m256 scale = _mm256_loadu_ps(scales);
  for (int r = 0; r < ROWS; ++r) _mm256_storeu_ps(out[r], _mm256_mul_ps(acc[r], scale));
}

#else

template <int ROWS>
void q8_group(const uint8_t* codes, const float* scales, const int8_t* xq, const float* dx,
              const int32_t* offsets, int64_t num_blocks, int64_t k, float (*out)[kLanes]) {
  for (int64_t lane = 0; lane < kLanes; ++lane) {
    for (int r = 0; r < ROWS; ++r) {
      float acc = 0.f;
      for (int64_t g = 0; g < num_blocks; ++g) {
        const uint8_t* block = codes + g * kGroupBytes;
        const int8_t* x = xq + r * k + g * kBlock;
        int32_t sum = -offsets[r * num_blocks + g];
        for (int p = 0; p < kSteps; ++p) {
          for (int b = 0; b < 4; ++b) sum += block[32 * p + 4 * lane + b] * x[4 * p + b];
        }
        acc = std::fma(static_cast<float>(sum), dx[r * num_blocks + g], acc);
      }
      out[r][lane] = acc * scales[lane];
    }
  }
}

#endif

template <typename T>
void q8_linear_impl(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales,
                    at::Tensor& out) {
  const int64_t num_rows = x.size(0);
  const int64_t k = x.size(1);
  const int64_t num_blocks = k / kBlock;
  const int64_t n = codes.size(0) * kLanes;
  std::vector<int8_t> xq(num_rows * k);
  std::vector<float> dx(num_rows * num_blocks);
  std::vector<int32_t> offsets(num_rows * num_blocks);  // 128 sum(xq) per block
  const T* x_data = static_cast<const T*>(x.data_ptr());
  for (int64_t t = 0; t < num_rows; ++t) {
    quantize_blocks(x_data + t * k, num_blocks, xq.data() + t * k, dx.data() + t * num_blocks,
                    offsets.data() + t * num_blocks);
  }
  for (int32_t& offset : offsets) offset *= kOffset;
  const uint8_t* code_data = codes.data_ptr<uint8_t>();
  const float* scale_data = scales.data_ptr<float>();
  T* out_data = static_cast<T*>(out.data_ptr());
  at::parallel_for(0, codes.size(0), kGroupGrain, [&](int64_t begin, int64_t end) {
    float group_out[kMaxRows][kLanes];
    for (int64_t group = begin; group < end; ++group) {
      const uint8_t* group_codes = code_data + group * num_blocks * kGroupBytes;
      const float* group_scales = scale_data + group * kLanes;
      for (int64_t t = 0; t < num_rows; t += kMaxRows) {
        const int64_t rows = std::min(kMaxRows, num_rows - t);
        const int8_t* q = xq.data() + t * k;
        const float* d = dx.data() + t * num_blocks;
        const int32_t* o = offsets.data() + t * num_blocks;
        switch (rows) {
          case 1: q8_group<1>(group_codes, group_scales, q, d, o, num_blocks, k, group_out); break;
          case 2: q8_group<2>(group_codes, group_scales, q, d, o, num_blocks, k, group_out); break;
          case 3: q8_group<3>(group_codes, group_scales, q, d, o, num_blocks, k, group_out); break;
          default: q8_group<4>(group_codes, group_scales, q, d, o, num_blocks, k, group_out);
        }
        for (int64_t r = 0; r < rows; ++r) {
          T* y = out_data + (t + r) * n + group * kLanes;
          for (int64_t lane = 0; lane < kLanes; ++lane) y[lane] = stored_as<T>(group_out[r][lane]);
        }
      }
    }
  });
}

}  // namespace

at::Tensor q8_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.size(1) % kBlock == 0,
              "q8_linear: contiguous x [T, K] with K a multiple of 32 expected");
  const int64_t num_blocks = x.size(1) / kBlock;
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.is_contiguous() && codes.dim() == 2 &&
                  codes.size(1) == num_blocks * kGroupBytes,
              "q8_linear: uint8 codes [N/8, K/32 * 256] expected");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() &&
                  scales.numel() == codes.size(0) * kLanes,
              "q8_linear: float32 scales [N] expected");
  at::Tensor out = at::empty({x.size(0), codes.size(0) * kLanes}, x.options());
  if (x.scalar_type() == at::kBFloat16) {
    q8_linear_impl<uint16_t>(x, codes, scales, out);
  } else {
    TORCH_CHECK(x.scalar_type() == at::kFloat, "q8_linear: float32 or bfloat16 x expected");
    q8_linear_impl<float>(x, codes, scales, out);
  }
  return out;
}

}  // namespace toolkit_ops
