// CUDA kernels of multi-scale deformable attention (Deformable DETR, Eq. 3).
//
// Forward: one thread per output element (n, q, m, d); consecutive threads differ in d, so
// value loads and output stores are coalesced. Backward: one warp per (n, q, m); lanes
// stride over d, the per-sample sums over d (grad of attention / locations) are warp
// reductions, and grad_value is scattered with atomicAdd into an opmath buffer.
//
// Sampling matches F.grid_sample(mode="bilinear", padding_mode="zeros",
// align_corners=False) on each level: pixel coordinate = normalised * size - 0.5.
// All sums are in at::opmath_type<scalar_t> (float for half / bfloat16).

#include "../ms_deform_attn.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>

namespace seg_zoo {
namespace {

constexpr int kThreads = 256;  // multiple of the warp size: backward maps warps onto it
constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Bilinear footprint of one sampling point on one level. Corner order (shared by forward
// and backward): 0 = (h_low, w_low), 1 = (h_low, w_high), 2 = (h_high, w_low),
// 3 = (h_high, w_high).
template <typename acc_t>
struct Corners {
  int64_t key[4];   // index on the flattened S axis; only meaningful where valid
  acc_t weight[4];  // bilinear weight of each corner
  bool valid[4];    // corner lies inside the level (zero padding otherwise)
  acc_t lx, ly;     // fractional parts, needed for the location gradient
};

// Returns false when the point is skipped altogether (outside the open box
// (-1, W) x (-1, H); NaN coordinates fail every comparison and are skipped too).
template <typename acc_t>
__device__ __forceinline__ bool bilinear_corners(
    acc_t loc_x, acc_t loc_y, int64_t height, int64_t width, int64_t start,
    Corners<acc_t>& c) {
  // align_corners=False: pixel centres sit at (i + 0.5) / size.
  const acc_t x = loc_x * static_cast<acc_t>(width) - acc_t(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(height) - acc_t(0.5);
  if (!(y > acc_t(-1) && y < static_cast<acc_t>(height) && x > acc_t(-1) &&
        x < static_cast<acc_t>(width))) {
    return false;
  }
  // The box check bounds x, y, so the conversion to an integer is safe.
  const acc_t x_floor = floor(x);
  const acc_t y_floor = floor(y);
  const int64_t w_low = static_cast<int64_t>(x_floor);
  const int64_t h_low = static_cast<int64_t>(y_floor);
  const int64_t w_high = w_low + 1;
  const int64_t h_high = h_low + 1;
  c.lx = x - x_floor;
  c.ly = y - y_floor;
  const acc_t hx = acc_t(1) - c.lx;
  const acc_t hy = acc_t(1) - c.ly;

  const bool w_low_in = w_low >= 0;
  const bool w_high_in = w_high <= width - 1;
  const bool h_low_in = h_low >= 0;
  const bool h_high_in = h_high <= height - 1;

  c.weight[0] = hy * hx;
  c.weight[1] = hy * c.lx;
  c.weight[2] = c.ly * hx;
  c.weight[3] = c.ly * c.lx;
  c.valid[0] = h_low_in && w_low_in;
  c.valid[1] = h_low_in && w_high_in;
  c.valid[2] = h_high_in && w_low_in;
  c.valid[3] = h_high_in && w_high_in;
  const int64_t row_low = start + h_low * width;
  const int64_t row_high = row_low + width;
  c.key[0] = row_low + w_low;
  c.key[1] = row_low + w_high;
  c.key[2] = row_high + w_low;
  c.key[3] = row_high + w_high;
  return true;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
  // Butterfly: every lane ends with the total; needs all 32 lanes present.
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(kFullMask, v, offset);
  }
  return v;
}

// value (N, S, M, D); loc (N, Lq, M, L, P, 2); attn (N, Lq, M, L, P);
// out (N, Lq, M * D) viewed as (N, Lq, M, D).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) ms_deform_attn_forward_kernel(
    const scalar_t* __restrict__ value,
    const at::opmath_type<scalar_t>* __restrict__ loc,
    const scalar_t* __restrict__ attn,
    scalar_t* __restrict__ out,
    const MSDAShapes shapes,  // by value: the level table travels in kernel parameters
    int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t S = shapes.num_keys;
  const int64_t M = shapes.num_heads;
  const int64_t D = shapes.head_dim;
  const int64_t Lq = shapes.num_queries;
  const int num_levels = static_cast<int>(shapes.num_levels);
  const int64_t P = shapes.num_points;
  const int64_t key_stride = M * D;  // distance between consecutive keys in value

  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t nqm = i / D;  // flat (n, q, m)
    const int64_t d = i - nqm * D;
    const int64_t nq = nqm / M;
    const int64_t m = nqm - nq * M;
    const int64_t n = nq / Lq;

    const scalar_t* value_nm = value + (n * S * M + m) * D + d;
    const acc_t* loc_nqm = loc + nqm * num_levels * P * 2;
    const scalar_t* attn_nqm = attn + nqm * num_levels * P;

    acc_t acc = acc_t(0);
    for (int l = 0; l < num_levels; ++l) {
      const int64_t height = shapes.levels.height[l];
      const int64_t width = shapes.levels.width[l];
      const int64_t start = shapes.levels.start[l];
      for (int64_t p = 0; p < P; ++p) {
        const int64_t lp = l * P + p;
        Corners<acc_t> c;
        if (!bilinear_corners<acc_t>(loc_nqm[2 * lp], loc_nqm[2 * lp + 1], height, width,
                                     start, c)) {
          continue;
        }
        acc_t sample = acc_t(0);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (c.valid[k]) {
            sample += c.weight[k] * static_cast<acc_t>(value_nm[c.key[k] * key_stride]);
          }
        }
        acc += static_cast<acc_t>(attn_nqm[lp]) * sample;
      }
    }
    out[i] = static_cast<scalar_t>(acc);
  }
}

