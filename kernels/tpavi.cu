// The TPAVI audio-visual block (docs/spec/tpavi.md §6.5-6.6) as one kernel sequence, channels-last.
//
// TPAVI has no softmax, so y_n = θ_n·K with K = (1/N)·Σ_m φ_mᵀ g_m (128×128), and because φ is
// constant within a frame only the per-frame spatial sums S_t of V are needed to build K:
// Σ_{y,x} g_{t,y,x} = W_g·S_t + h·w·b_g. Everything per position then folds into one 256×256
// matrix applied to V, plus a bias, followed by the channel LayerNorm:
//   z_n = V_n + W_z'·(K^T·(W_θ·V_n + b_θ)) + b_z' = Weff^T·V_n + cvec,   out_n = LN(z_n)
// where W_z', b_z' carry the folded BatchNorm and Weff = W_θ^T·K·W_z'^T + I (the residual).
//
// Launch sequence for one 5-frame group (host: src/backend/cuda/ops.rs, `Tpavi`):
//   tpavi_frame_sum      V [T,hw,C]            → S [T,C]
//   tpavi_small_gemm ×8  align, φ, Σg, K, W_θ^T·K, Weff, b_θ·K, cvec   (all ≤ 256×256, fp32)
//                        (the sequence is `tpavi_steps` in src/backend/cuda/reference.rs)
//   tpavi_apply          V, Weff, cvec, γ, β   → out [T,hw,C]   (GEMM + residual + LayerNorm)
// V and out are fp32 or fp16; the small matrices and every accumulation stay fp32.

// S[t][c] = Σ_p V[t][p][c]. Grid (ceil(C/32), T), block (32, 8): lanes run along channels so
// every load is coalesced; the 8 rows stride over positions and meet in shared memory.
template <typename T>
__device__ __forceinline__ void tpavi_frame_sum(const T* __restrict__ v, int hw, int c,
                                                float* __restrict__ sums) {
    __shared__ float part[8][33];
    int ch = blockIdx.x * 32 + threadIdx.x;
    int t = blockIdx.y;
    float acc = 0.0f;
    if (ch < c) {
        const T* frame = v + (long long)t * hw * c;
        for (int p = threadIdx.y; p < hw; p += 8) acc += avs_ld(frame, (long long)p * c + ch);
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && ch < c) {
        float s = 0.0f;
#pragma unroll
        for (int r = 0; r < 8; r++) s += part[r][threadIdx.x];
        sums[(long long)t * c + ch] = s;
    }
}

extern "C" __global__ void tpavi_frame_sum_f32(const float* v, int hw, int c, float* sums) {
    tpavi_frame_sum(v, hw, c, sums);
}

extern "C" __global__ void tpavi_frame_sum_f16(const unsigned short* v, int hw, int c, float* sums) {
    tpavi_frame_sum(v, hw, c, sums);
}

// out[i][j] = alpha·Σ_k A(i,k)·B(k,j) + bias_scale·bias[j] + (i == j ? diag : 0), with
// A(i,k) = a[i·sam + k·sak] and B(k,j) = b[k·sbk + j·sbn], so transposes cost nothing. `bias` may be
// null. One thread per output: these matrices are built once per group and are tiny next to the
// per-position work.
extern "C" __global__ void tpavi_small_gemm(const float* __restrict__ a, long long sam, long long sak,
                                            const float* __restrict__ b, long long sbk,
                                            long long sbn, const float* __restrict__ bias,
                                            float bias_scale, float alpha, float diag,
                                            float* __restrict__ out, int m, int n, int k) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)m * n) return;
    int i = (int)(idx / n), j = (int)(idx % n);
    float acc = 0.0f;
    for (int q = 0; q < k; q++) acc += a[i * sam + q * sak] * b[q * sbk + j * sbn];
    float r = alpha * acc;
    if (bias) r += bias_scale * bias[j];
    if (i == j) r += diag;
    out[idx] = r;
}

