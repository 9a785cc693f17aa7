// seg_zoo::ms_deform_attn: the schema, the one place where inputs are checked, and the
// per-device registrations. Kernels live in cpu/ and cuda/; autograd and the fake (meta)
// implementation are registered from Python (seg_zoo/layers/ms_deform_attn_op.py).
#include <Python.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "ms_deform_attn.h"

namespace seg_zoo {
namespace {

constexpr const char* kOp = "seg_zoo.ms_deform_attn: ";

// Numbers in messages go through std::to_string, never through std::ostream: with torch
// 2.11's wheel and an extension built by the system's GCC 13 (seen on an H100 machine),
// inserting an integer into c10::str's stream crashed inside libstdc++'s locale code, so a bad
// input would have cost a segfault instead of an error.
std::string num(int64_t v) {
  return std::to_string(v);
}

std::string shape_str(const at::Tensor& t) {
  std::string out = "[";
  for (int64_t i = 0; i < t.dim(); ++i) {
    out += (i ? ", " : "") + num(t.size(i));
  }
  return out + "]";
}

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

void check_rank(const at::Tensor& t, const char* name, int64_t rank, const char* layout) {
  TORCH_CHECK_VALUE(t.defined(), kOp, name, " is undefined");
  TORCH_CHECK_VALUE(
      t.dim() == rank, kOp, name, " must have rank ", num(rank), " ", layout, ", got shape ",
      shape_str(t));
}

void check_size(
    const at::Tensor& t, const char* name, int64_t dim, int64_t expected, const char* what,
    const char* from) {
  TORCH_CHECK_VALUE(
      t.size(dim) == expected, kOp, name, ".shape[", num(dim), "] (", what, ") is ", num(t.size(dim)),
      " but ", from, " says ", num(expected), " (", name, " has shape ", shape_str(t), ")");
}

at::ScalarType opmath_of(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace

MSDAShapes check_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  check_rank(value, "value", 4, "(N, S, M, D)");
  check_rank(spatial_shapes, "spatial_shapes", 2, "(L, 2)");
  check_rank(level_start_index, "level_start_index", 1, "(L,)");
  check_rank(sampling_locations, "sampling_locations", 6, "(N, Lq, M, L, P, 2)");
  check_rank(attention_weights, "attention_weights", 5, "(N, Lq, M, L, P)");

  // dtypes
  const auto vt = value.scalar_type();
  TORCH_CHECK_VALUE(
      is_supported_float(vt), kOp, "value has dtype ", vt,
      "; supported: float32, float64, float16, bfloat16");
  TORCH_CHECK_VALUE(
      attention_weights.scalar_type() == vt, kOp, "attention_weights has dtype ",
      attention_weights.scalar_type(), " but value has dtype ", vt, "; they must match");
  const auto lt = sampling_locations.scalar_type();
  TORCH_CHECK_VALUE(
      lt == vt || lt == at::kFloat, kOp, "sampling_locations has dtype ", lt,
      "; it must be value's dtype (", vt, ") or float32");
  for (const auto& [t, name] :
       {std::pair{&spatial_shapes, "spatial_shapes"},
        std::pair{&level_start_index, "level_start_index"}}) {
    TORCH_CHECK_VALUE(
        t->scalar_type() == at::kLong || t->scalar_type() == at::kInt, kOp, name,
        " has dtype ", t->scalar_type(), "; it must be int64 (or int32)");
  }

  // devices: the level tables may stay on the CPU (they are read on the host anyway)
  const auto dev = value.device();
  for (const auto& [t, name] :
       {std::pair{&sampling_locations, "sampling_locations"},
        std::pair{&attention_weights, "attention_weights"}}) {
    TORCH_CHECK(
        t->device() == dev, kOp, name, " is on ", t->device(), " but value is on ", dev,
        "; all tensors must be on one device");
  }
  for (const auto& [t, name] :
       {std::pair{&spatial_shapes, "spatial_shapes"},
        std::pair{&level_start_index, "level_start_index"}}) {
    TORCH_CHECK(
        t->device() == dev || t->device().is_cpu(), kOp, name, " is on ", t->device(),
        " but value is on ", dev, "; it must be on value's device or on the CPU");
  }

  MSDAShapes s{};
  s.batch = value.size(0);
  s.num_keys = value.size(1);
  s.num_heads = value.size(2);
  s.head_dim = value.size(3);
  s.num_levels = spatial_shapes.size(0);
  s.num_queries = sampling_locations.size(1);
  s.num_points = sampling_locations.size(4);

  TORCH_CHECK_VALUE(
      spatial_shapes.size(1) == 2, kOp, "spatial_shapes must have shape (L, 2) with rows (H, W), ",
      "got ", shape_str(spatial_shapes));
  TORCH_CHECK_VALUE(
      s.num_levels >= 1 && s.num_levels <= kMaxLevels, kOp, "spatial_shapes has ", num(s.num_levels),
      " levels; between 1 and ", num(kMaxLevels), " are supported");
  check_size(level_start_index, "level_start_index", 0, s.num_levels, "L", "spatial_shapes");

  // sampling_locations (N, Lq, M, L, P, 2)
  check_size(sampling_locations, "sampling_locations", 0, s.batch, "N", "value");
  check_size(sampling_locations, "sampling_locations", 2, s.num_heads, "M", "value");
  check_size(sampling_locations, "sampling_locations", 3, s.num_levels, "L", "spatial_shapes");
  TORCH_CHECK_VALUE(
      sampling_locations.size(5) == 2, kOp,
      "sampling_locations must end in a dimension of 2 (x, y), got shape ",
      shape_str(sampling_locations));
  // attention_weights (N, Lq, M, L, P)
  check_size(attention_weights, "attention_weights", 0, s.batch, "N", "value");
  check_size(attention_weights, "attention_weights", 1, s.num_queries, "Lq", "sampling_locations");
  check_size(attention_weights, "attention_weights", 2, s.num_heads, "M", "value");
  check_size(attention_weights, "attention_weights", 3, s.num_levels, "L", "spatial_shapes");
  check_size(attention_weights, "attention_weights", 4, s.num_points, "P", "sampling_locations");

  if (grad_output.defined()) {
    check_rank(grad_output, "grad_output", 3, "(N, Lq, M * D)");
    TORCH_CHECK_VALUE(
        grad_output.scalar_type() == vt, kOp, "grad_output has dtype ", grad_output.scalar_type(),
        " but value has dtype ", vt);
    TORCH_CHECK(
        grad_output.device() == dev, kOp, "grad_output is on ", grad_output.device(),
        " but value is on ", dev);
    check_size(grad_output, "grad_output", 0, s.batch, "N", "value");
    check_size(grad_output, "grad_output", 1, s.num_queries, "Lq", "sampling_locations");
    check_size(grad_output, "grad_output", 2, s.num_heads * s.head_dim, "M * D", "value");
  }

  // The level table: read on the host, then checked against S and level_start_index, so a
  // kernel can never read outside value.
  const auto shapes_cpu = spatial_shapes.to(at::kCPU, at::kLong).contiguous();
  const auto starts_cpu = level_start_index.to(at::kCPU, at::kLong).contiguous();
  const int64_t* hw = shapes_cpu.data_ptr<int64_t>();
  const int64_t* st = starts_cpu.data_ptr<int64_t>();
  int64_t total = 0;
  s.levels.num_levels = static_cast<int>(s.num_levels);
  for (int64_t l = 0; l < s.num_levels; ++l) {
    const int64_t h = hw[2 * l], w = hw[2 * l + 1];
    TORCH_CHECK_VALUE(
        h >= 0 && w >= 0, kOp, "spatial_shapes[", num(l), "] = (", num(h), ", ", num(w),
        ") has a negative size");
    TORCH_CHECK_VALUE(
        st[l] == total, kOp, "level_start_index[", num(l), "] is ", num(st[l]),
        " but the sizes in spatial_shapes put level ", num(l), " at ", num(total),
        " (level_start_index must be the exclusive cumulative sum of H*W)");
    s.levels.height[l] = h;
    s.levels.width[l] = w;
    s.levels.start[l] = total;
    total += h * w;
  }
  TORCH_CHECK_VALUE(
      total == s.num_keys, kOp, "spatial_shapes gives S = sum(H*W) = ", num(total),
      " but value has S = ", num(s.num_keys), " (value.shape[1])");
  return s;
}

namespace {

struct Prepared {
  at::Tensor value, locations, weights;
};

// Contiguous inputs, locations in the accumulation type (keeps location math in fp32 for
// half values: a bf16 location is a quarter pixel off at W=128).
Prepared prepare(const at::Tensor& value, const at::Tensor& loc, const at::Tensor& attn) {
  return {
      value.contiguous(), loc.to(opmath_of(value.scalar_type())).contiguous(),
      attn.contiguous()};
}

at::Tensor forward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const auto s = check_inputs(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights, {});
  TORCH_CHECK(value.device().is_cpu(), kOp, "value is on ", value.device(), ", expected cpu");
  const auto p = prepare(value, sampling_locations, attention_weights);
  return ms_deform_attn_forward_cpu(p.value, p.locations, p.weights, s);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const auto s = check_inputs(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
      grad_output);
  TORCH_CHECK(value.device().is_cpu(), kOp, "value is on ", value.device(), ", expected cpu");
  const auto p = prepare(value, sampling_locations, attention_weights);
  auto [gv, gl, ga] =
      ms_deform_attn_backward_cpu(grad_output.contiguous(), p.value, p.locations, p.weights, s);
  return {gv, gl.to(sampling_locations.scalar_type()), ga};
}

#ifdef SEG_ZOO_WITH_CUDA
at::Tensor forward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const auto s = check_inputs(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights, {});
  TORCH_CHECK(
      value.device().is_cuda(), kOp, "value is on ", value.device(),
      " but another input is on a CUDA device; all tensors must be on one device");
  const auto p = prepare(value, sampling_locations, attention_weights);
  return ms_deform_attn_forward_cuda(p.value, p.locations, p.weights, s);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const auto s = check_inputs(
      value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
      grad_output);
  TORCH_CHECK(
      value.device().is_cuda(), kOp, "value is on ", value.device(),
      " but another input is on a CUDA device; all tensors must be on one device");
  const auto p = prepare(value, sampling_locations, attention_weights);
  auto [gv, gl, ga] =
      ms_deform_attn_backward_cuda(grad_output.contiguous(), p.value, p.locations, p.weights, s);
  return {gv, gl.to(sampling_locations.scalar_type()), ga};
}
#endif

}  // namespace

