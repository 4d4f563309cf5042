// CPU kernels for the decode hot path: one call each where the torch route runs 3 to 12
// small ops (toolkit/kernels/native.py builds this file on first use and documents it).
//
// Every kernel is the twin of a torch function named in its comment and rounds where that
// function rounds (to the tensor's dtype after each op), so the two routes agree to
// float32 summation order. Dtypes: float32 and bfloat16; shapes are checked in Python.

#include "ops.h"

#include <ATen/Parallel.h>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

namespace {

// Elements per parallel chunk of the row-wise kernels (norms, silu_and_mul, rotary,
// quantize_rows, dequantize_rows): a smaller chunk costs more in OpenMP's fork and join
// than it saves. Counted in elements, not rows, so that a decode step of 16 rows of 576 or
// 1536 splits over the threads (at 16 rows per chunk it ran on the calling thread while
// the others waited: a w8a8 step of 16 rows on 2 cores went from ~19.7 to ~18.4 ms); a
// [1, hidden] decode row stays on the calling thread. A row's bits do not depend on its
// chunk.
constexpr int64_t kGrainElements = 4096;

// Rows per parallel chunk for rows of row_elements elements.
inline int64_t row_grain(int64_t row_elements) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, row_elements));
}

// Element access: float32 as is, bfloat16 as its uint16_t bits, converted without branches
// so that the loops vectorize (round to nearest even, NaN kept quiet, as c10::BFloat16).
inline float f32(float x) { return x; }

inline float f32(uint16_t bits) {
  const uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof(value));
  return value;
}

template <typename T>
inline T to(float x);

template <>
inline float to<float>(float x) {
  return x;
}

template <>
inline uint16_t to<uint16_t>(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  return x != x ? uint16_t{0x7fc0} : static_cast<uint16_t>(rounded);
}

// x rounded to T's precision, kept in float32: what a torch op on T tensors stores.
template <typename T>
inline float round_to(float x) {
  return f32(to<T>(x));
}

// exp(x) as 2^n * 2^f with n = round(x / ln 2) and 2^f by its Taylor polynomial on
// [-0.5, 0.5] (relative error ~1e-7, float32's own). Unlike std::exp it vectorizes in simd
// loops. x is clamped to [-87, 88]: ~1e-38 instead of 0 and ~1.7e38 instead of inf,
// which softmax and silu absorb.
inline float exp_approx(float x) {
  const float t = std::min(std::max(x, -87.f), 88.f) * 1.44269504088896341f;  // x / ln 2
  const float n = std::nearbyint(t);
  const float f = (t - n) * 0.693147180559945309f;  // in [-ln2/2, ln2/2]
  float p = 1.f / 720;
  p = p * f + 1.f / 120;
  p = p * f + 1.f / 24;
  p = p * f + 1.f / 6;
  p = p * f + 0.5f;
  p = p * f + 1.f;
  p = p * f + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return p * two_n;
}

// One row of rms_norm (toolkit/layers/rmsnorm.py): normalise in float32, round to T, then
// multiply by the weight in T.
template <typename T>
inline void rms_norm_row(const T* x, const T* weight, T* out, int64_t hidden, float eps) {
  float sum_squares = 0.f;
#pragma omp simd reduction(+ : sum_squares)
  for (int64_t h = 0; h < hidden; ++h) {
    const float v = f32(x[h]);
    sum_squares += v * v;
  }
  const float inv_rms = 1.f / std::sqrt(sum_squares / static_cast<float>(hidden) + eps);
#pragma omp simd
  for (int64_t h = 0; h < hidden; ++h) {
    const float normed = round_to<T>(f32(x[h]) * inv_rms);
    out[h] = to<T>(f32(weight[h]) * normed);
  }
}

template <typename T>
void rms_norm_impl(const at::Tensor& x, const at::Tensor& weight, at::Tensor& out, float eps) {
  const int64_t hidden = x.size(1);
  const T* x_data = static_cast<const T*>(x.data_ptr());
  const T* w_data = static_cast<const T*>(weight.data_ptr());
  T* out_data = static_cast<T*>(out.data_ptr());
  at::parallel_for(0, x.size(0), row_grain(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      rms_norm_row(x_data + t * hidden, w_data, out_data + t * hidden, hidden, eps);
    }
  });
}

// x, residual: [T, H] -> (rms_norm(residual + x), residual + x), the add rounded to T.
template <typename T>
void fused_add_rms_norm_impl(const at::Tensor& x, const at::Tensor& residual,
                             const at::Tensor& weight, at::Tensor& out, at::Tensor& sum,
                             float eps) {
  const int64_t hidden = x.size(1);
  const T* x_data = static_cast<const T*>(x.data_ptr());
  const T* r_data = static_cast<const T*>(residual.data_ptr());
  const T* w_data = static_cast<const T*>(weight.data_ptr());
  T* out_data = static_cast<T*>(out.data_ptr());
  T* sum_data = static_cast<T*>(sum.data_ptr());
  at::parallel_for(0, x.size(0), row_grain(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t row = t * hidden;
#pragma omp simd
      for (int64_t h = 0; h < hidden; ++h) {
        sum_data[row + h] = to<T>(f32(r_data[row + h]) + f32(x_data[row + h]));
      }
      rms_norm_row(sum_data + row, w_data, out_data + row, hidden, eps);
    }
  });
}

// gate_up: [T, 2I] -> silu(gate) * up, [T, I]; silu rounded to T, as F.silu(gate) * up.
template <typename T>
void silu_and_mul_impl(const at::Tensor& gate_up, at::Tensor& out) {
  const int64_t inter = out.size(1);
  const T* in_data = static_cast<const T*>(gate_up.data_ptr());
  T* out_data = static_cast<T*>(out.data_ptr());
  at::parallel_for(0, out.size(0), row_grain(2 * inter), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T* gate = in_data + t * 2 * inter;
      const T* up = gate + inter;
      T* row = out_data + t * inter;
#pragma omp simd
      for (int64_t i = 0; i < inter; ++i) {
        const float g = f32(gate[i]);
        const float silu = round_to<T>(g / (1.f + exp_approx(-g)));
        row[i] = to<T>(silu * f32(up[i]));
      }
    }
  });
}

// heads: [T, >= R, D] (token stride free, heads contiguous), cos and signed sin: [T, D]
// -> out [T, R, D] = heads * cos + roll(heads, D/2) * sin, each op rounded to T: the
// torch route of RotaryEmbedding.apply on the first R heads.
template <typename T>
void rotary_impl(const at::Tensor& heads, const at::Tensor& cos, const at::Tensor& sin,
                 at::Tensor& out) {
  const int64_t num_rotated = out.size(1);
  const int64_t dim = out.size(2);
  const int64_t half = dim / 2;
  const int64_t token_stride = heads.stride(0);
  const T* in_data = static_cast<const T*>(heads.data_ptr());
  const T* cos_data = static_cast<const T*>(cos.data_ptr());
  const T* sin_data = static_cast<const T*>(sin.data_ptr());
  T* out_data = static_cast<T*>(out.data_ptr());
  at::parallel_for(0, out.size(0), row_grain(num_rotated * dim), [&](int64_t begin,
                                                                       int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T* c = cos_data + t * dim;
      const T* s = sin_data + t * dim;
      for (int64_t h = 0; h < num_rotated; ++h) {
        const T* x = in_data + t * token_stride + h * dim;
        T* y = out_data + (t * num_rotated + h) * dim;
        for (int64_t offset : {half, -half}) {  // the first half reads the second, and back
          const int64_t first = offset > 0 ? 0 : half;
#pragma omp simd
          for (int64_t d = first; d < first + half; ++d) {
            const float a = round_to<T>(f32(x[d]) * f32(c[d]));
            const float b = round_to<T>(f32(x[d + offset]) * f32(s[d]));
            y[d] = to<T>(a + b);
          }
        }
      }
    }
  });
}