// One warp per (n, q, m). grad_value_acc has value's shape (N, S, M, D) in opmath and is
// zero on entry; grad_loc / grad_attn are fully written (zeros for skipped samples).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) ms_deform_attn_backward_kernel(
    const scalar_t* __restrict__ grad_out,
    const scalar_t* __restrict__ value,
    const at::opmath_type<scalar_t>* __restrict__ loc,
    const scalar_t* __restrict__ attn,
    at::opmath_type<scalar_t>* __restrict__ grad_value_acc,
    at::opmath_type<scalar_t>* __restrict__ grad_loc,
    scalar_t* __restrict__ grad_attn,
    const MSDAShapes shapes,
    int64_t total_warps) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t S = shapes.num_keys;
  const int64_t M = shapes.num_heads;
  const int64_t D = shapes.head_dim;
  const int64_t Lq = shapes.num_queries;
  const int num_levels = static_cast<int>(shapes.num_levels);
  const int64_t P = shapes.num_points;
  const int64_t key_stride = M * D;

  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const int64_t warps_per_block = blockDim.x / kWarpSize;
  // The loop bound depends only on the warp index, so a whole warp always iterates
  // together and the full-mask shuffles below are safe.
  for (int64_t nqm = static_cast<int64_t>(blockIdx.x) * warps_per_block +
                     threadIdx.x / kWarpSize;
       nqm < total_warps; nqm += warps_per_block * gridDim.x) {
    const int64_t nq = nqm / M;
    const int64_t m = nqm - nq * M;
    const int64_t n = nq / Lq;

    const scalar_t* grad_out_nqm = grad_out + nqm * D;  // (N, Lq, M*D) row for (n, q, m)
    const int64_t value_offset = (n * S * M + m) * D;
    const scalar_t* value_nm = value + value_offset;
    acc_t* grad_value_nm = grad_value_acc + value_offset;
    const acc_t* loc_nqm = loc + nqm * num_levels * P * 2;
    acc_t* grad_loc_nqm = grad_loc + nqm * num_levels * P * 2;
    const scalar_t* attn_nqm = attn + nqm * num_levels * P;
    scalar_t* grad_attn_nqm = grad_attn + nqm * num_levels * P;

    for (int l = 0; l < num_levels; ++l) {
      const int64_t height = shapes.levels.height[l];
      const int64_t width = shapes.levels.width[l];
      const int64_t start = shapes.levels.start[l];
      for (int64_t p = 0; p < P; ++p) {
        const int64_t lp = l * P + p;
        const acc_t a = static_cast<acc_t>(attn_nqm[lp]);
        Corners<acc_t> c;
        acc_t g_attn = acc_t(0);
        acc_t g_x = acc_t(0);
        acc_t g_y = acc_t(0);
        // Same (l, p) on every lane, so this branch is warp-uniform.
        if (bilinear_corners<acc_t>(loc_nqm[2 * lp], loc_nqm[2 * lp + 1], height, width,
                                    start, c)) {
          acc_t scaled_w[4];  // a * w_c: the factor of grad_out in grad_value
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            scaled_w[k] = a * c.weight[k];
          }
          // Per-lane partial sums over its d's of v_c = <value[corner c], grad_out>.
          acc_t v[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
          for (int64_t d = lane; d < D; d += kWarpSize) {
            const acc_t g = static_cast<acc_t>(grad_out_nqm[d]);
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              if (c.valid[k]) {
                const int64_t off = c.key[k] * key_stride + d;
                v[k] += static_cast<acc_t>(value_nm[off]) * g;
                atomicAdd(grad_value_nm + off, scaled_w[k] * g);
              }
            }
          }
          // The three outputs are linear in v, so combine per lane and reduce three sums
          // instead of four.
          const acc_t hx = acc_t(1) - c.lx;
          const acc_t hy = acc_t(1) - c.ly;
          g_attn = c.weight[0] * v[0] + c.weight[1] * v[1] + c.weight[2] * v[2] +
                   c.weight[3] * v[3];
          g_x = hy * (v[1] - v[0]) + c.ly * (v[3] - v[2]);
          g_y = hx * (v[2] - v[0]) + c.lx * (v[3] - v[1]);
          g_attn = warp_sum(g_attn);
          g_x = warp_sum(g_x);
          g_y = warp_sum(g_y);
          // d(pixel x)/d(loc x) = W, d(pixel y)/d(loc y) = H.
          g_x *= a * static_cast<acc_t>(width);
          g_y *= a * static_cast<acc_t>(height);
        }
        if (lane == 0) {
          grad_attn_nqm[lp] = static_cast<scalar_t>(g_attn);
          grad_loc_nqm[2 * lp] = g_x;
          grad_loc_nqm[2 * lp + 1] = g_y;
        }
      }
    }
  }
}