// out_n = LayerNorm(Weff^T·V_n + cvec) over the C = 256 channels, eps given. One block of 256
// threads owns 32 positions: thread `co` accumulates output channel co for all 32 of them, with
// V tiles and Weff slices staged through shared memory. The finished 32×256 tile is then
// normalised by the 8 warps, 4 rows each, with a two-pass mean and variance.
#define TPAVI_C 256
#define TPAVI_ROWS 32
#define TPAVI_KC 32

template <typename T>
__device__ __forceinline__ void tpavi_apply(const T* __restrict__ v, const float* __restrict__ weff,
                                            const float* __restrict__ cvec,
                                            const float* __restrict__ gamma,
                                            const float* __restrict__ beta, T* __restrict__ out,
                                            int n_pos, float eps) {
    __shared__ float vs[TPAVI_ROWS][TPAVI_KC + 1];
    __shared__ float ws[TPAVI_KC * TPAVI_C];  // later reused as the 32×256 output tile
    int co = threadIdx.x;
    long long row0 = (long long)blockIdx.x * TPAVI_ROWS;
    float acc[TPAVI_ROWS];
#pragma unroll
    for (int r = 0; r < TPAVI_ROWS; r++) acc[r] = 0.0f;

    for (int k0 = 0; k0 < TPAVI_C; k0 += TPAVI_KC) {
        // 32×32 tile of V: each thread loads 4 values.
        for (int e = co; e < TPAVI_ROWS * TPAVI_KC; e += TPAVI_C) {
            int r = e / TPAVI_KC, kk = e % TPAVI_KC;
            long long row = row0 + r;
            vs[r][kk] = row < n_pos ? avs_ld(v, row * TPAVI_C + k0 + kk) : 0.0f;
        }
        for (int kk = 0; kk < TPAVI_KC; kk++) ws[kk * TPAVI_C + co] = weff[(k0 + kk) * TPAVI_C + co];
        __syncthreads();
#pragma unroll 4
        for (int kk = 0; kk < TPAVI_KC; kk++) {
            float wv = ws[kk * TPAVI_C + co];
#pragma unroll
            for (int r = 0; r < TPAVI_ROWS; r++) acc[r] += vs[r][kk] * wv;
        }
        __syncthreads();
    }

    float bias = cvec[co];
#pragma unroll
    for (int r = 0; r < TPAVI_ROWS; r++) ws[r * TPAVI_C + co] = acc[r] + bias;
    __syncthreads();

    int warp = co / 32, lane = co % 32;
    for (int r = warp * (TPAVI_ROWS / 8); r < (warp + 1) * (TPAVI_ROWS / 8); r++) {
        long long row = row0 + r;
        if (row >= n_pos) break;
        const float* z = ws + r * TPAVI_C;
        float s = 0.0f;
        for (int j = lane; j < TPAVI_C; j += 32) s += z[j];
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        float mean = s / (float)TPAVI_C;
        float q = 0.0f;
        for (int j = lane; j < TPAVI_C; j += 32) {
            float d = z[j] - mean;
            q += d * d;
        }
        for (int off = 16; off > 0; off >>= 1) q += __shfl_xor_sync(0xffffffffu, q, off);
        float inv = 1.0f / sqrtf(q / (float)TPAVI_C + eps);
        for (int j = lane; j < TPAVI_C; j += 32)
            avs_st(out, row * TPAVI_C + j, (z[j] - mean) * inv * gamma[j] + beta[j]);
    }
}

extern "C" __global__ void __launch_bounds__(256) tpavi_apply_f32(const float* v, const float* weff,
                                                                  const float* cvec, const float* gamma,
                                                                  const float* beta, float* out,
                                                                  int n_pos, float eps) {
    tpavi_apply(v, weff, cvec, gamma, beta, out, n_pos, eps);
}

