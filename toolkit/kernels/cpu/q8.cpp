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
//
// q8_int_mm: quant=w8a8's int32 matmul on the same layout, int8 rows xq [T, K] (their
// scales applied by the caller) -> the exact sums dot(w[n], xq[t]) over all of K, in tiles
// of 4 rows by 4 row groups (32 outputs) whose 16 accumulators stay in registers;
// q8_scaled_mm scales each tile of those sums to the output dtype as dequantize_rows does.

#include "int8_blocks.h"
#include "ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace toolkit_ops {
namespace {

constexpr int64_t kBlock = kInt8Block;  // input features per block
constexpr int64_t kSteps = 8;           // 4-byte steps per block
constexpr int64_t kGroupBytes = 256;    // codes of one row group's block: 8 rows x 32
constexpr int64_t kGroupGrain = 16;     // row groups per parallel chunk, at least
constexpr int32_t kOffset = 128;        // u = w + kOffset
constexpr int64_t kTileGroups = 4;      // row groups of one int8_mm tile (32 outputs)
constexpr int64_t kMinPairRows = 12;    // rows of x from which q8_linear takes q8_pair4

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

// q8_group<4> for two row groups at once (16 outputs): each weight vector serves four rows
// and each activation word both groups, which keeps eight independent vpdpbusd chains in
// flight (q8_group<4> has four, too few to hide their latency). Per (row, group): the same
// integer sums and the same float operations in the same order as q8_group<4>, so the same
// bits. The accumulators are named rather than arrays (see int_mm_tile<4, 4>).
void q8_pair4(const uint8_t* codes, int64_t group_bytes, const float* scales,
              const int8_t* xq, const float* dx, const int32_t* offsets, int64_t num_blocks,
              int64_t k, float (*out0)[kLanes], float (*out1)[kLanes]) {
  __m256 f00 = _mm256_setzero_ps(), f01 = f00, f10 = f00, f11 = f00;
  __m256 f20 = f00, f21 = f00, f30 = f00, f31 = f00;
  for (int64_t g = 0; g < num_blocks; ++g) {
    const uint8_t* u0_block = codes + g * kGroupBytes;
    const uint8_t* u1_block = u0_block + group_bytes;
    const int8_t* x = xq + g * kBlock;
    __m256i s00 = _mm256_set1_epi32(-offsets[g]), s01 = s00;
    __m256i s10 = _mm256_set1_epi32(-offsets[num_blocks + g]), s11 = s10;
    __m256i s20 = _mm256_set1_epi32(-offsets[2 * num_blocks + g]), s21 = s20;
    __m256i s30 = _mm256_set1_epi32(-offsets[3 * num_blocks + g]), s31 = s30;
    for (int p = 0; p < kSteps; ++p) {
      const __m256i u0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(u0_block + 32 * p));
      const __m256i u1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(u1_block + 32 * p));
      int32_t w0, w1, w2, w3;
      std::memcpy(&w0, x + 4 * p, 4);
      std::memcpy(&w1, x + k + 4 * p, 4);
      std::memcpy(&w2, x + 2 * k + 4 * p, 4);
      std::memcpy(&w3, x + 3 * k + 4 * p, 4);
      s00 = dot4_bytes(s00, u0, w0), s01 = dot4_bytes(s01, u1, w0);
      s10 = dot4_bytes(s10, u0, w1), s11 = dot4_bytes(s11, u1, w1);
      s20 = dot4_bytes(s20, u0, w2), s21 = dot4_bytes(s21, u1, w2);
      s30 = dot4_bytes(s30, u0, w3), s31 = dot4_bytes(s31, u1, w3);
    }
    const __m256 d0 = _mm256_set1_ps(dx[g]), d1 = _mm256_set1_ps(dx[num_blocks + g]);
    const __m256 d2 = _mm256_set1_ps(dx[2 * num_blocks + g]);
    const __m256 d3 = _mm256_set1_ps(dx[3 * num_blocks + g]);
    f00 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s00), d0, f00);
    f01 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s01), d0, f01);
    f10 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s10), d1, f10);
    f11 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s11), d1, f11);
    f20 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s20), d2, f20);
    f21 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s21), d2, f21);
    f30 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s30), d3, f30);
    f31 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s31), d3, f31);
  }
  const __m256 scale0 = _mm256_loadu_ps(scales), scale1 = _mm256_loadu_ps(scales + kLanes);
  _mm256_storeu_ps(out0[0], _mm256_mul_ps(f00, scale0));
  _mm256_storeu_ps(out1[0], _mm256_mul_ps(f01, scale1));
  _mm256_storeu_ps(out0[1], _mm256_mul_ps(f10, scale0));
  _mm256_storeu_ps(out1[1], _mm256_mul_ps(f11, scale1));
  _mm256_storeu_ps(out0[2], _mm256_mul_ps(f20, scale0));
  _mm256_storeu_ps(out1[2], _mm256_mul_ps(f21, scale1));
  _mm256_storeu_ps(out0[3], _mm256_mul_ps(f30, scale0));
  _mm256_storeu_ps(out1[3], _mm256_mul_ps(f31, scale1));
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
  const int64_t group_bytes = num_blocks * kGroupBytes;
  for_each_row_group<2>(codes.size(0), num_rows, kGroupGrain / 2,
                        static_cast<T*>(out.data_ptr()),
                        [&](auto rows, int64_t group, int64_t groups, int64_t t,
                            float (*chunk_out)[kMaxRows][kLanes]) {
    constexpr int ROWS = decltype(rows)::value;
    const uint8_t* chunk_codes = code_data + group * group_bytes;
    const float* chunk_scales = scale_data + group * kLanes;
    const int8_t* x = xq.data() + t * k;
    const float* x_steps = dx.data() + t * num_blocks;
    const int32_t* x_offsets = offsets.data() + t * num_blocks;
#if defined(__AVX2__)
    if (ROWS == 4 && groups == 2 && num_rows >= kMinPairRows) {
      q8_pair4(chunk_codes, group_bytes, chunk_scales, x, x_steps, x_offsets, num_blocks, k,
               chunk_out[0], chunk_out[1]);
      return;
    }
#endif
    for (int64_t g = 0; g < groups; ++g) {
      q8_group<ROWS>(chunk_codes + g * group_bytes, chunk_scales + g * kLanes, x, x_steps,
                     x_offsets, num_blocks, k, chunk_out[g]);
    }
  });
}