// k, v: [T, Hkv, D] (token stride free) -> the cache [pages, 2, P, Hkv, D] at slots [T]
// (slot = page * P + offset; a negative slot is a padding row and is skipped).
template <typename T>
void store_kv_impl(const at::Tensor& k, const at::Tensor& v, at::Tensor& cache,
                   const at::Tensor& slots) {
  const int64_t page_size = cache.size(2);
  const int64_t row = cache.size(3) * cache.size(4);
  const int64_t* slot_data = slots.data_ptr<int64_t>();
  const T* k_data = static_cast<const T*>(k.data_ptr());
  const T* v_data = static_cast<const T*>(v.data_ptr());
  T* cache_data = static_cast<T*>(cache.data_ptr());
  for (int64_t t = 0; t < k.size(0); ++t) {
    const int64_t slot = slot_data[t];
    if (slot < 0) continue;
    T* k_dst = cache_data + ((slot / page_size) * 2 * page_size + slot % page_size) * row;
    std::copy_n(k_data + t * k.stride(0), row, k_dst);
    std::copy_n(v_data + t * v.stride(0), row, k_dst + page_size * row);
  }
}

// x with |x| <= 448 -> its float8_e4m3fn byte, rounded to nearest even as torch's
// .to(torch.float8_e4m3fn) rounds: below 2^-6 (subnormal) on the grid of 2^-9, above by
// rounding float32's mantissa to 3 bits (a carry moves into the exponent) and rebiasing.
inline uint8_t fp8_bits(float x) {
  uint32_t raw;
  std::memcpy(&raw, &x, sizeof(raw));
  const uint32_t magnitude_bits = raw & 0x7fffffffu;
  float magnitude;
  std::memcpy(&magnitude, &magnitude_bits, sizeof(magnitude));
  const uint32_t rounded = magnitude_bits + 0x7ffffu + ((magnitude_bits >> 20) & 1u);
  const uint32_t normal = (rounded >> 20) - (120u << 3);
  const uint32_t subnormal = static_cast<uint32_t>(std::nearbyint(magnitude * 512.f));
  const uint32_t code = magnitude < 0x1p-6f ? subnormal : normal;
  return static_cast<uint8_t>(code | ((raw >> 24) & 0x80u));
}

// k, v: [T, Hkv, D] (token stride free) -> the fp8 cache [pages, 2, P, Hkv, D] (as bytes)
// and its scales [pages, 2, P, Hkv] at slots [T] (negative: skipped), one scale per head
// vector: the twin of toolkit/kv/cache_pool.py quantize_kv (scale = amax / 448, values =
// clamp(x * (448 / amax)) in float32, zero for an all-zero vector; torch evaluates
// 448 / amax as reciprocal(amax) * 448) and index_copy_.
template <typename T>
void store_kv_fp8_impl(const at::Tensor& k, const at::Tensor& v, at::Tensor& cache,
                       at::Tensor& scales, const at::Tensor& slots) {
  const int64_t page_size = cache.size(2);
  const int64_t num_kv_heads = cache.size(3);
  const int64_t dim = cache.size(4);
  const int64_t* slot_data = slots.data_ptr<int64_t>();
  uint8_t* cache_data = static_cast<uint8_t*>(cache.data_ptr());
  float* scale_data = scales.data_ptr<float>();
  for (int64_t t = 0; t < k.size(0); ++t) {
    const int64_t slot = slot_data[t];
    if (slot < 0) continue;
    const int64_t k_row = (slot / page_size) * 2 * page_size + slot % page_size;
    for (int64_t part = 0; part < 2; ++part) {  // K, then V page_size rows further
      const at::Tensor& src = part == 0 ? k : v;
      const int64_t cache_row = k_row + part * page_size;
      for (int64_t h = 0; h < num_kv_heads; ++h) {
        const T* x = static_cast<const T*>(src.data_ptr()) + t * src.stride(0) + h * dim;
        float amax = 0.f;
#pragma omp simd reduction(max : amax)
        for (int64_t d = 0; d < dim; ++d) amax = std::max(amax, std::fabs(f32(x[d])));
        const float inverse = amax > 0.f ? (1.f / amax) * 448.f : 0.f;  // as 448 / tensor
        scale_data[cache_row * num_kv_heads + h] = amax / 448.f;
        uint8_t* out = cache_data + (cache_row * num_kv_heads + h) * dim;
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) {
          out[d] = fp8_bits(std::min(std::max(f32(x[d]) * inverse, -448.f), 448.f));
        }
      }
    }
  }
}

constexpr int64_t kAlignFloats = 16;  // 64 bytes

inline int64_t padded(int64_t count) {
  return (count + kAlignFloats - 1) / kAlignFloats * kAlignFloats;
}

// Positions per range (rounded down to whole pages, at least one): each query row's
// positions are cut into ranges of this length, attended in parallel and merged. The cut
// depends on the row's own length alone.
constexpr int64_t kRangeLength = 128;

// Query rows of one request attended together (they share the K/V tiles of a range).
constexpr int64_t kRowBlock = 16;

// Consecutive query rows that read the same pages: first row, row count, longest length.
struct RowBlock {
  int64_t first_row;
  int64_t num_rows;
  int64_t max_len;
};

typedef float Vec8 __attribute__((vector_size(32)));       // 8 float32 lanes
typedef int32_t Lanes8 __attribute__((vector_size(32)));    // a shuffle of two Vec8
typedef uint16_t Bits8 __attribute__((vector_size(16)));    // 8 bfloat16 values
typedef uint32_t Wide8 __attribute__((vector_size(32)));

// Eight elements of p as float32 lanes; the _part forms read n < 8 and zero the rest.
inline Vec8 load8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline Vec8 load8(const uint16_t* p) {
#ifdef __AVX2__  // one widening load (GCC splits the generic form below into two halves)
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i widened = _mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16);
#else
  Bits8 bits;
  std::memcpy(&bits, p, sizeof(bits));
  const Wide8 widened = __builtin_convertvector(bits, Wide8) << 16;
#endif
  Vec8 v;
  std::memcpy(&v, &widened, sizeof(v));
  return v;
}

// An fp8 cache element (float8_e4m3fn: sign, 4 exponent bits of bias 7, 3 mantissa bits;
// no infinities): its byte.
struct Fp8 {
  uint8_t bits;
};
typedef uint8_t Bytes8 __attribute__((vector_size(8)));

// 2^-8 times eight fp8 values, exactly (float16 holds every e4m3 value times 2^-8;
// attend_block puts the 2^8 back into the scales). Without F16C the 7 magnitude bits placed
// at float32's exponent/mantissa boundary read as 2^-120 times the value (e4m3's
// subnormals land on float32's); one exact multiply by 2^112 rebiases, then the sign is
// put back.
constexpr float kFp8LoadScale = 256.f;
inline Vec8 load8(const Fp8* p) {
#if defined(__AVX2__) && defined(__F16C__)
  // Each byte to the top of a 16-bit lane, shifted right once with its sign repeated and
  // that repeat cleared: float16 bits of 2^-8 times the value (subnormals included).
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128i high = _mm_unpacklo_epi8(_mm_setzero_si128(), bytes);
  const __m128i half = _mm_and_si128(_mm_srai_epi16(high, 1), _mm_set1_epi16(-16385));
  const __m256 value = _mm256_cvtph_ps(half);
  Vec8 v;
  std::memcpy(&v, &value, sizeof(v));
  return v;
#else
  Bytes8 bytes;
  std::memcpy(&bytes, p, sizeof(bytes));
  const Wide8 wide = __builtin_convertvector(bytes, Wide8);
  const Wide8 magnitude = (wide & 0x7fu) << 20;
  Vec8 v;
  std::memcpy(&v, &magnitude, sizeof(v));
  v *= 0x1p112f;
  Wide8 bits;
  std::memcpy(&bits, &v, sizeof(bits));
  bits |= (wide & 0x80u) << 24;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
#endif
}

