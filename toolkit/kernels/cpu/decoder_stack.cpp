// The decoder layers of a Llama-family step in one call, projections on a CPU kernel
// (torch's int4 one, q4_1.cpp's, w8a8's int8 rows and int32 matmul, or oneDNN's bfloat16
// matmul on a packed weight): LlamaDecoderLayer.forward (toolkit/models/llama.py) on the
// native route, op for op, with the same kernels in the same order and TorchRefBackend's
// decode attention, so its outputs are bit-identical to the Python loop's. What it removes
// is the interpreter between a layer's ten kernel calls (toolkit/models/native_decoder.py
// says when it runs).

#include "ops.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <string>
#include <utility>
#include <vector>

namespace toolkit_ops {
namespace {

// x [T, K] times a weight packed by mkldnn::_reorder_linear_weight -> [T, N]: oneDNN's
// matmul as toolkit/layers/linear.py's _packed_linear calls it (an operator, not an ATen
// function, so it is reached through the dispatcher).
at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& packed) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&, c10::string_view,
                            c10::List<std::optional<at::Scalar>>,
                            std::optional<c10::string_view>)>();
  return op.call(x, packed, std::nullopt, "none", c10::List<std::optional<at::Scalar>>(),
                 c10::string_view(""));
}

// One projection as its kernel holds it (toolkit/quant/base.py NativeProjection): torch's
// int4 kernel (weight uint8 [N, K/2], scales [K/G, N, 2]: scales and zeros), q4_1.cpp's
// Q4_1 x int8 kernel (its layout), w8a8 (weight int8 [K, N] for at::_int_mm or uint8 in
// q8.cpp's layout for q8_scaled_mm, per-channel float32 scales [N]: quantize_rows, the int32
// matmul and dequantize_rows, as W8A8Method.apply), or dense
// (a oneDNN-packed bfloat16 weight, no scales; an input of fewer than min_rows rows padded
// with copies of its last row, as toolkit/layers/linear.py's invariant_linear pads it).
struct Projection {
  enum class Kernel { kInt4Pack, kQ4_1, kW8A8, kDense };
  at::Tensor weight;
  at::Tensor scales;
  Kernel kernel;
  int64_t min_rows;
  int64_t group_size = 0;

  Projection(at::Tensor weight_, at::Tensor scales_, const std::string& name,
             int64_t min_rows_)
      : weight(std::move(weight_)), scales(std::move(scales_)), min_rows(min_rows_) {
    if (name == "dense") {
      kernel = Kernel::kDense;
    } else if (name == "int4pack") {
      kernel = Kernel::kInt4Pack;
      group_size = weight.size(1) * 2 / scales.size(0);
    } else if (name == "q4_1") {
      kernel = Kernel::kQ4_1;
    } else {
      TORCH_CHECK(name == "w8a8", "DecoderStack: unknown projection kernel ", name);
      kernel = Kernel::kW8A8;
    }
  }

  at::Tensor operator()(const at::Tensor& x) const {  // [T, K] -> [T, N]
    switch (kernel) {
      case Kernel::kQ4_1:
        return q4_1_linear(x, weight, scales);
      case Kernel::kW8A8: {
        const auto [codes, row_scales] = quantize_rows(x);
        if (weight.scalar_type() == at::kByte) {
          return q8_scaled_mm(codes, row_scales, weight, scales, c10::nullopt, x.scalar_type());
        }
        return dequantize_rows(at::_int_mm(codes, weight), row_scales, scales, c10::nullopt,
                               x.scalar_type());
      }
      case Kernel::kDense: {
        const int64_t num_rows = x.size(0);
        if (num_rows >= min_rows) return packed_linear(x, weight);
        const at::Tensor last = x.narrow(0, num_rows - 1, 1).expand({min_rows - num_rows, -1});
        return packed_linear(at::cat({x, last}), weight).narrow(0, 0, num_rows);
      }
      default:
        return at::_weight_int4pack_mm_for_cpu(x, weight, group_size, scales);
    }
  }
};

struct Layer {
  at::Tensor input_norm;           // [hidden]
  at::Tensor post_attention_norm;  // [hidden]
  Projection qkv, o, gate_up, down;
};

