// Body of the CPU kernels, included twice by ms_deform_attn_cpu.cpp: once for any x86-64 /
// other CPU and once compiled for AVX2 + FMA (picked at run time). No include guard on purpose;
// the includer opens the namespace.
//
// Forward is parallel over (n, q): each task reads value and writes its own output rows.
// Backward is parallel over (n, m): grad_value[n, :, m, :] is written by one task only, so no
// atomics are needed. The inner loops run over the D contiguous channels of one head;
// accumulation is in opmath (fp32 for half types).

// Element -> accumulation type. fp16 goes through SEG_ZOO_HALF_TO_FLOAT, which the includer
// defines: the hardware conversion (F16C) in the AVX2 build, c10's portable one otherwise
// (branchy, it keeps the channel loops from vectorising: ~8x slower on fp16).
template <typename T>
inline at::opmath_type<T> to_acc(T x) {
  return static_cast<at::opmath_type<T>>(x);
}

template <>
inline float to_acc<c10::Half>(c10::Half x) {
  return SEG_ZOO_HALF_TO_FLOAT(x.x);
}

// The four bilinear neighbours of one sample: flat offsets (in units of spatial positions,
// relative to the level start) and weights; a neighbour outside the map has weight 0 and
// offset -1. Matches grid_sample(bilinear, zeros, align_corners=False).
template <typename acc_t>
struct Corners {
  int64_t offset[4];
  acc_t weight[4];
  // Partial derivatives of the four weights w.r.t. the pixel coordinates (x, y).
  acc_t dw_dx[4];
  acc_t dw_dy[4];
};

template <typename acc_t>
inline bool bilinear_corners(acc_t x, acc_t y, int64_t height, int64_t width, Corners<acc_t>& c) {
  // Pixel coordinates; pixel centres sit at integers.
  const acc_t px = x * static_cast<acc_t>(width) - acc_t(0.5);
  const acc_t py = y * static_cast<acc_t>(height) - acc_t(0.5);
  // Written so that NaN fails the test.
  if (!(py > acc_t(-1) && px > acc_t(-1) && py < static_cast<acc_t>(height) &&
        px < static_cast<acc_t>(width))) {
    return false;
  }
  const acc_t fy = std::floor(py), fx = std::floor(px);
  const int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
  const int64_t y1 = y0 + 1, x1 = x0 + 1;
  const acc_t ly = py - fy, lx = px - fx;
  const acc_t hy = acc_t(1) - ly, hx = acc_t(1) - lx;
  // corner order: (y0, x0), (y0, x1), (y1, x0), (y1, x1)
  const int64_t ys[4] = {y0, y0, y1, y1};
  const int64_t xs[4] = {x0, x1, x0, x1};
  const acc_t w[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
  const acc_t dx[4] = {-hy, hy, -ly, ly};
  const acc_t dy[4] = {-hx, -lx, hx, lx};
  for (int k = 0; k < 4; ++k) {
    const bool inside = ys[k] >= 0 && ys[k] < height && xs[k] >= 0 && xs[k] < width;
    c.offset[k] = inside ? ys[k] * width + xs[k] : -1;
    c.weight[k] = inside ? w[k] : acc_t(0);
    c.dw_dx[k] = dx[k];
    c.dw_dy[k] = dy[k];
  }
  return true;
}

// kD > 0 fixes the channel count at compile time: the accumulator then lives in registers and
// the channel loops are unrolled and vectorised (D = 32 is Mask2Former's and Deformable DETR's
// 256 channels over 8 heads). kD = 0 handles any D.
template <int kD, typename scalar_t>
void forward_kernel(
    const scalar_t* __restrict__ value,
    const at::opmath_type<scalar_t>* __restrict__ loc,
    const scalar_t* __restrict__ attn,
    scalar_t* __restrict__ out,
    const MSDAShapes& s) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t M = s.num_heads, L = s.num_levels, P = s.num_points;
  const int64_t D = kD > 0 ? kD : s.head_dim;
  const int64_t S = s.num_keys, Lq = s.num_queries;
  const int64_t key_stride = M * D;  // between two spatial positions of value
  // Enough work per task to amortise the task start, small enough to balance.
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, M * L * P));
  at::parallel_for(0, s.batch * Lq, grain, [&](int64_t begin, int64_t end) {
    acc_t acc_fixed[kD > 0 ? kD : 1];
    std::vector<acc_t> acc_buf(kD > 0 ? 0 : D);
    acc_t* __restrict__ acc = kD > 0 ? acc_fixed : acc_buf.data();
    Corners<acc_t> c;
    for (int64_t nq = begin; nq < end; ++nq) {
      const int64_t n = nq / Lq;
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t d = 0; d < D; ++d) {
          acc[d] = acc_t(0);
        }
        const int64_t nqm = nq * M + m;
        const acc_t* l_ptr = loc + nqm * L * P * 2;  // (L, P, 2)
        const scalar_t* a_ptr = attn + nqm * L * P;  // (L, P)
        for (int64_t l = 0; l < L; ++l) {
          const int64_t H = s.levels.height[l], W = s.levels.width[l];
          // value rows of this (n, level, head): (H * W, D) with stride key_stride
          const scalar_t* v_level = value + (n * S + s.levels.start[l]) * key_stride + m * D;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t lp = l * P + p;
            if (!bilinear_corners(l_ptr[2 * lp], l_ptr[2 * lp + 1], H, W, c)) {
              continue;
            }
            const acc_t a = to_acc(a_ptr[lp]);
            for (int k = 0; k < 4; ++k) {
              if (c.offset[k] < 0) {
                continue;
              }
              const acc_t wk = a * c.weight[k];
              const scalar_t* __restrict__ v = v_level + c.offset[k] * key_stride;
              for (int64_t d = 0; d < D; ++d) {
                acc[d] += wk * to_acc(v[d]);
              }
            }
          }
        }
        scalar_t* o = out + nqm * D;
        for (int64_t d = 0; d < D; ++d) {
          o[d] = static_cast<scalar_t>(acc[d]);
        }
      }
    }
  });
}