// int8_mm: a tile of ROWS rows of xq by GROUPS row groups (8 outputs each), the int32 sums
// over all of K (offset included: out = dot(u, xq) - 128 sum(xq) = dot(w, xq), exact).
// ``codes`` is the tile's first group; the next ones follow every ``group_bytes``.
template <int ROWS, int GROUPS>
void int_mm_tile(const uint8_t* codes, int64_t group_bytes, const int8_t* xq, int64_t k,
                 const int32_t* offsets, int32_t* out, int64_t n) {
#if defined(__AVX2__)
  __m256i acc[ROWS][GROUPS];
  for (int r = 0; r < ROWS; ++r) {
    for (int g = 0; g < GROUPS; ++g) acc[r][g] = _mm256_set1_epi32(-offsets[r]);
  }
  for (int64_t step = 0; step < k / 4; ++step) {
    __m256i u[GROUPS];
    for (int g = 0; g < GROUPS; ++g) {
      u[g] = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(codes + g * group_bytes + step * 32));
    }
    for (int r = 0; r < ROWS; ++r) {
      int32_t x_bytes;
      std::memcpy(&x_bytes, xq + r * k + 4 * step, sizeof(x_bytes));
      for (int g = 0; g < GROUPS; ++g) acc[r][g] = dot4_bytes(acc[r][g], u[g], x_bytes);
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    for (int g = 0; g < GROUPS; ++g) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * n + g * kLanes), acc[r][g]);
    }
  }
#else
  for (int r = 0; r < ROWS; ++r) {
    for (int g = 0; g < GROUPS; ++g) {
      for (int64_t lane = 0; lane < kLanes; ++lane) {
        int32_t sum = -offsets[r];
        for (int64_t step = 0; step < k / 4; ++step) {
          for (int b = 0; b < 4; ++b) {
            sum += codes[g * group_bytes + step * 32 + lane * 4 + b] * xq[r * k + 4 * step + b];
          }
        }
        out[r * n + g * kLanes + lane] = sum;
      }
    }
  }
#endif
}

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)