// Sixteen elements of p as float32 lanes: two load8s, or for bfloat16 one widening load
// with AVX-512.
typedef float Vec16 __attribute__((vector_size(64)));

template <typename T>
inline Vec16 load16(const T* p) {
  const Vec8 halves[2] = {load8(p), load8(p + 8)};
  Vec16 v;
  std::memcpy(&v, halves, sizeof(v));
  return v;
}

#ifdef __AVX512F__
template <>
inline Vec16 load16(const uint16_t* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m512i widened = _mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16);
  Vec16 v;
  std::memcpy(&v, &widened, sizeof(v));
  return v;
}
#endif

template <typename T>
inline Vec8 load8_part(const T* p, int64_t n) {
  T part[8] = {};
  std::copy_n(p, n, part);
  return load8(part);
}

// Adjacent lanes of a and of b summed, interleaved: (a0+a1, b0+b1, a2+a3, b2+b3, ...); then
// the same for pairs of pairs and for halves.
inline Vec8 pair_sums(Vec8 a, Vec8 b) {
  return __builtin_shuffle(a, b, Lanes8{0, 8, 2, 10, 4, 12, 6, 14}) +
         __builtin_shuffle(a, b, Lanes8{1, 9, 3, 11, 5, 13, 7, 15});
}
inline Vec8 quad_sums(Vec8 a, Vec8 b) {
  return __builtin_shuffle(a, b, Lanes8{0, 1, 8, 9, 4, 5, 12, 13}) +
         __builtin_shuffle(a, b, Lanes8{2, 3, 10, 11, 6, 7, 14, 15});
}
inline Vec8 half_sums(Vec8 a, Vec8 b) {
  return __builtin_shuffle(a, b, Lanes8{0, 1, 2, 3, 8, 9, 10, 11}) +
         __builtin_shuffle(a, b, Lanes8{4, 5, 6, 7, 12, 13, 14, 15});
}

// Lane j of the result: the 8 lanes of acc[j] summed as ((0+1)+(2+3))+((4+5)+(6+7)), the
// same tree for every j.
inline Vec8 lane_sums(const Vec8* acc) {
  return half_sums(quad_sums(pair_sums(acc[0], acc[1]), pair_sums(acc[2], acc[3])),
                   quad_sums(pair_sums(acc[4], acc[5]), pair_sums(acc[6], acc[7])));
}

// Positions whose K rows are requested ahead of their use (and V rows as their K is read):
// scattered over pages, they make too short a run for the hardware prefetchers. Without it
// decode attention waited on memory for most of its time; with it, over scattered pages,
// 64 rows of 292 positions take 1/3 of the time (prefetching every kv head's rows at once,
// or 8 positions ahead, was slower). Requested into L2 (prefetcht1), not L1: on an AMD EPYC
// Zen 4 that halved the time again (L1's few miss buffers had limited the requests in
// flight); 16 or 64 positions ahead were slower there.
constexpr int64_t kPrefetchAhead = 32;

// Requests the elements [d0, d0 + width) of rows[0, count) into L2.
template <typename T>
inline void prefetch_rows(const T* const* rows, int64_t count, int64_t d0, int64_t width) {
  for (int64_t i = 0; i < count; ++i) {
    const char* first = reinterpret_cast<const char*>(rows[i] + d0);
    for (int64_t b = 0; b < static_cast<int64_t>(width * sizeof(T)); b += 64) {
      __builtin_prefetch(first + b, 0, 2);  // prefetcht1: into L2
    }
  }
}

// The eight keys from position l on (a short last group repeats its last key) into k, the
// keys kPrefetchAhead positions on and these positions' values requested: one step of dots.
template <typename T>
inline void key_group(const T* const* keys, const T* const* values, int64_t l, int64_t count,
                      int64_t dim, const T* (&k)[8]) {
  for (int64_t j = 0; j < 8; ++j) k[j] = keys[std::min(l + j, count - 1)];
  prefetch_rows(keys + l + kPrefetchAhead, std::min<int64_t>(8, count - l - kPrefetchAhead),
                0, dim);
  prefetch_rows(values + l, std::min<int64_t>(8, count - l), 0, dim);
}

// scores[g * score_stride + l] = q[g] . keys[l][:dim] for g < G, l < count, written up to
// a multiple of 8 (q [G, stride] float32, zero past dim; keys, values: one pointer per
// position into the cache, the values only requested for weighted_sums). Eight keys at a
// time share each load of q, and the G heads each load of a key; every dot is the same
// sequence of lane-wise multiply-adds over d and the same lane tree whatever its
// neighbours (a short last group repeats its last key), so its bits depend on q and that
// key alone.
template <int G, typename T>
inline void dots(const float* q, int64_t stride, const T* const* keys, const T* const* values,
                 int64_t dim, int64_t count, float* scores, int64_t score_stride) {
  prefetch_rows(keys, std::min(count, kPrefetchAhead), 0, dim);
  const int64_t whole = dim / 8 * 8;
  for (int64_t l = 0; l < count; l += 8) {
    const T* k[8];
    key_group(keys, values, l, count, dim, k);
    Vec8 acc[G][8] = {};
    for (int64_t d = 0; d < whole; d += 8) {
      Vec8 qd[G];
      for (int g = 0; g < G; ++g) qd[g] = load8(q + g * stride + d);
      for (int64_t j = 0; j < 8; ++j) {
        const Vec8 kd = load8(k[j] + d);
        for (int g = 0; g < G; ++g) acc[g][j] += qd[g] * kd;
      }
    }
    if (whole < dim) {
      Vec8 qd[G];
      for (int g = 0; g < G; ++g) qd[g] = load8(q + g * stride + whole);
      for (int64_t j = 0; j < 8; ++j) {
        const Vec8 kd = load8_part(k[j] + whole, dim - whole);
        for (int g = 0; g < G; ++g) acc[g][j] += qd[g] * kd;
      }
    }
    for (int g = 0; g < G; ++g) {
      const Vec8 sums = lane_sums(acc[g]);
      std::memcpy(scores + g * score_stride + l, &sums, sizeof(sums));
    }
  }
}

#if defined(__AVX512BF16__) && defined(__AVX512VL__)

