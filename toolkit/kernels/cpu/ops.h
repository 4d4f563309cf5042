// The entry points of ops.cpp that another file of the module calls (decoder_stack.cpp),
// the binding that file adds to the module, and the dtype dispatch the files share. Shapes
// and dtypes as ops.cpp documents.

#pragma once

#include <torch/extension.h>

#include <optional>
#include <tuple>

// Runs the lambda __VA_ARGS__ with scalar_t the element type of dtype's tensors: uint16_t
// (a bfloat16's bits) or float; any other dtype is refused.
#define TOOLKIT_DISPATCH(dtype, ...)                                      \
  if ((dtype) == at::kBFloat16) {                                         \
    using scalar_t = uint16_t;                                            \
    __VA_ARGS__();                                                        \
  } else {                                                                \
    TORCH_CHECK((dtype) == at::kFloat, "float32 or bfloat16 expected");   \
    using scalar_t = float;                                               \
    __VA_ARGS__();                                                        \
  }

namespace toolkit_ops {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

std::tuple<at::Tensor, at::Tensor> fused_add_rms_norm(const at::Tensor& x,
                                                      const at::Tensor& residual,
                                                      const at::Tensor& weight, double eps);

at::Tensor silu_and_mul(const at::Tensor& gate_up);

at::Tensor rotary(const at::Tensor& heads, const at::Tensor& cos, const at::Tensor& sin,
                  int64_t num_rotated);

void store_kv(const at::Tensor& k, const at::Tensor& v, at::Tensor& cache,
              const at::Tensor& slots);

// kv_scales: with a float8_e4m3fn cache (written by store_kv_fp8), its scales.
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& cache,
                            const at::Tensor& kv_indices, const at::Tensor& page_starts,
                            const at::Tensor& seq_lens, double scale, int64_t window_left,
                            double soft_cap,
                            const std::optional<at::Tensor>& kv_scales = std::nullopt);

// quant=w8a8's activations and the scaling of its int32 matmul (toolkit/kernels/int8_rows.py).
std::tuple<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& x);

at::Tensor dequantize_rows(const at::Tensor& acc, const at::Tensor& row_scales,
                           const at::Tensor& col_scales, const c10::optional<at::Tensor>& bias,
                           at::ScalarType dtype);

// The checks of dequantize_rows' scales and bias for sums [num_rows, width] (``name`` in
// the message), shared with q8_scaled_mm.
void check_dequantize_operands(int64_t num_rows, int64_t width, const at::Tensor& row_scales,
                               const at::Tensor& col_scales,
                               const c10::optional<at::Tensor>& bias, at::ScalarType dtype,
                               const char* name);

// dequantize_rows on a tile: acc int32 [num_rows, width] (rows acc_stride apart), their
// row_scales [num_rows], col_scales [width] and bias [width] of dtype (or nullptr) -> out
// [num_rows, width] in dtype (rows out_stride elements apart), the same bits as
// dequantize_rows. width <= kMaxTileWidth.
constexpr int64_t kMaxTileWidth = 64;
void dequantize_tile(const int32_t* acc, int64_t acc_stride, int64_t num_rows,
                     int64_t width, const float* row_scales, const float* col_scales,
                     const void* bias, void* out, int64_t out_stride, at::ScalarType dtype);

// q4_1.cpp: x [T, K] (float32 or bfloat16) times Q4_1 weights in its layout (uint8 codes
// [N/8, K/32 * 128], bfloat16 scales_zeros [N/8, K/32 * 16]) through int8 activations
// -> [T, N] in x's dtype.
at::Tensor q4_1_linear(const at::Tensor& x, const at::Tensor& codes,
                       const at::Tensor& scales_zeros);

// q8.cpp: x [T, K] (float32 or bfloat16) times int8 weights with a scale per output row in
// its layout (uint8 codes [N/8, K/32 * 256], float32 scales [N]) through int8 activations
// -> [T, N] in x's dtype.
at::Tensor q8_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales);

// q8.cpp: int8 xq [T, K] times int8 weights in q8_linear's layout -> int32 [T, N], the exact
// sums (what at::_int_mm gives for xq and the weights' [K, N] transpose).
at::Tensor q8_int_mm(const at::Tensor& xq, const at::Tensor& codes);

// q8.cpp: dequantize_rows(q8_int_mm(xq, codes), row_scales, col_scales, bias, dtype) in one
// pass (each tile of sums scaled while in cache), the same bits.
at::Tensor q8_scaled_mm(const at::Tensor& xq, const at::Tensor& row_scales,
                        const at::Tensor& codes, const at::Tensor& col_scales,
                        const c10::optional<at::Tensor>& bias, at::ScalarType dtype);

// Adds decoder_stack.cpp's DecoderStack to the module.
void bind_decoder_stack(pybind11::module_& m);

}  // namespace toolkit_ops