// int_mm_tile<4, 4> written out: 16 accumulators held in registers (GCC keeps an array of
// them moving between registers every step, which costs more than the vpdpbusd).
template <>
void int_mm_tile<4, 4>(const uint8_t* codes, int64_t group_bytes, const int8_t* xq, int64_t k,
                       const int32_t* offsets, int32_t* out, int64_t n) {
  __m256i a00 = _mm256_set1_epi32(-offsets[0]), a01 = a00, a02 = a00, a03 = a00;
  __m256i a10 = _mm256_set1_epi32(-offsets[1]), a11 = a10, a12 = a10, a13 = a10;
  __m256i a20 = _mm256_set1_epi32(-offsets[2]), a21 = a20, a22 = a20, a23 = a20;
  __m256i a30 = _mm256_set1_epi32(-offsets[3]), a31 = a30, a32 = a30, a33 = a30;
  const uint8_t* c0 = codes;
  const uint8_t* c1 = codes + group_bytes;
  const uint8_t* c2 = codes + 2 * group_bytes;
  const uint8_t* c3 = codes + 3 * group_bytes;
  for (int64_t step = 0; step < k / 4; ++step) {
    const __m256i u0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c0 + step * 32));
    const __m256i u1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c1 + step * 32));
    const __m256i u2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c2 + step * 32));
    const __m256i u3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c3 + step * 32));
    int32_t b0, b1, b2, b3;
    std::memcpy(&b0, xq + 4 * step, 4);
    std::memcpy(&b1, xq + k + 4 * step, 4);
    std::memcpy(&b2, xq + 2 * k + 4 * step, 4);
    std::memcpy(&b3, xq + 3 * k + 4 * step, 4);
    const __m256i x0 = _mm256_set1_epi32(b0), x1 = _mm256_set1_epi32(b1);
    const __m256i x2 = _mm256_set1_epi32(b2), x3 = _mm256_set1_epi32(b3);
    a00 = _mm256_dpbusd_epi32(a00, u0, x0), a01 = _mm256_dpbusd_epi32(a01, u1, x0);
    a02 = _mm256_dpbusd_epi32(a02, u2, x0), a03 = _mm256_dpbusd_epi32(a03, u3, x0);
    a10 = _mm256_dpbusd_epi32(a10, u0, x1), a11 = _mm256_dpbusd_epi32(a11, u1, x1);
    a12 = _mm256_dpbusd_epi32(a12, u2, x1), a13 = _mm256_dpbusd_epi32(a13, u3, x1);
    a20 = _mm256_dpbusd_epi32(a20, u0, x2), a21 = _mm256_dpbusd_epi32(a21, u1, x2);
    a22 = _mm256_dpbusd_epi32(a22, u2, x2), a23 = _mm256_dpbusd_epi32(a23, u3, x2);
    a30 = _mm256_dpbusd_epi32(a30, u0, x3), a31 = _mm256_dpbusd_epi32(a31, u1, x3);
    a32 = _mm256_dpbusd_epi32(a32, u2, x3), a33 = _mm256_dpbusd_epi32(a33, u3, x3);
  }
  const __m256i rows[4][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13},
                              {a20, a21, a22, a23}, {a30, a31, a32, a33}};
  for (int r = 0; r < 4; ++r) {
    for (int g = 0; g < 4; ++g) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + r * n + g * kLanes), rows[r][g]);
    }
  }
}

#endif

template <int ROWS>
void int_mm_rows(int groups, const uint8_t* codes, int64_t group_bytes, const int8_t* xq,
                 int64_t k, const int32_t* offsets, int32_t* out, int64_t n) {
  switch (groups) {
    case 1: int_mm_tile<ROWS, 1>(codes, group_bytes, xq, k, offsets, out, n); break;
    case 2: int_mm_tile<ROWS, 2>(codes, group_bytes, xq, k, offsets, out, n); break;
    case 3: int_mm_tile<ROWS, 3>(codes, group_bytes, xq, k, offsets, out, n); break;
    default: int_mm_tile<ROWS, 4>(codes, group_bytes, xq, k, offsets, out, n);
  }
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
  TOOLKIT_DISPATCH(x.scalar_type(), [&] { q8_linear_impl<scalar_t>(x, codes, scales, out); });
  return out;
}