// Enough blocks to fill the device a few times over; grid-stride loops cover the rest.
int num_blocks(int64_t work_items, int64_t items_per_block) {
  const int64_t needed = (work_items + items_per_block - 1) / items_per_block;
  const int64_t cap =
      static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return static_cast<int>(std::max<int64_t>(1, std::min(needed, cap)));
}

}  // namespace

at::Tensor ms_deform_attn_forward_cuda(
    const at::Tensor& value,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const MSDAShapes& shapes) {
  c10::cuda::CUDAGuard device_guard(value.device());
  auto output = at::empty(
      {shapes.batch, shapes.num_queries, shapes.num_heads * shapes.head_dim},
      value.options());
  const int64_t total = output.numel();
  if (total == 0) {
    return output;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int blocks = num_blocks(total, kThreads);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, value.scalar_type(),
      "ms_deform_attn_forward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        ms_deform_attn_forward_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
            value.const_data_ptr<scalar_t>(), sampling_locations.const_data_ptr<acc_t>(),
            attention_weights.const_data_ptr<scalar_t>(),
            output.mutable_data_ptr<scalar_t>(), shapes, total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const MSDAShapes& shapes) {
  c10::cuda::CUDAGuard device_guard(value.device());
  // grad_value is accumulated with atomics, hence zero-initialised and in opmath
  // (float atomics for half / bfloat16, cast back at the end).
  const at::ScalarType acc_type = sampling_locations.scalar_type();  // == opmath type
  auto grad_value_acc = at::zeros(value.sizes(), value.options().dtype(acc_type));
  // Every element of these two is written by the kernel, zeros included.
  auto grad_loc = at::empty_like(sampling_locations);
  auto grad_attn = at::empty_like(attention_weights);

  const int64_t total_warps = shapes.batch * shapes.num_queries * shapes.num_heads;
  if (total_warps > 0 && grad_loc.numel() > 0) {
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    const int blocks = num_blocks(total_warps, kThreads / kWarpSize);
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::ScalarType::Half, at::ScalarType::BFloat16, value.scalar_type(),
        "ms_deform_attn_backward_cuda", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          ms_deform_attn_backward_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
              grad_output.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(),
              sampling_locations.const_data_ptr<acc_t>(),
              attention_weights.const_data_ptr<scalar_t>(),
              grad_value_acc.mutable_data_ptr<acc_t>(), grad_loc.mutable_data_ptr<acc_t>(),
              grad_attn.mutable_data_ptr<scalar_t>(), shapes, total_warps);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  // No-op (same tensor) for float / double.
  auto grad_value = grad_value_acc.to(value.scalar_type());
  return std::make_tuple(grad_value, grad_loc, grad_attn);
}

}  // namespace seg_zoo
