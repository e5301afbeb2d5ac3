// The graph operators of the CUDA runner (src/backend/cuda/runner.rs): every node of a planned
// TPAVI-family graph that is not a TPAVI block. Each kernel takes one parameter struct by value,
// laid out as its #[repr(C)] twin in src/backend/cuda/launch.rs, and runs one thread per output
// value with no block-level cooperation (no shared memory, no barriers), so the emulated device
// runs them as plain loops.
//
// Storage is T (float, or fp16 bits as unsigned short) for activations and weights; biases,
// clamp bounds and resize weights stay fp32; every sum is fp32.
//
// These are the correct-first forms the emulated runner checks against tract: the convolution is
// a direct loop over its window, not yet the tiled implicit GEMM the plan names. The tiled forms
// replace the bodies behind the same parameters once a GPU can measure them.
//
// The convolution and the resize take an optional residual `res` (null for none), of the output's
// shape and layout, added last in fp32: the decoder's residual adds (a residual unit's skip, a
// fusion block's sum with the up-sampled deeper path) fold into the launch that produces one of
// their operands, so the sum is one write instead of a write, two reads and a write.

#define AVS_MAX_RANK 6

// A convolution (ONNX Conv, weights OIHW) with its bias and a clamp after it, in NCHW or NHWC.
struct AvsConv {
    int n, c_in, c_out, groups;
    int kh, kw, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
    int in_h, in_w, out_h, out_w;
    int in_nhwc, out_nhwc;
    // clamp != 0: max(lo) then min(hi) after the bias (skipped otherwise, so NaN stays NaN).
    int clamp;
    float lo, hi;
    // res_clamp != 0: the same, after the residual (a ReLU after a residual add).
    int res_clamp;
    float res_lo, res_hi;
};

template <typename T>
__device__ __forceinline__ void conv2d(const T* __restrict__ x, const T* __restrict__ w,
                                       const float* __restrict__ bias, const T* __restrict__ res,
                                       T* __restrict__ y, AvsConv p) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long total = (long long)p.n * p.c_out * p.out_h * p.out_w;
    if (idx >= total) return;
    // The output index in the output's own layout.
    int ox, oy, co, b;
    if (p.out_nhwc) {
        co = (int)(idx % p.c_out);
        long long r = idx / p.c_out;
        ox = (int)(r % p.out_w);
        r /= p.out_w;
        oy = (int)(r % p.out_h);
        b = (int)(r / p.out_h);
    } else {
        ox = (int)(idx % p.out_w);
        long long r = idx / p.out_w;
        oy = (int)(r % p.out_h);
        r /= p.out_h;
        co = (int)(r % p.c_out);
        b = (int)(r / p.c_out);
    }
    int cin_g = p.c_in / p.groups, cout_g = p.c_out / p.groups;
    int ci0 = (co / cout_g) * cin_g;
    float acc = 0.0f;
    for (int ci = 0; ci < cin_g; ci++) {
        const T* wrow = w + ((long long)co * cin_g + ci) * p.kh * p.kw;
        for (int ky = 0; ky < p.kh; ky++) {
            int iy = oy * p.stride_h + ky * p.dil_h - p.pad_top;
            if (iy < 0 || iy >= p.in_h) continue;
            for (int kx = 0; kx < p.kw; kx++) {
                int ix = ox * p.stride_w + kx * p.dil_w - p.pad_left;
                if (ix < 0 || ix >= p.in_w) continue;
                long long xi = p.in_nhwc
                    ? (((long long)b * p.in_h + iy) * p.in_w + ix) * p.c_in + ci0 + ci
                    : (((long long)b * p.c_in + ci0 + ci) * p.in_h + iy) * p.in_w + ix;
                acc += avs_ld(x, xi) * avs_ld(wrow, ky * p.kw + kx);
            }
        }
    }
    float v = acc + (bias ? bias[co] : 0.0f);
    // max then min, as the graph's Max/Min nodes (and the CPU kernels) order them.
    if (p.clamp) v = fminf(fmaxf(v, p.lo), p.hi);
    // The graph's Add after the (clamped) convolution.
    if (res) v += avs_ld(res, idx);
    if (p.res_clamp) v = fminf(fmaxf(v, p.res_lo), p.res_hi);
    avs_st(y, idx, v);
}

extern "C" __global__ void conv2d_f32(const float* x, const float* w, const float* bias,
                                      const float* res, float* y, AvsConv p) {
    conv2d(x, w, bias, res, y, p);
}

extern "C" __global__ void conv2d_f16(const unsigned short* x, const unsigned short* w,
                                      const float* bias, const unsigned short* res,
                                      unsigned short* y, AvsConv p) {
    conv2d(x, w, bias, res, y, p);
}

