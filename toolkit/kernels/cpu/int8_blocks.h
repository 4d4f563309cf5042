// What q4_1.cpp and q8.cpp share: bfloat16 bits <-> float, the quantization of activations
// to int8 per block of 32 features (llama.cpp's Q8 blocks), and the loop over row groups.

#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace toolkit_ops {

constexpr int64_t kInt8Block = 32;  // input features per activation block
constexpr int64_t kLanes = 8;       // outputs of a row group: one vector of 8 floats
constexpr int64_t kMaxRows = 4;     // rows of x per call of a row group's kernel

inline float bf16_bits_to_f32(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &wide, sizeof(out));
  return out;
}

inline uint16_t f32_to_bf16_bits(float x) {  // round to nearest even, NaN kept quiet
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  if (std::isnan(x)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

// T is float or the bits of a bfloat16 (uint16_t).
template <typename T>
inline float value_of(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    return bf16_bits_to_f32(x);
  }
}

template <typename T>
inline T stored_as(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    return f32_to_bf16_bits(x);
  }
}

// One row of x [K] -> xq int8 [K] and, per block g, dx[g] = max |x| / 127 and
// sums[g] = sum(xq of g); q = round-half-even(x / dx), 0 for an all-zero block.
template <typename T>
void quantize_blocks(const T* x, int64_t num_blocks, int8_t* xq, float* dx, int32_t* sums) {
  for (int64_t g = 0; g < num_blocks; ++g) {
    const T* block = x + g * kInt8Block;
    float amax = 0.f;
    for (int64_t i = 0; i < kInt8Block; ++i) {
      amax = std::max(amax, std::fabs(value_of(block[i])));
    }
    const float step = amax / 127.f;
    const float inverse = step > 0.f ? 1.f / step : 0.f;
    int32_t sum = 0;
    for (int64_t i = 0; i < kInt8Block; ++i) {
      const int32_t q = static_cast<int32_t>(std::nearbyint(value_of(block[i]) * inverse));
      xq[g * kInt8Block + i] = static_cast<int8_t>(q);
      sum += q;
    }
    dx[g] = step;
    sums[g] = sum;
  }
}

// The outer loop of q4_1_linear and q8_linear: every chunk of up to GROUPS row groups (8
// outputs each; chunks in parallel, at least ``grain`` a thread) for every run of up to
// kMaxRows rows of x from row t: kernel(std::integral_constant<int, ROWS>, group, groups, t,
// out) writes the outputs of the chunk's ``groups`` row groups from ``group`` for the run to
// out[g][ROWS][8], which are then stored, rounded to T, in y [T, num_groups * 8].
template <int GROUPS, typename T, typename Kernel>
void for_each_row_group(int64_t num_groups, int64_t num_rows, int64_t grain, T* y,
                        const Kernel& kernel) {
  const int64_t n = num_groups * kLanes;
  const int64_t num_chunks = (num_groups + GROUPS - 1) / GROUPS;
  at::parallel_for(0, num_chunks, grain, [&](int64_t begin, int64_t end) {
    float chunk_out[GROUPS][kMaxRows][kLanes];
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t group = chunk * GROUPS;
      const int64_t groups = std::min<int64_t>(GROUPS, num_groups - group);
      for (int64_t t = 0; t < num_rows; t += kMaxRows) {
        const int64_t rows = std::min(kMaxRows, num_rows - t);
        switch (rows) {
          case 1: kernel(std::integral_constant<int, 1>(), group, groups, t, chunk_out); break;
          case 2: kernel(std::integral_constant<int, 2>(), group, groups, t, chunk_out); break;
          case 3: kernel(std::integral_constant<int, 3>(), group, groups, t, chunk_out); break;
          default: kernel(std::integral_constant<int, 4>(), group, groups, t, chunk_out);
        }
        for (int64_t g = 0; g < groups; ++g) {
          for (int64_t r = 0; r < rows; ++r) {
            T* out = y + (t + r) * n + (group + g) * kLanes;
            for (int64_t lane = 0; lane < kLanes; ++lane) {
              out[lane] = stored_as<T>(chunk_out[g][r][lane]);
            }
          }
        }
      }
    }
  });
}

#ifdef __AVX2__

// Each 32-bit lane of acc += the sum over its 4 bytes of codes (unsigned) times the 4 bytes
// of x_bytes (signed, -127..127): VNNI's vpdpbusd, or AVX2's maddubs + madd, which give the
// same integers for codes up to 128 (maddubs saturates the sum of a pair to 16 bits).
inline __m256i dot4(__m256i acc, __m256i codes, int32_t x_bytes) {
  const __m256i x = _mm256_set1_epi32(x_bytes);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, codes, x);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(codes, x),
                                                 _mm256_set1_epi16(1)));
#endif
}

#endif

// Independent vpdpbusd accumulators per row of x in a kernel's block loop: one row's
// chain of 8 dependent instructions would wait out their latency (its sums, added at the
// end, are the same integers); with more rows, the rows are the independent chains.
constexpr int chains_for(int rows) { return rows == 1 ? 4 : 1; }

}  // namespace toolkit_ops