namespace {

// The loop of q8_int_mm and q8_scaled_mm: every tile of up to kTileGroups row groups (in
// parallel) for every run of up to kMaxRows rows of xq; the tile's int32 sums go to a
// buffer [kMaxRows][kTileLanes] and sink(t, rows, column, width, buffer) takes them.
constexpr int64_t kTileLanes = kTileGroups * kLanes;

template <typename Sink>
void for_each_int_mm_tile(const at::Tensor& xq, const at::Tensor& codes, const Sink& sink) {
  const int64_t num_rows = xq.size(0), k = xq.size(1);
  const int64_t num_groups = codes.size(0);
  const int8_t* x_data = xq.data_ptr<int8_t>();
  std::vector<int32_t> offsets(num_rows);  // 128 sum(xq) per row
  for (int64_t t = 0; t < num_rows; ++t) {
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += x_data[t * k + i];
    offsets[t] = kOffset * sum;
  }
  const uint8_t* code_data = codes.data_ptr<uint8_t>();
  const int64_t group_bytes = k * kLanes;
  const int64_t num_tiles = (num_groups + kTileGroups - 1) / kTileGroups;
  at::parallel_for(0, num_tiles, 1, [&](int64_t begin, int64_t end) {
    int32_t sums[kMaxRows * kTileLanes];
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t group = tile * kTileGroups;
      const int groups = static_cast<int>(std::min(kTileGroups, num_groups - group));
      const uint8_t* tile_codes = code_data + group * group_bytes;
      for (int64_t t = 0; t < num_rows; t += kMaxRows) {
        const int8_t* x = x_data + t * k;
        const int32_t* o = offsets.data() + t;
        const int64_t rows = std::min(kMaxRows, num_rows - t);
        switch (rows) {
          case 1: int_mm_rows<1>(groups, tile_codes, group_bytes, x, k, o, sums, kTileLanes); break;
          case 2: int_mm_rows<2>(groups, tile_codes, group_bytes, x, k, o, sums, kTileLanes); break;
          case 3: int_mm_rows<3>(groups, tile_codes, group_bytes, x, k, o, sums, kTileLanes); break;
          default: int_mm_rows<4>(groups, tile_codes, group_bytes, x, k, o, sums, kTileLanes);
        }
        sink(t, rows, group * kLanes, groups * kLanes, sums);
      }
    }
  });
}

void check_int_mm_operands(const at::Tensor& xq, const at::Tensor& codes, const char* name) {
  TORCH_CHECK(xq.dim() == 2 && xq.is_contiguous() && xq.scalar_type() == at::kChar &&
                  xq.size(1) % kBlock == 0,
              name, ": contiguous int8 xq [T, K] with K a multiple of 32 expected");
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.is_contiguous() && codes.dim() == 2 &&
                  codes.size(1) == xq.size(1) * kLanes,
              name, ": uint8 codes [N/8, K/32 * 256] expected");
}

}  // namespace

at::Tensor q8_int_mm(const at::Tensor& xq, const at::Tensor& codes) {
  check_int_mm_operands(xq, codes, "q8_int_mm");
  const int64_t n = codes.size(0) * kLanes;
  at::Tensor out = at::empty({xq.size(0), n}, xq.options().dtype(at::kInt));
  int32_t* out_data = out.data_ptr<int32_t>();
  for_each_int_mm_tile(xq, codes, [&](int64_t t, int64_t rows, int64_t column, int64_t width,
                                      const int32_t* sums) {
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(out_data + (t + r) * n + column, sums + r * kTileLanes,
                  width * sizeof(int32_t));
    }
  });
  return out;
}

at::Tensor q8_scaled_mm(const at::Tensor& xq, const at::Tensor& row_scales,
                        const at::Tensor& codes, const at::Tensor& col_scales,
                        const c10::optional<at::Tensor>& bias, at::ScalarType dtype) {
  check_int_mm_operands(xq, codes, "q8_scaled_mm");
  const int64_t n = codes.size(0) * kLanes;
  check_dequantize_operands(xq.size(0), n, row_scales, col_scales, bias, dtype,
                            "q8_scaled_mm");
  at::Tensor out = at::empty({xq.size(0), n}, xq.options().dtype(dtype));
  const float* row_data = row_scales.data_ptr<float>();
  const float* col_data = col_scales.data_ptr<float>();
  const char* bias_data = bias.has_value() ? static_cast<const char*>(bias->data_ptr()) : nullptr;
  char* out_data = static_cast<char*>(out.data_ptr());
  const int64_t item = out.element_size();
  for_each_int_mm_tile(xq, codes, [&](int64_t t, int64_t rows, int64_t column, int64_t width,
                                      const int32_t* sums) {
    dequantize_tile(sums, kTileLanes, rows, width, row_data + t, col_data + column,
                    bias_data == nullptr ? nullptr : bias_data + column * item,
                    out_data + (t * n + column) * item, n, dtype);
  });
  return out;
}

}  // namespace toolkit_ops