// dots for bfloat16 queries and keys (dim a multiple of 16) on AVX-512 BF16: vdpbf16ps
// multiplies them as they are (no widening) and adds each pair of products into a float32
// lane, 16 dimensions of 8 keys per step; then the same lane tree, and the sums times
// scale (the queries are not pre-scaled). q: [G, q_head_stride] bfloat16.
template <int G>
inline void dots_bf16(const uint16_t* q, int64_t q_head_stride, const uint16_t* const* keys,
                      const uint16_t* const* values, int64_t dim, int64_t count, float scale,
                      float* scores, int64_t score_stride) {
  prefetch_rows(keys, std::min(count, kPrefetchAhead), 0, dim);
  for (int64_t l = 0; l < count; l += 8) {
    const uint16_t* k[8];
    key_group(keys, values, l, count, dim, k);
    __m256 acc[G][8];
    for (int g = 0; g < G; ++g) {
      for (int j = 0; j < 8; ++j) acc[g][j] = _mm256_setzero_ps();
    }
    for (int64_t d = 0; d < dim; d += 16) {
      __m256bh qd[G];
      for (int g = 0; g < G; ++g) {
        qd[g] = (__m256bh)_mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(q + g * q_head_stride + d));
      }
      for (int64_t j = 0; j < 8; ++j) {
        const __m256bh kd =
            (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k[j] + d));
        for (int g = 0; g < G; ++g) acc[g][j] = _mm256_dpbf16_ps(acc[g][j], qd[g], kd);
      }
    }
    for (int g = 0; g < G; ++g) {
      Vec8 lanes[8];
      std::memcpy(lanes, acc[g], sizeof(lanes));
      const Vec8 sums = lane_sums(lanes) * scale;
      std::memcpy(scores + g * score_stride + l, &sums, sizeof(sums));
    }
  }
}
#endif

// out[g * stride + d] = sum over l < count of weights[g * weight_stride + l] * values[l][d]
// for g < G and the columns [d0, d0 + 8 * V) (width of them read, the rest zero; width <
// 8 * V only when V is 1), each value loaded once for the G heads, l in order.
template <int G, int V, typename T>
inline void weighted_columns(const float* weights, int64_t weight_stride,
                             const T* const* values, int64_t d0, int64_t width, int64_t count,
                             float* out, int64_t stride) {
  Vec8 acc[G][V] = {};
  for (int64_t l = 0; l < count; ++l) {
    prefetch_rows(values + l + kPrefetchAhead, l + kPrefetchAhead < count, d0, width);
    Vec8 vd[V];
    if (width == 8 * V) {
      for (int i = 0; i < V; ++i) vd[i] = load8(values[l] + d0 + 8 * i);
    } else {
      vd[0] = load8_part(values[l] + d0, width);
    }
    for (int g = 0; g < G; ++g) {
      const float w = weights[g * weight_stride + l];
      for (int i = 0; i < V; ++i) acc[g][i] += w * vd[i];
    }
  }
  for (int g = 0; g < G; ++g) std::memcpy(out + g * stride + d0, acc[g], sizeof(acc[g]));
}

// weighted_columns on 16-lane vectors, for the columns [d0, d0 + 16 * V): each column's
// sum takes the same steps in the same order, so the same bits, in half the instructions.
template <int G, int V, typename T>
inline void weighted_columns16(const float* weights, int64_t weight_stride,
                               const T* const* values, int64_t d0, int64_t count, float* out,
                               int64_t stride) {
  Vec16 acc[G][V] = {};
  for (int64_t l = 0; l < count; ++l) {
    prefetch_rows(values + l + kPrefetchAhead, l + kPrefetchAhead < count, d0, 16 * V);
    Vec16 vd[V];
    for (int i = 0; i < V; ++i) vd[i] = load16(values[l] + d0 + 16 * i);
    for (int g = 0; g < G; ++g) {
      const float w = weights[g * weight_stride + l];
      for (int i = 0; i < V; ++i) acc[g][i] += w * vd[i];
    }
  }
  for (int g = 0; g < G; ++g) std::memcpy(out + g * stride + d0, acc[g], sizeof(acc[g]));
}

// weighted_columns over all of dim: 64 columns at a time, then 16, then 8, then what
// remains.
template <int G, typename T>
inline void weighted_sums(const float* weights, int64_t weight_stride, const T* const* values,
                          int64_t dim, int64_t count, float* out, int64_t stride) {
  int64_t d0 = 0;
  for (; d0 + 64 <= dim; d0 += 64) {
    weighted_columns16<G, 4>(weights, weight_stride, values, d0, count, out, stride);
  }
  for (; d0 + 16 <= dim; d0 += 16) {
    weighted_columns16<G, 1>(weights, weight_stride, values, d0, count, out, stride);
  }
  for (; d0 < dim; d0 += 8) {
    weighted_columns<G, 1>(weights, weight_stride, values, d0, std::min<int64_t>(8, dim - d0),
                           count, out, stride);
  }
}

// The largest of scores[0, count), read up to a multiple of 8 (dots repeats the last
// score there).
inline float max_of(const float* scores, int64_t count) {
  Vec8 top = load8(scores);
  for (int64_t l = 8; l < count; l += 8) {
    const Vec8 next = load8(scores + l);
    top = top > next ? top : next;
  }
  float max_score = top[0];
  for (int i = 1; i < 8; ++i) max_score = std::max(max_score, top[i]);
  return max_score;
}

// The heads of a GQA group in bundles of at most 3 (24 accumulators in dots):
// fn(first head, the bundle's dots, its weighted_sums).
template <typename C, typename Fn>
inline void for_head_bundles(int64_t group, Fn fn) {
  for (int64_t g = 0; g < group; g += 3) {
    switch (std::min<int64_t>(3, group - g)) {
      case 3: fn(g, dots<3, C>, weighted_sums<3, C>); break;
      case 2: fn(g, dots<2, C>, weighted_sums<2, C>); break;
      default: fn(g, dots<1, C>, weighted_sums<1, C>); break;
    }
  }
}

// The scores of a row's G heads by dots_bf16, where it applies (bfloat16 queries and
// cache, dim a multiple of 16, a build with AVX-512 BF16); returns whether it did (else the
// caller takes dots).
template <typename T, typename C>
inline bool bf16_scores([[maybe_unused]] const T* q_row, [[maybe_unused]] int64_t q_head_stride,
                        [[maybe_unused]] const C* const* keys,
                        [[maybe_unused]] const C* const* values, [[maybe_unused]] int64_t group,
                        [[maybe_unused]] int64_t dim, [[maybe_unused]] int64_t count,
                        [[maybe_unused]] float scale, [[maybe_unused]] float* scores,
                        [[maybe_unused]] int64_t score_stride) {
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
  if constexpr (std::is_same_v<T, uint16_t> && std::is_same_v<C, uint16_t>) {
    if (dim % 16 != 0) return false;
    for (int64_t g = 0; g < group; g += 3) {
      const auto dots_of = group - g >= 3 ? dots_bf16<3> : group - g == 2 ? dots_bf16<2>
                                                                          : dots_bf16<1>;
      dots_of(q_row + g * q_head_stride, q_head_stride, keys, values, dim, count, scale,
              scores + g * score_stride, score_stride);
    }
    return true;
  }
#endif
  return false;
}