extern "C" __global__ void __launch_bounds__(256) tpavi_apply_f16(const unsigned short* v,
                                                                  const float* weff, const float* cvec,
                                                                  const float* gamma, const float* beta,
                                                                  unsigned short* out, int n_pos,
                                                                  float eps) {
    tpavi_apply(v, weff, cvec, gamma, beta, out, n_pos, eps);
}

// The same block on NCHW feature maps `[T, C, h·w]`, for the graph runner (src/backend/cuda/
// runner.rs), whose maps stay NCHW between convolutions. Any C; one thread per output, no block
// cooperation, so the emulated device runs these as plain loops.

// S[t][c] = Σ_p V[t][c][p]: one thread per (frame, channel), summing its contiguous plane.
template <typename T>
__device__ __forceinline__ void tpavi_frame_sum_nchw(const T* v, int hw, int tc, float* sums) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= tc) return;
    const T* plane = v + i * hw;
    float s = 0.0f;
    for (int p = 0; p < hw; p++) s += avs_ld(plane, p);
    sums[i] = s;
}

extern "C" __global__ void tpavi_frame_sum_nchw_f32(const float* v, int hw, int tc, float* sums) {
    tpavi_frame_sum_nchw(v, hw, tc, sums);
}

extern "C" __global__ void tpavi_frame_sum_nchw_f16(const unsigned short* v, int hw, int tc,
                                                    float* sums) {
    tpavi_frame_sum_nchw(v, hw, tc, sums);
}

// out[t][o][p] = LayerNorm_o(Σ_i Weff[i][o]·V[t][i][p] + cvec[o])·γ[o] + β[o] for the `frames`
// frames from `v` and `out` on: one thread per position, three passes over its C values (the
// products written to `out`, then the mean, then the variance and the normalisation in place).
template <typename T>
__device__ __forceinline__ void tpavi_apply_nchw(const T* __restrict__ v, const float* __restrict__ weff,
                                                 const float* __restrict__ cvec,
                                                 const float* __restrict__ gamma,
                                                 const float* __restrict__ beta, T* __restrict__ out,
                                                 int frames, int c, int hw, float eps) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)frames * hw) return;
    long long f = idx / hw;
    int p = (int)(idx % hw);
    const T* vf = v + f * c * hw + p;
    T* of = out + f * c * hw + p;
    float sum = 0.0f;
    for (int o = 0; o < c; o++) {
        float acc = 0.0f;
        for (int i = 0; i < c; i++) acc += weff[(long long)i * c + o] * avs_ld(vf, (long long)i * hw);
        float z = acc + cvec[o];
        sum += z;
        avs_st(of, (long long)o * hw, z);
    }
    float mean = sum / (float)c;
    float q = 0.0f;
    for (int o = 0; o < c; o++) {
        float d = avs_ld(of, (long long)o * hw) - mean;
        q += d * d;
    }
    float inv = 1.0f / sqrtf(q / (float)c + eps);
    for (int o = 0; o < c; o++)
        avs_st(of, (long long)o * hw, (avs_ld(of, (long long)o * hw) - mean) * inv * gamma[o] + beta[o]);
}

extern "C" __global__ void tpavi_apply_nchw_f32(const float* v, const float* weff, const float* cvec,
                                                const float* gamma, const float* beta, float* out,
                                                int frames, int c, int hw, float eps) {
    tpavi_apply_nchw(v, weff, cvec, gamma, beta, out, frames, c, hw, eps);
}

extern "C" __global__ void tpavi_apply_nchw_f16(const unsigned short* v, const float* weff,
                                                const float* cvec, const float* gamma,
                                                const float* beta, unsigned short* out, int frames,
                                                int c, int hw, float eps) {
    tpavi_apply_nchw(v, weff, cvec, gamma, beta, out, frames, c, hw, eps);
}

// fp16 storage → fp32 (φ for the small GEMMs, which read fp32).
extern "C" __global__ void tpavi_widen_f16(const unsigned short* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = avs_h2f(x[i]);
}