template <int kD, typename scalar_t>
void backward_kernel(
    const scalar_t* __restrict__ grad_out,
    const scalar_t* __restrict__ value,
    const at::opmath_type<scalar_t>* __restrict__ loc,
    const scalar_t* __restrict__ attn,
    at::opmath_type<scalar_t>* __restrict__ grad_value,  // (N, S, M, D) in opmath
    at::opmath_type<scalar_t>* __restrict__ grad_loc,
    scalar_t* __restrict__ grad_attn,
    const MSDAShapes& s) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t M = s.num_heads, L = s.num_levels, P = s.num_points;
  const int64_t D = kD > 0 ? kD : s.head_dim;
  const int64_t S = s.num_keys, Lq = s.num_queries;
  const int64_t key_stride = M * D;
  at::parallel_for(0, s.batch * M, 1, [&](int64_t begin, int64_t end) {
    acc_t go_fixed[kD > 0 ? kD : 1];
    std::vector<acc_t> go_buf(kD > 0 ? 0 : D);
    acc_t* __restrict__ go = kD > 0 ? go_fixed : go_buf.data();
    Corners<acc_t> c;
    for (int64_t nm = begin; nm < end; ++nm) {
      const int64_t n = nm / M, m = nm % M;
      for (int64_t q = 0; q < Lq; ++q) {
        const int64_t nqm = (n * Lq + q) * M + m;
        const scalar_t* g = grad_out + nqm * D;
        for (int64_t d = 0; d < D; ++d) {
          go[d] = to_acc(g[d]);
        }
        const acc_t* l_ptr = loc + nqm * L * P * 2;
        const scalar_t* a_ptr = attn + nqm * L * P;
        acc_t* gl_ptr = grad_loc + nqm * L * P * 2;
        scalar_t* ga_ptr = grad_attn + nqm * L * P;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t H = s.levels.height[l], W = s.levels.width[l];
          const int64_t level_off = (n * S + s.levels.start[l]) * key_stride + m * D;
          const scalar_t* v_level = value + level_off;
          acc_t* gv_level = grad_value + level_off;
          for (int64_t p = 0; p < P; ++p) {
            const int64_t lp = l * P + p;
            acc_t g_attn = 0, g_x = 0, g_y = 0;
            if (bilinear_corners(l_ptr[2 * lp], l_ptr[2 * lp + 1], H, W, c)) {
              const acc_t a = to_acc(a_ptr[lp]);
              for (int k = 0; k < 4; ++k) {
                if (c.offset[k] < 0) {
                  continue;
                }
                const scalar_t* __restrict__ v = v_level + c.offset[k] * key_stride;
                acc_t* __restrict__ gv = gv_level + c.offset[k] * key_stride;
                const acc_t wk = a * c.weight[k];
                acc_t dot = 0;  // <value at corner k, grad_out>
                for (int64_t d = 0; d < D; ++d) {
                  dot += to_acc(v[d]) * go[d];
                  gv[d] += wk * go[d];
                }
                g_attn += c.weight[k] * dot;
                g_x += c.dw_dx[k] * dot;
                g_y += c.dw_dy[k] * dot;
              }
              // d(px)/dx = W, d(py)/dy = H
              g_x *= a * static_cast<acc_t>(W);
              g_y *= a * static_cast<acc_t>(H);
            }
            ga_ptr[lp] = static_cast<scalar_t>(g_attn);
            gl_ptr[2 * lp] = g_x;
            gl_ptr[2 * lp + 1] = g_y;
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void forward(
    const scalar_t* value, const at::opmath_type<scalar_t>* loc, const scalar_t* attn,
    scalar_t* out, const MSDAShapes& s) {
  if (s.head_dim == 32) {
    forward_kernel<32>(value, loc, attn, out, s);
  } else {
    forward_kernel<0>(value, loc, attn, out, s);
  }
}

template <typename scalar_t>
void backward(
    const scalar_t* grad_out, const scalar_t* value, const at::opmath_type<scalar_t>* loc,
    const scalar_t* attn, at::opmath_type<scalar_t>* grad_value,
    at::opmath_type<scalar_t>* grad_loc, scalar_t* grad_attn, const MSDAShapes& s) {
  if (s.head_dim == 32) {
    backward_kernel<32>(grad_out, value, loc, attn, grad_value, grad_loc, grad_attn, s);
  } else {
    backward_kernel<0>(grad_out, value, loc, attn, grad_value, grad_loc, grad_attn, s);
  }
}