// Attention of the query rows [block.first_row, + num_rows) for one kv head over the
// positions [first, first + range_length) of their pages (each row up to its own length,
// and from its window's start when window_left >= 0: a row of length len sees the
// positions [len - 1 - window_left, len)). soft_cap > 0 caps each scaled score s to
// soft_cap * tanh(s / soft_cap). A range of a row that lies wholly before its window
// gets an empty partial (max score -inf, weight 0), which the merge ignores.
// K and V (of type C: T, or Fp8 with kv_scales, one float32 per position and kv head laid
// out as the cache without its D axis) are read in place, converted to float32 in
// registers; an fp8 key's scale multiplies its dot product, a value's scale its softmax
// weight after the weights' sum is taken. A row's scores are dot
// products over D, each computed by the same vector loop (dots), and its softmax and sum
// of V run over its own positions in order, so its partial (per head [D + 2]: the sum of
// exp(score - max) * V, the max score, the sum of exp(score - max)) depends on that row
// and its positions alone: prefill, chunked prefill, drafts and the decode of one
// position give the same bits.
template <typename T, typename C>
void attend_block(const T* q, int64_t q_row_stride, int64_t q_head_stride, const C* cache,
                  const float* kv_scales, const int32_t* pages, const int32_t* lens,
                  const RowBlock& block,
                  int64_t first, int64_t range_length, int64_t page_size, int64_t num_kv_heads,
                  int64_t kv_head, int64_t group, int64_t dim, float scale,
                  int64_t window_left, float soft_cap, float* const* row_partials,
                  std::vector<float>& buffer, std::vector<const C*>& positions) {
  const int64_t row = num_kv_heads * dim;  // one position's K (or V) over all kv heads
  const int64_t last = std::min(block.max_len, first + range_length);
  const int64_t length = last - first, stride = padded(dim);
  auto window_start = [&](int64_t r) {  // the first position row r attends in this range
    return window_left < 0 ? first : std::max<int64_t>(first, lens[r] - 1 - window_left);
  };
  const int64_t score_stride = padded(length);
  buffer.resize(2 * group * stride + group * score_stride + 2 * score_stride);
  float* q_f = buffer.data();             // [G, stride], pre-scaled, zero past D
  float* sums = q_f + group * stride;     // [G, stride]
  float* scores = sums + group * stride;  // [G, score_stride]
  float* key_scales = scores + group * score_stride;  // [length] (kv_scales only)
  float* value_scales = key_scales + score_stride;    // [length]
  positions.resize(2 * length);
  const C** keys = positions.data();      // [length]: this head's K row of each position
  const C** values = keys + length;       // [length]
  for (int64_t start = first; start < last; start += page_size) {  // first: a page start
    const int64_t page_row = pages[start / page_size] * 2 * page_size;
    const C* k_rows = cache + page_row * row + kv_head * dim;
    for (int64_t i = 0; i < std::min(page_size, last - start); ++i) {
      keys[start - first + i] = k_rows + i * row;
      values[start - first + i] = k_rows + (page_size + i) * row;
      if (kv_scales != nullptr) {
        const float* k_scale = kv_scales + (page_row + i) * num_kv_heads + kv_head;
        key_scales[start - first + i] = *k_scale * kFp8LoadScale;
        value_scales[start - first + i] = k_scale[page_size * num_kv_heads] * kFp8LoadScale;
      }
    }
  }
  for (int64_t r = 0; r < block.num_rows; ++r) {
    if (lens[r] <= first) continue;  // past this row's length: not one of its ranges
    const int64_t lo = window_start(r);
    const int64_t count = std::min<int64_t>(lens[r], last) - lo;
    if (count <= 0) {  // wholly before the row's window
      for (int64_t g = 0; g < group; ++g) {
        float* head = row_partials[r] + g * (dim + 2);
        std::fill(head, head + dim, 0.f);
        head[dim] = -std::numeric_limits<float>::infinity();
        head[dim + 1] = 0.f;
      }
      continue;
    }
    const C* const* row_keys = keys + (lo - first);
    const C* const* row_values = values + (lo - first);
    const T* q_row = q + r * q_row_stride;
    if (!bf16_scores(q_row, q_head_stride, row_keys, row_values, group, dim, count, scale,
                     scores, score_stride)) {
      for (int64_t g = 0; g < group; ++g) {
        float* qg = q_f + g * stride;
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) qg[d] = f32(q_row[g * q_head_stride + d]) * scale;
        std::fill(qg + dim, qg + stride, 0.f);
      }
      for_head_bundles<C>(group, [&](int64_t g, auto dots_of, auto) {
        dots_of(q_f + g * stride, stride, row_keys, row_values, dim, count,
                scores + g * score_stride, score_stride);
      });
    }
    const float* row_key_scales = key_scales + (lo - first);
    const float* row_value_scales = value_scales + (lo - first);
    for (int64_t g = 0; g < group; ++g) {
      float* head_scores = scores + g * score_stride;
      if (kv_scales != nullptr) {  // the padding past count repeats the last key, and scale
        for (int64_t l = 0; l < (count + 7) / 8 * 8; ++l) {
          head_scores[l] *= row_key_scales[std::min(l, count - 1)];
        }
      }
      if (soft_cap > 0.f) {
        for (int64_t l = 0; l < (count + 7) / 8 * 8; ++l) {
          head_scores[l] = soft_cap * std::tanh(head_scores[l] / soft_cap);
        }
      }
      const float max_score = max_of(head_scores, count);
      float total = 0.f;
#pragma omp simd reduction(+ : total)
      for (int64_t l = 0; l < count; ++l) {
        head_scores[l] = exp_approx(head_scores[l] - max_score);
        total += head_scores[l];
      }
      float* head = row_partials[r] + g * (dim + 2);
      head[dim] = max_score;
      head[dim + 1] = total;
      if (kv_scales != nullptr) {
#pragma omp simd
        for (int64_t l = 0; l < count; ++l) head_scores[l] *= row_value_scales[l];
      }
    }
    for_head_bundles<C>(group, [&](int64_t g, auto, auto weighted_sums_of) {
      weighted_sums_of(scores + g * score_stride, score_stride, row_values, dim, count,
                       sums + g * stride, stride);
    });
    for (int64_t g = 0; g < group; ++g) {
      std::copy_n(sums + g * stride, dim, row_partials[r] + g * (dim + 2));
    }
  }
}

// The partials of one row's num_splits ranges (split_stride floats apart) -> its G output
// heads [G, D]; acc: scratch of D floats.
template <typename T>
void merge_partials(const float* partials, int64_t num_splits, int64_t split_stride,
                    int64_t group, int64_t dim, T* out, std::vector<float>& acc) {
  for (int64_t g = 0; g < group; ++g) {
    float max_score = -std::numeric_limits<float>::infinity();
    for (int64_t s = 0; s < num_splits; ++s) {
      max_score = std::max(max_score, partials[s * split_stride + g * (dim + 2) + dim]);
    }
    float total = 0.f;
    acc.assign(dim, 0.f);
    for (int64_t s = 0; s < num_splits; ++s) {
      const float* head = partials + s * split_stride + g * (dim + 2);
      const float weight = std::exp(head[dim] - max_score);
      total += weight * head[dim + 1];
      for (int64_t d = 0; d < dim; ++d) acc[d] += weight * head[d];
    }
    for (int64_t d = 0; d < dim; ++d) out[g * dim + d] = to<T>(acc[d] / total);
  }
}

// Rows that read the same pages (same page_starts entry), in order, kRowBlock at most.
std::vector<RowBlock> row_blocks(const int32_t* page_starts, const int32_t* lens,
                                 int64_t num_rows) {
  std::vector<RowBlock> blocks;
  for (int64_t r = 0; r < num_rows; ++r) {
    if (blocks.empty() || page_starts[r] != page_starts[blocks.back().first_row] ||
        blocks.back().num_rows == kRowBlock) {
      blocks.push_back({r, 0, 0});
    }
    blocks.back().num_rows += 1;
    blocks.back().max_len = std::max<int64_t>(blocks.back().max_len, lens[r]);
  }
  return blocks;
}