class DecoderStack {
 public:
  // Per layer: norms = (input, post-attention), weights = (weight, scales) of qkv, o,
  // gate_up and down, in that order, kernels = the kernel each of the four takes and
  // min_rows = the rows each pads its input to.
  DecoderStack(const std::vector<at::Tensor>& norms, const std::vector<at::Tensor>& weights,
               const std::vector<std::string>& kernels, const std::vector<int64_t>& min_rows,
               int64_t num_qo_heads, int64_t num_kv_heads, int64_t head_dim, double eps)
      : num_qo_heads_(num_qo_heads), num_kv_heads_(num_kv_heads), head_dim_(head_dim),
        eps_(eps) {
    TORCH_CHECK(weights.size() == norms.size() * 4 && kernels.size() == norms.size() * 2 &&
                    min_rows.size() == kernels.size(),
                "DecoderStack: 2 norms, 4 (weight, scales) pairs, 4 kernel names and 4 "
                "min_rows per layer expected");
    for (size_t i = 0; i < norms.size() / 2; ++i) {
      const at::Tensor* w = weights.data() + i * 8;
      const size_t f = i * 4;
      const auto projection = [&](size_t j) {
        return Projection(w[2 * j], w[2 * j + 1], kernels[f + j], min_rows[f + j]);
      };
      layers_.push_back({norms[2 * i], norms[2 * i + 1], projection(0), projection(1),
                         projection(2), projection(3)});
    }
  }

  // hidden: [T, hidden], the embeddings; cos, sin: [T, 1, D]; caches: each layer's pages;
  // slots, kv_indices, page_starts, seq_lens, scale: the step's decode plan (every row a
  // decode query) -> (the last layer's MLP output, the residual stream before it).
  std::tuple<at::Tensor, at::Tensor> forward(at::Tensor hidden, const at::Tensor& cos,
                                             const at::Tensor& sin,
                                             const std::vector<at::Tensor>& caches,
                                             const at::Tensor& slots,
                                             const at::Tensor& kv_indices,
                                             const at::Tensor& page_starts,
                                             const at::Tensor& seq_lens, double scale) const {
    TORCH_CHECK(caches.size() == layers_.size(), "DecoderStack: one cache per layer");
    const int64_t num_tokens = hidden.size(0);
    at::Tensor residual;
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Layer& layer = layers_[i];
      at::Tensor x;
      if (i == 0) {
        residual = hidden;
        x = rms_norm(hidden, layer.input_norm, eps_);
      } else {
        std::tie(x, residual) = fused_add_rms_norm(hidden, residual, layer.input_norm, eps_);
      }
      at::Tensor heads = layer.qkv(x).view({num_tokens, -1, head_dim_});  // [T, Hq+2Hkv, D]
      at::Tensor qk = rotary(heads, cos, sin, num_qo_heads_ + num_kv_heads_);
      at::Tensor q = qk.narrow(1, 0, num_qo_heads_);               // [T, Hq, D]
      at::Tensor k = qk.narrow(1, num_qo_heads_, num_kv_heads_);   // [T, Hkv, D]
      at::Tensor v = heads.narrow(1, num_qo_heads_ + num_kv_heads_, num_kv_heads_);
      at::Tensor cache = caches[i];
      store_kv(k, v, cache, slots);
      at::Tensor attended = decode_attention(q, cache, kv_indices, page_starts, seq_lens, scale,
                                             -1, 0.0);  // [T, Hq, D]
      at::Tensor attn_out = layer.o(attended.reshape({num_tokens, -1}));  // [T, hidden]
      std::tie(x, residual) =
          fused_add_rms_norm(attn_out, residual, layer.post_attention_norm, eps_);
      hidden = layer.down(silu_and_mul(layer.gate_up(x)));  // [T, hidden]
    }
    return {hidden, residual};
  }

 private:
  std::vector<Layer> layers_;
  int64_t num_qo_heads_, num_kv_heads_, head_dim_;
  double eps_;
};

}  // namespace

void bind_decoder_stack(pybind11::module_& m) {
  pybind11::class_<DecoderStack>(m, "DecoderStack")
      .def(pybind11::init<const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                          const std::vector<std::string>&, const std::vector<int64_t>&,
                          int64_t, int64_t, int64_t, double>(),
           pybind11::arg("norms"), pybind11::arg("weights"), pybind11::arg("kernels"),
           pybind11::arg("min_rows"), pybind11::arg("num_qo_heads"),
           pybind11::arg("num_kv_heads"), pybind11::arg("head_dim"), pybind11::arg("eps"))
      .def("forward", &DecoderStack::forward,
           pybind11::call_guard<pybind11::gil_scoped_release>());
}

}  // namespace toolkit_ops