// out[β, i, j] = clamp(Σ_k a[β, i, k]·b[β, k, j] + bias), every operand strided; the batch axes
// (up to four) carry one stride per operand, 0 where it is broadcast. bias_mode: 0 none, 1 one
// value per row i, 2 one per column j.
struct AvsMatMul {
    int m, n, k, batch_rank;
    long long a_sm, a_sk, b_sk, b_sn, o_sm, o_sn;
    long long batch_len[4], a_bs[4], b_bs[4], o_bs[4];
    int bias_mode, clamp;
    float lo, hi;
};

template <typename T>
__device__ __forceinline__ void matmul(const T* __restrict__ a, const T* __restrict__ b,
                                       const float* __restrict__ bias, T* __restrict__ out,
                                       AvsMatMul p) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long batches = 1;
    for (int d = 0; d < p.batch_rank; d++) batches *= p.batch_len[d];
    if (idx >= batches * p.m * p.n) return;
    int j = (int)(idx % p.n);
    int i = (int)((idx / p.n) % p.m);
    long long beta = idx / ((long long)p.m * p.n);
    long long ao = 0, bo = 0, oo = 0;
    for (int d = p.batch_rank - 1; d >= 0; d--) {
        long long c = beta % p.batch_len[d];
        beta /= p.batch_len[d];
        ao += c * p.a_bs[d];
        bo += c * p.b_bs[d];
        oo += c * p.o_bs[d];
    }
    float acc = 0.0f;
    for (int q = 0; q < p.k; q++) acc += avs_ld(a, ao + i * p.a_sm + q * p.a_sk) * avs_ld(b, bo + q * p.b_sk + j * p.b_sn);
    if (p.bias_mode == 1) acc += bias[i];
    if (p.bias_mode == 2) acc += bias[j];
    if (p.clamp) acc = fminf(fmaxf(acc, p.lo), p.hi);
    avs_st(out, oo + i * p.o_sm + j * p.o_sn, acc);
}

extern "C" __global__ void matmul_f32(const float* a, const float* b, const float* bias, float* out,
                                      AvsMatMul p) {
    matmul(a, b, bias, out, p);
}

extern "C" __global__ void matmul_f16(const unsigned short* a, const unsigned short* b,
                                      const float* bias, unsigned short* out, AvsMatMul p) {
    matmul(a, b, bias, out, p);
}

// An output of `rank` axes and, per axis, how far each of up to two inputs moves (0 where it is
// broadcast): the index arithmetic of broadcasting and of transposition alike.
struct AvsStrided {
    int rank;
    long long dims[AVS_MAX_RANK];
    long long a_st[AVS_MAX_RANK];
    long long b_st[AVS_MAX_RANK];
};

__device__ __forceinline__ void avs_offsets(const AvsStrided& s, long long idx, long long* ao, long long* bo) {
    long long a = 0, b = 0;
    for (int d = s.rank - 1; d >= 0; d--) {
        long long c = idx % s.dims[d];
        idx /= s.dims[d];
        a += c * s.a_st[d];
        b += c * s.b_st[d];
    }
    *ao = a;
    *bo = b;
}

// Element-wise a ∘ b with broadcasting. kind: 0 add, 1 sub, 2 mul, 3 div, 4 max, 5 min.
template <typename T>
__device__ __forceinline__ void binary(const T* a, const T* b, T* out, int kind, AvsStrided s,
                                       long long n) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    long long ao, bo;
    avs_offsets(s, idx, &ao, &bo);
    float x = avs_ld(a, ao), y = avs_ld(b, bo), r;
    switch (kind) {
        case 0: r = x + y; break;
        case 1: r = x - y; break;
        case 2: r = x * y; break;
        case 3: r = x / y; break;
        case 4: r = fmaxf(x, y); break;
        default: r = fminf(x, y); break;
    }
    avs_st(out, idx, r);
}

extern "C" __global__ void binary_f32(const float* a, const float* b, float* out, int kind,
                                      AvsStrided s, long long n) {
    binary(a, b, out, kind, s, n);
}

extern "C" __global__ void binary_f16(const unsigned short* a, const unsigned short* b,
                                      unsigned short* out, int kind, AvsStrided s, long long n) {
    binary(a, b, out, kind, s, n);
}

// Element-wise f(x). kind: 0 sigmoid, 1 ReLU, 2 exp, 3 negation, 4 absolute value, 5 square root,
// 6 reciprocal, 7 tanh, 8 erf.
template <typename T>
__device__ __forceinline__ void unary(const T* x, T* out, int kind, long long n) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    float v = avs_ld(x, idx), r;
    switch (kind) {
        case 0: r = 1.0f / (1.0f + expf(-v)); break;
        case 1: r = fmaxf(v, 0.0f); break;
        case 2: r = expf(v); break;
        case 3: r = -v; break;
        case 4: r = fabsf(v); break;
        case 5: r = sqrtf(v); break;
        case 6: r = 1.0f / v; break;
        case 7: r = tanhf(v); break;
        default: r = erff(v); break;
    }
    avs_st(out, idx, r);
}

extern "C" __global__ void unary_f32(const float* x, float* out, int kind, long long n) {
    unary(x, out, kind, n);
}