template <typename T, typename C>
void decode_attention_impl(const at::Tensor& q, const at::Tensor& cache,
                           const float* kv_scales, const at::Tensor& kv_indices,
                           const at::Tensor& page_starts,
                           const at::Tensor& seq_lens, at::Tensor& out, float scale,
                           int64_t window_left, float soft_cap) {
  const int64_t num_rows = q.size(0);
  const int64_t num_qo_heads = q.size(1);
  const int64_t dim = q.size(2);
  const int64_t num_kv_heads = cache.size(3);
  const int64_t page_size = cache.size(2);
  const int64_t group = num_qo_heads / num_kv_heads;
  const T* q_data = static_cast<const T*>(q.data_ptr());
  const C* cache_data = static_cast<const C*>(cache.data_ptr());
  const int32_t* index_data = kv_indices.data_ptr<int32_t>();
  const int32_t* start_data = page_starts.data_ptr<int32_t>();
  const int32_t* len_data = seq_lens.data_ptr<int32_t>();
  T* out_data = static_cast<T*>(out.data_ptr());
  const int64_t range_length = std::max<int64_t>(1, kRangeLength / page_size) * page_size;
  std::vector<int64_t> first_range(num_rows + 1, 0);  // row r: its ranges' offset
  for (int64_t r = 0; r < num_rows; ++r) {
    first_range[r + 1] = first_range[r] + (len_data[r] + range_length - 1) / range_length;
  }
  const std::vector<RowBlock> blocks = row_blocks(start_data, len_data, num_rows);
  std::vector<int64_t> first_item(blocks.size() + 1, 0);  // block b: its ranges' offset
  for (size_t b = 0; b < blocks.size(); ++b) {
    first_item[b + 1] = first_item[b] + (blocks[b].max_len + range_length - 1) / range_length;
  }
  const int64_t partial_size = group * (dim + 2);
  // [row range, Hkv, G, D + 2]; not zeroed: the item of each row range writes its entries
  // (attend_block) before the merge reads them
  std::unique_ptr<float[]> partials(new float[first_range[num_rows] * num_kv_heads *
                                              partial_size]);
  at::parallel_for(0, first_item.back() * num_kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer;
    std::vector<const C*> positions;
    std::vector<float*> row_partials(kRowBlock);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t h = item % num_kv_heads;
      const int64_t block_range = item / num_kv_heads;
      const int64_t b = std::upper_bound(first_item.begin(), first_item.end(), block_range) -
                        first_item.begin() - 1;
      const RowBlock& block = blocks[b];
      const int64_t range = block_range - first_item[b];
      for (int64_t r = 0; r < block.num_rows; ++r) {
        const int64_t row_range = first_range[block.first_row + r] + range;
        row_partials[r] = partials.get() + (row_range * num_kv_heads + h) * partial_size;
      }
      attend_block(q_data + block.first_row * q.stride(0) + h * group * q.stride(1),
                   q.stride(0), q.stride(1), cache_data, kv_scales,
                   index_data + start_data[block.first_row], len_data + block.first_row,
                   block, range * range_length, range_length, page_size, num_kv_heads, h,
                   group, dim, scale, window_left, soft_cap, row_partials.data(), buffer,
                   positions);
    }
  });
  at::parallel_for(0, num_rows * num_kv_heads, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> acc;
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t r = pair / num_kv_heads;
      const int64_t h = pair % num_kv_heads;
      merge_partials(partials.get() + (first_range[r] * num_kv_heads + h) * partial_size,
                     first_range[r + 1] - first_range[r], num_kv_heads * partial_size, group,
                     dim, out_data + (r * num_qo_heads + h * group) * dim, acc);
    }
  });
}

// Whether any lane of mask is set.
inline bool any_lane(Lanes8 mask) {
  for (int i = 0; i < 8; ++i) {
    if (mask[i] != 0) return true;
  }
  return false;
}

// The index of the first maximum of row[0, n), n > 0, as torch.argmax picks it: the first
// NaN when there is one, else the first element equal to the maximum (-0 equal to +0). One
// pass of 8-lane maxima (and NaN lanes), then blocks of 64 compared at once until one
// holds it.
inline int64_t argmax_row(const float* row, int64_t n) {
  const int64_t whole = n / 8 * 8;
  const float lowest = -std::numeric_limits<float>::infinity();
  Vec8 top = {lowest, lowest, lowest, lowest, lowest, lowest, lowest, lowest};
  Lanes8 nan_lanes = {};
  for (int64_t k = 0; k < whole; k += 8) {
    const Vec8 v = load8(row + k);
    top = v > top ? v : top;
    nan_lanes |= v != v;
  }
  float best = lowest;
  for (int i = 0; i < 8; ++i) best = std::max(best, top[i]);
  bool has_nan = any_lane(nan_lanes);
  for (int64_t k = whole; k < n; ++k) {
    best = std::max(best, row[k]);
    has_nan |= row[k] != row[k];
  }
  // What is sought, lane-wise for a Vec8 (a Lanes8 mask) or for one float
  const auto wanted = [&](auto x) { return has_nan ? x != x : x == best; };
  int64_t k = 0;
  for (; k + 64 <= whole; k += 64) {
    Lanes8 hits = {};
    for (int64_t j = k; j < k + 64; j += 8) hits |= wanted(load8(row + j));
    if (any_lane(hits)) break;
  }
  for (; k < n; ++k) {
    if (wanted(row[k])) return k;
  }
  return 0;  // not reached: some element is the maximum or NaN
}

// x: [T, K] -> codes int8 [T, K], scales float32 [T]: per-row symmetric int8, the twin of
// toolkit/kernels/int8_rows.py quantize_rows_ref (scale = amax(|x[t]|) / 127, 1 for a zero
// row; code = round-half-even(x / scale) clamped to [-127, 127]).
template <typename T>
void quantize_rows_impl(const at::Tensor& x, at::Tensor& codes, at::Tensor& scales) {
  const int64_t width = x.size(1);
  const T* x_data = static_cast<const T*>(x.data_ptr());
  int8_t* code_data = codes.data_ptr<int8_t>();
  float* scale_data = scales.data_ptr<float>();
  at::parallel_for(0, x.size(0), row_grain(width), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T* row = x_data + t * width;
      float amax = 0.f;
#pragma omp simd reduction(max : amax)
      for (int64_t k = 0; k < width; ++k) {
        amax = std::max(amax, std::fabs(f32(row[k])));
      }
      const float scale = amax > 0.f ? amax / 127.f : 1.f;
      scale_data[t] = scale;
      int8_t* out = code_data + t * width;
#pragma omp simd
      for (int64_t k = 0; k < width; ++k) {
        const float q = std::nearbyint(f32(row[k]) / scale);
        out[k] = static_cast<int8_t>(std::min(std::max(q, -127.f), 127.f));
      }
    }
  });
}

// One row of dequantize_rows: acc int32 [width] -> dst [width] in T, (float(acc) *
// row_scale) * col_scales (+ bias) in float32, then rounded to T; prod: float32 [width]
// scratch. The products go through prod before the bias is added, so that no compiler
// contracts them into an FMA (the twin rounds the product first).
template <typename T>
void dequantize_row(const int32_t* acc, float row_scale, const float* col_scales,
                    const T* bias, T* dst, int64_t width, float* prod) {
#pragma omp simd
  for (int64_t n = 0; n < width; ++n) {
    const float scaled = static_cast<float>(acc[n]) * row_scale;
    prod[n] = scaled * col_scales[n];
  }
  if (bias == nullptr) {
#pragma omp simd
    for (int64_t n = 0; n < width; ++n) dst[n] = to<T>(prod[n]);
  } else {
    asm volatile("" : : "r"(prod) : "memory");  // keep the products stored as float32
#pragma omp simd
    for (int64_t n = 0; n < width; ++n) dst[n] = to<T>(prod[n] + f32(bias[n]));
  }
}

