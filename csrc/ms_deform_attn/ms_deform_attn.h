// Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, Eq. 3).
//
// One schema (ms_deform_attn.cpp) and one place for input checks (check_inputs below);
// per-device kernels in cpu/ and cuda/. Kernels receive inputs that are already checked,
// contiguous, and with sampling locations in the accumulation type (opmath).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>

namespace seg_zoo {

// Levels are passed to kernels by value (no device table, no host sync in the kernel).
constexpr int kMaxLevels = 16;

struct LevelTable {
  int64_t height[kMaxLevels];
  int64_t width[kMaxLevels];
  int64_t start[kMaxLevels];  // offset of level l in the flattened S axis
  int num_levels;
};

// Sizes of one call, all checked for consistency.
struct MSDAShapes {
  int64_t batch;        // N
  int64_t num_keys;     // S = sum_l H_l * W_l
  int64_t num_heads;    // M
  int64_t head_dim;     // D
  int64_t num_queries;  // Lq
  int64_t num_levels;   // L
  int64_t num_points;   // P
  LevelTable levels;
};

// Validates every argument (rank, sizes, dtypes, devices, level table) and raises a
// c10::ValueError / c10::Error naming the argument at fault. grad_output is checked when
// defined. Reads spatial_shapes / level_start_index on the host (they are tiny; when they
// live on a GPU this is one small copy).
MSDAShapes check_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output);

// Kernels. value, attention_weights (and grad_output) are contiguous and share the value
// dtype (float64, float32, float16, bfloat16); sampling_locations is contiguous in
// at::opmath_type<value dtype> (float64 for float64, float32 otherwise).
// Shapes: value (N, S, M, D); sampling_locations (N, Lq, M, L, P, 2);
// attention_weights (N, Lq, M, L, P); output / grad_output (N, Lq, M * D).
at::Tensor ms_deform_attn_forward_cpu(
    const at::Tensor& value,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const MSDAShapes& shapes);

// Returns (grad_value in value dtype, grad_sampling_locations in opmath dtype,
// grad_attention_weights in value dtype).
std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const MSDAShapes& shapes);

#ifdef SEG_ZOO_WITH_CUDA
at::Tensor ms_deform_attn_forward_cuda(
    const at::Tensor& value,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const MSDAShapes& shapes);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const MSDAShapes& shapes);
#endif

}  // namespace seg_zoo