extern "C" __global__ void unary_f16(const unsigned short* x, unsigned short* out, int kind,
                                     long long n) {
    unary(x, out, kind, n);
}

// out (contiguous, s.dims) ← x read through s.a_st: a transposition when a_st permutes x's strides.
template <typename T>
__device__ __forceinline__ void gather_strided(const T* x, T* out, AvsStrided s, long long n) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    long long xo, unused;
    avs_offsets(s, idx, &xo, &unused);
    out[idx] = x[xo];
}

extern "C" __global__ void transpose_f32(const float* x, float* out, AvsStrided s, long long n) {
    gather_strided(x, out, s, n);
}

extern "C" __global__ void transpose_f16(const unsigned short* x, unsigned short* out, AvsStrided s,
                                         long long n) {
    gather_strided(x, out, s, n);
}

// NCHW max pooling; padded positions never win (they are skipped, as -inf padding would be).
struct AvsPool {
    int nc, in_h, in_w, out_h, out_w;
    int kh, kw, stride_h, stride_w, pad_top, pad_left;
};

template <typename T>
__device__ __forceinline__ void max_pool(const T* x, T* out, AvsPool p) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)p.nc * p.out_h * p.out_w) return;
    int ox = (int)(idx % p.out_w);
    int oy = (int)((idx / p.out_w) % p.out_h);
    long long plane = idx / ((long long)p.out_h * p.out_w);
    const T* src = x + plane * p.in_h * p.in_w;
    // The first tap in the window starts the maximum (no -inf constant is needed; a window
    // wholly in the padding, which no valid geometry has, gives 0).
    float m = 0.0f;
    bool any = false;
    for (int ky = 0; ky < p.kh; ky++) {
        int iy = oy * p.stride_h + ky - p.pad_top;
        if (iy < 0 || iy >= p.in_h) continue;
        for (int kx = 0; kx < p.kw; kx++) {
            int ix = ox * p.stride_w + kx - p.pad_left;
            if (ix < 0 || ix >= p.in_w) continue;
            float v = avs_ld(src, (long long)iy * p.in_w + ix);
            m = any ? fmaxf(m, v) : v;
            any = true;
        }
    }
    avs_st(out, idx, m);
}

extern "C" __global__ void max_pool_f32(const float* x, float* out, AvsPool p) { max_pool(x, out, p); }

extern "C" __global__ void max_pool_f16(const unsigned short* x, unsigned short* out, AvsPool p) {
    max_pool(x, out, p);
}

// NCHW two-tap linear resize from per-axis tap tables (the graph's own coordinate rule, planned
// on the host): taps [out][2] source indices, weights [out][2]. Rows are interpolated first and
// columns second, as the CPU operator does.
struct AvsResize {
    int nc, in_h, in_w, out_h, out_w;
};

template <typename T>
__device__ __forceinline__ void resize_linear(const T* x, const T* res, T* out,
                                              const int* __restrict__ row_taps,
                                              const float* __restrict__ row_w,
                                              const int* __restrict__ col_taps,
                                              const float* __restrict__ col_w, AvsResize p) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)p.nc * p.out_h * p.out_w) return;
    int ox = (int)(idx % p.out_w);
    int oy = (int)((idx / p.out_w) % p.out_h);
    long long plane = idx / ((long long)p.out_h * p.out_w);
    const T* src = x + plane * p.in_h * p.in_w;
    int c0 = col_taps[2 * ox], c1 = col_taps[2 * ox + 1];
    float cw0 = col_w[2 * ox], cw1 = col_w[2 * ox + 1];
    int r0 = row_taps[2 * oy], r1 = row_taps[2 * oy + 1];
    float rw0 = row_w[2 * oy], rw1 = row_w[2 * oy + 1];
    // Each source row interpolated along the columns, then the two rows combined.
    float top = avs_ld(src, (long long)r0 * p.in_w + c0) * cw0 + avs_ld(src, (long long)r0 * p.in_w + c1) * cw1;
    float bot = avs_ld(src, (long long)r1 * p.in_w + c0) * cw0 + avs_ld(src, (long long)r1 * p.in_w + c1) * cw1;
    float v = top * rw0 + bot * rw1;
    if (res) v += avs_ld(res, idx);
    avs_st(out, idx, v);
}

extern "C" __global__ void resize_linear_f32(const float* x, const float* res, float* out,
                                             const int* row_taps, const float* row_w,
                                             const int* col_taps, const float* col_w, AvsResize p) {
    resize_linear(x, res, out, row_taps, row_w, col_taps, col_w, p);
}

extern "C" __global__ void resize_linear_f16(const unsigned short* x, const unsigned short* res,
                                             unsigned short* out, const int* row_taps,
                                             const float* row_w, const int* col_taps,
                                             const float* col_w, AvsResize p) {
    resize_linear(x, res, out, row_taps, row_w, col_taps, col_w, p);
}