// acc int32 [T, N], row_scales float32 [T], col_scales float32 [N], bias (T dtype) [N] or
// none -> out [T, N] in T, row by row (dequantize_row); the twin of int8_rows.py
// dequantize_rows_ref.
template <typename T>
void dequantize_rows_impl(const at::Tensor& acc, const at::Tensor& row_scales,
                          const at::Tensor& col_scales, const at::Tensor* bias,
                          at::Tensor& out) {
  const int64_t width = acc.size(1);
  const int32_t* acc_data = acc.data_ptr<int32_t>();
  const float* row_data = row_scales.data_ptr<float>();
  const float* col_data = col_scales.data_ptr<float>();
  const T* bias_data = bias == nullptr ? nullptr : static_cast<const T*>(bias->data_ptr());
  T* out_data = static_cast<T*>(out.data_ptr());
  at::parallel_for(0, acc.size(0), row_grain(width), [&](int64_t begin, int64_t end) {
    std::vector<float> product(width);
    for (int64_t t = begin; t < end; ++t) {
      dequantize_row(acc_data + t * width, row_data[t], col_data, bias_data,
                     out_data + t * width, width, product.data());
    }
  });
}

// The LoRA delta of each row through its own adapter slot (Punica's BGMV), the twin of
// toolkit/kernels/lora_bgmv.py lora_delta_ref: x [n, K], a [S, Q, K], bt [S, Q, N] (B
// transposed, scaling folded in), slots int64 [n] -> out [n, N] in x's dtype, where
// shrunk = a[s] x in float32 and out = bt[s]^T shrunk in float32, rounded once. A row is
// computed by the same loops whatever the other rows, so its bits depend on it alone.
template <typename T>
void lora_bgmv_impl(const at::Tensor& x, const at::Tensor& a, const at::Tensor& bt,
                    const at::Tensor& slots, at::Tensor& out) {
  const int64_t in = x.size(1), ranks = a.size(1), width = bt.size(2);
  const T* x_data = static_cast<const T*>(x.data_ptr());
  const T* a_data = static_cast<const T*>(a.data_ptr());
  const T* b_data = static_cast<const T*>(bt.data_ptr());
  const int64_t* slot_data = slots.data_ptr<int64_t>();
  T* out_data = static_cast<T*>(out.data_ptr());
  at::parallel_for(0, x.size(0), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row_f(in), shrunk(ranks), acc(width);
    for (int64_t t = begin; t < end; ++t) {
      const T* row = x_data + t * in;
#pragma omp simd
      for (int64_t k = 0; k < in; ++k) row_f[k] = f32(row[k]);
      const T* a_slot = a_data + slot_data[t] * ranks * in;
      for (int64_t q = 0; q < ranks; ++q) {
        const T* a_row = a_slot + q * in;
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t k = 0; k < in; ++k) sum += f32(a_row[k]) * row_f[k];
        shrunk[q] = sum;
      }
      std::fill(acc.begin(), acc.end(), 0.f);
      const T* b_slot = b_data + slot_data[t] * ranks * width;
      for (int64_t q = 0; q < ranks; ++q) {
        const T* b_row = b_slot + q * width;
        const float weight = shrunk[q];
#pragma omp simd
        for (int64_t n = 0; n < width; ++n) acc[n] += weight * f32(b_row[n]);
      }
      T* dst = out_data + t * width;
#pragma omp simd
      for (int64_t n = 0; n < width; ++n) dst[n] = to<T>(acc[n]);
    }
  });
}

}  // namespace

namespace toolkit_ops {

// x with its last two axes dense ([.., H, D] rows of H * D values), copying if need be.
at::Tensor dense_rows(const at::Tensor& x) {
  const bool dense = x.stride(-1) == 1 && x.stride(-2) == x.size(-1);
  return dense ? x : x.contiguous();
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor out = at::empty_like(x);
  TOOLKIT_DISPATCH(x.scalar_type(), [&] { rms_norm_impl<scalar_t>(x, weight, out, eps); });
  return out;
}

std::tuple<at::Tensor, at::Tensor> fused_add_rms_norm(const at::Tensor& x,
                                                      const at::Tensor& residual,
                                                      const at::Tensor& weight, double eps) {
  at::Tensor out = at::empty_like(x);
  at::Tensor sum = at::empty_like(x);
  TOOLKIT_DISPATCH(x.scalar_type(), [&] {
    fused_add_rms_norm_impl<scalar_t>(x, residual, weight, out, sum, eps);
  });
  return {out, sum};
}

at::Tensor silu_and_mul(const at::Tensor& gate_up) {
  at::Tensor out = at::empty({gate_up.size(0), gate_up.size(1) / 2}, gate_up.options());
  TOOLKIT_DISPATCH(gate_up.scalar_type(), [&] { silu_and_mul_impl<scalar_t>(gate_up, out); });
  return out;
}

at::Tensor rotary(const at::Tensor& heads, const at::Tensor& cos, const at::Tensor& sin,
                  int64_t num_rotated) {
  at::Tensor out = at::empty({heads.size(0), num_rotated, heads.size(2)}, heads.options());
  TOOLKIT_DISPATCH(heads.scalar_type(), [&] { rotary_impl<scalar_t>(heads, cos, sin, out); });
  return out;
}

void store_kv(const at::Tensor& k, const at::Tensor& v, at::Tensor& cache,
              const at::Tensor& slots) {
  TORCH_CHECK(k.scalar_type() == cache.scalar_type() && v.scalar_type() == cache.scalar_type(),
              "store_kv: k, v and the cache must share a dtype");
  TORCH_CHECK(cache.is_contiguous() && slots.scalar_type() == at::kLong, "store_kv: layout");
  const at::Tensor k_rows = dense_rows(k), v_rows = dense_rows(v);
  TOOLKIT_DISPATCH(k.scalar_type(),
                   [&] { store_kv_impl<scalar_t>(k_rows, v_rows, cache, slots); });
}

void store_kv_fp8(const at::Tensor& k, const at::Tensor& v, at::Tensor& cache,
                  at::Tensor& scales, const at::Tensor& slots) {
  TORCH_CHECK(k.scalar_type() == v.scalar_type() &&
                  cache.scalar_type() == at::kFloat8_e4m3fn && cache.is_contiguous() &&
                  scales.scalar_type() == at::kFloat && scales.is_contiguous() &&
                  slots.scalar_type() == at::kLong,
              "store_kv_fp8: k, v of one dtype, a contiguous float8_e4m3fn cache, float32 "
              "scales and int64 slots expected");
  const at::Tensor k_rows = dense_rows(k), v_rows = dense_rows(v);
  TOOLKIT_DISPATCH(k.scalar_type(),
                   [&] { store_kv_fp8_impl<scalar_t>(k_rows, v_rows, cache, scales, slots); });
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& cache,
                            const at::Tensor& kv_indices, const at::Tensor& page_starts,
                            const at::Tensor& seq_lens, double scale, int64_t window_left,
                            double soft_cap, const std::optional<at::Tensor>& kv_scales) {
  const bool fp8 = cache.scalar_type() == at::kFloat8_e4m3fn;
  TORCH_CHECK((fp8 || q.scalar_type() == cache.scalar_type()) && cache.is_contiguous(),
              "decode_attention: a contiguous cache of q's dtype or of float8_e4m3fn expected");
  TORCH_CHECK(fp8 == kv_scales.has_value(),
              "decode_attention: kv_scales go with a float8_e4m3fn cache, and only with it");
  if (fp8) {
    TORCH_CHECK(kv_scales->scalar_type() == at::kFloat && kv_scales->is_contiguous() &&
                    kv_scales->numel() * cache.size(4) == cache.numel(),
                "decode_attention: float32 kv_scales [pages, 2, P, Hkv] expected");
  }
  TORCH_CHECK(kv_indices.scalar_type() == at::kInt && page_starts.scalar_type() == at::kInt &&
                  seq_lens.scalar_type() == at::kInt,
              "decode_attention: int32 page tables expected");
  const at::Tensor q_rows = dense_rows(q);
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  TOOLKIT_DISPATCH(q.scalar_type(), [&] {
    if (fp8) {
      decode_attention_impl<scalar_t, Fp8>(q_rows, cache, kv_scales->data_ptr<float>(),
                                           kv_indices, page_starts, seq_lens, out, scale,
                                           window_left, soft_cap);
    } else {
      decode_attention_impl<scalar_t, scalar_t>(q_rows, cache, nullptr, kv_indices,
                                                page_starts, seq_lens, out, scale,
                                                window_left, soft_cap);
    }
  });
  return out;
}

at::Tensor argmax_rows(const at::Tensor& logits) {
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous() &&
                  logits.scalar_type() == at::kFloat && logits.size(1) > 0,
              "argmax_rows: contiguous float32 [N, V] with V > 0 expected");
  const int64_t vocab = logits.size(1);
  const float* data = logits.data_ptr<float>();
  at::Tensor out = at::empty({logits.size(0)}, logits.options().dtype(at::kLong));
  int64_t* out_data = out.data_ptr<int64_t>();
  at::parallel_for(0, logits.size(0), row_grain(vocab), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) out_data[r] = argmax_row(data + r * vocab, vocab);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "quantize_rows: contiguous [T, K] expected");
  at::Tensor codes = at::empty(x.sizes(), x.options().dtype(at::kChar));
  at::Tensor scales = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
  TOOLKIT_DISPATCH(x.scalar_type(), [&] { quantize_rows_impl<scalar_t>(x, codes, scales); });
  return {codes, scales};
}