TORCH_LIBRARY(seg_zoo, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor grad_value, Tensor grad_sampling_locations, Tensor grad_attention_weights)");
}

TORCH_LIBRARY_IMPL(seg_zoo, CPU, m) {
  m.impl("ms_deform_attn", &forward_cpu);
  m.impl("ms_deform_attn_backward", &backward_cpu);
}

#ifdef SEG_ZOO_WITH_CUDA
TORCH_LIBRARY_IMPL(seg_zoo, CUDA, m) {
  m.impl("ms_deform_attn", &forward_cuda);
  m.impl("ms_deform_attn_backward", &backward_cuda);
}
#endif

}  // namespace seg_zoo

// A plain CPython module: importing seg_zoo._C runs the registrations above.
namespace {

PyObject* cuda_built(PyObject*, PyObject*) {
#ifdef SEG_ZOO_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyObject* max_levels(PyObject*, PyObject*) {
  return PyLong_FromLong(seg_zoo::kMaxLevels);
}

PyMethodDef methods[] = {
    {"cuda_built", cuda_built, METH_NOARGS, "Whether the CUDA kernel was compiled in."},
    {"max_levels", max_levels, METH_NOARGS, "Most feature levels one call accepts."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "seg_zoo._C", "seg_zoo's compiled ops (torch.ops.seg_zoo.*).", -1,
    methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  return PyModule_Create(&module_def);
}