void check_dequantize_operands(int64_t num_rows, int64_t width, const at::Tensor& row_scales,
                               const at::Tensor& col_scales,
                               const c10::optional<at::Tensor>& bias, at::ScalarType dtype,
                               const char* name) {
  TORCH_CHECK(row_scales.scalar_type() == at::kFloat && row_scales.is_contiguous() &&
                  row_scales.numel() == num_rows && col_scales.scalar_type() == at::kFloat &&
                  col_scales.is_contiguous() && col_scales.numel() == width,
              name, ": float32 scales [T] and [N] expected");
  TORCH_CHECK(!bias.has_value() || (bias->scalar_type() == dtype && bias->is_contiguous() &&
                                    bias->numel() == width),
              name, ": a contiguous bias [N] of the output dtype expected");
}

at::Tensor dequantize_rows(const at::Tensor& acc, const at::Tensor& row_scales,
                           const at::Tensor& col_scales, const c10::optional<at::Tensor>& bias,
                           at::ScalarType dtype) {
  TORCH_CHECK(acc.dim() == 2 && acc.is_contiguous() && acc.scalar_type() == at::kInt,
              "dequantize_rows: contiguous int32 [T, N] expected");
  check_dequantize_operands(acc.size(0), acc.size(1), row_scales, col_scales, bias, dtype,
                            "dequantize_rows");
  at::Tensor out = at::empty(acc.sizes(), acc.options().dtype(dtype));
  const at::Tensor* bias_ptr = bias.has_value() ? &bias.value() : nullptr;
  TOOLKIT_DISPATCH(dtype, [&] {
    dequantize_rows_impl<scalar_t>(acc, row_scales, col_scales, bias_ptr, out);
  });
  return out;
}

void dequantize_tile(const int32_t* acc, int64_t acc_stride, int64_t num_rows,
                     int64_t width, const float* row_scales, const float* col_scales,
                     const void* bias, void* out, int64_t out_stride, at::ScalarType dtype) {
  float prod[kMaxTileWidth];
  TORCH_CHECK(width <= kMaxTileWidth, "dequantize_tile: at most ", kMaxTileWidth, " columns");
  TOOLKIT_DISPATCH(dtype, [&] {
    for (int64_t t = 0; t < num_rows; ++t) {
      dequantize_row(acc + t * acc_stride, row_scales[t], col_scales,
                     static_cast<const scalar_t*>(bias),
                     static_cast<scalar_t*>(out) + t * out_stride, width, prod);
    }
  });
}

at::Tensor lora_bgmv(const at::Tensor& x, const at::Tensor& a, const at::Tensor& bt,
                     const at::Tensor& slots) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && a.dim() == 3 && a.is_contiguous() &&
                  bt.dim() == 3 && bt.is_contiguous() && a.size(0) == bt.size(0) &&
                  a.size(1) == bt.size(1) && a.size(2) == x.size(1),
              "lora_bgmv: contiguous x [n, K], a [S, Q, K] and bt [S, Q, N] expected");
  TORCH_CHECK(x.scalar_type() == a.scalar_type() && x.scalar_type() == bt.scalar_type(),
              "lora_bgmv: x, a and bt must share a dtype");
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.is_contiguous() &&
                  slots.numel() == x.size(0),
              "lora_bgmv: int64 slots [n] expected");
  const int64_t* slot_data = slots.data_ptr<int64_t>();
  for (int64_t t = 0; t < slots.numel(); ++t) {
    TORCH_CHECK(slot_data[t] >= 0 && slot_data[t] < a.size(0), "lora_bgmv: slot ",
                slot_data[t], " of row ", t, " is not one of the ", a.size(0), " slots");
  }
  at::Tensor out = at::empty({x.size(0), bt.size(2)}, x.options());
  TOOLKIT_DISPATCH(x.scalar_type(), [&] { lora_bgmv_impl<scalar_t>(x, a, bt, slots, out); });
  return out;
}

}  // namespace toolkit_ops

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace toolkit_ops;
  m.def("rms_norm", &rms_norm);
  m.def("fused_add_rms_norm", &fused_add_rms_norm);
  m.def("silu_and_mul", &silu_and_mul);
  m.def("rotary", &rotary);
  m.def("store_kv", &store_kv);
  m.def("decode_attention", &decode_attention, pybind11::arg("q"), pybind11::arg("cache"),
        pybind11::arg("kv_indices"), pybind11::arg("page_starts"), pybind11::arg("seq_lens"),
        pybind11::arg("scale"), pybind11::arg("window_left") = -1,
        pybind11::arg("soft_cap") = 0.0, pybind11::arg("kv_scales") = pybind11::none());
  m.def("store_kv_fp8", &store_kv_fp8);
  m.def("quantize_rows", &quantize_rows);
  m.def("argmax_rows", &argmax_rows);
  m.def("lora_bgmv", &lora_bgmv);
  m.def("dequantize_rows", &dequantize_rows, pybind11::arg("acc"), pybind11::arg("row_scales"),
        pybind11::arg("col_scales"), pybind11::arg("bias"), pybind11::arg("dtype"));
  m.def("q4_1_linear", &q4_1_linear);
  m.def("q8_linear", &q8_linear);
  m.def("q8_int_mm", &q8_int_mm);
  m.def("q8_scaled_mm", &q8_scaled_mm);
  bind_decoder_stack(m);
}
