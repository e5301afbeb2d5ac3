// TPAVI decoder stages (docs/spec/tpavi.md §6.7), NCHW. The 3×3 convolutions themselves run elsewhere
// (cuDNN / GEMM) without bias; these kernels are their fused epilogues and the resampling between
// stages, so each intermediate map is read and written once.
//
// Residual conv unit: r = ReLU(x); RCU(x) = r + conv2(ReLU(conv1(r) + b1)) + b2. The reference
// applies its first ReLU in place, so the skip adds ReLU(x), not x.
// FeatureFusionBlock: Up2(RCU2(x + RCU1(skip))), Up2 bilinear with align_corners=True; the head's
// ×2 uses align_corners=False. Element-wise kernels are safe in place (out may alias an input).

// After conv1: x ← ReLU(x + b1[c]).
template <typename T>
__device__ __forceinline__ void bias_relu(T* x, const float* __restrict__ bias, int c, int plane,
                                          long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int ch = (int)((i / plane) % c);
    avs_st(x, i, fmaxf(avs_ld(x, i) + bias[ch], 0.0f));
}

extern "C" __global__ void bias_relu_f32(float* x, const float* bias, int c, int plane, long long n) {
    bias_relu(x, bias, c, plane, n);
}

extern "C" __global__ void bias_relu_f16(unsigned short* x, const float* bias, int c, int plane,
                                         long long n) {
    bias_relu(x, bias, c, plane, n);
}

// After conv2: out ← conv + b2[c] + ReLU(input), the unit's output.
template <typename T>
__device__ __forceinline__ void rcu_residual(T* out, const T* conv, const float* __restrict__ bias,
                                             const T* input, int c, int plane, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int ch = (int)((i / plane) % c);
    avs_st(out, i, (avs_ld(conv, i) + bias[ch]) + fmaxf(avs_ld(input, i), 0.0f));
}

extern "C" __global__ void rcu_residual_f32(float* out, const float* conv, const float* bias,
                                            const float* input, int c, int plane, long long n) {
    rcu_residual(out, conv, bias, input, c, plane, n);
}

extern "C" __global__ void rcu_residual_f16(unsigned short* out, const unsigned short* conv,
                                            const float* bias, const unsigned short* input, int c,
                                            int plane, long long n) {
    rcu_residual(out, conv, bias, input, c, plane, n);
}

// The fusion block's skip add: out ← a + b.
template <typename T>
__device__ __forceinline__ void add(T* out, const T* a, const T* b, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    avs_st(out, i, avs_ld(a, i) + avs_ld(b, i));
}

extern "C" __global__ void add_f32(float* out, const float* a, const float* b, long long n) {
    add(out, a, b, n);
}

extern "C" __global__ void add_f16(unsigned short* out, const unsigned short* a,
                                   const unsigned short* b, long long n) {
    add(out, a, b, n);
}

// Bilinear resampling of nc planes [ih,iw] → [oh,ow] with PyTorch's arithmetic
// h0·(w0·a + w1·b) + h1·(w0·c + w1·d); `addend` (nullable, shaped like the output) is added after,
// fusing the next fusion block's skip add into the upsample. Not in place.
template <typename T>
__device__ __forceinline__ void upsample_bilinear(const T* __restrict__ in, int nc, int ih, int iw,
                                                  T* __restrict__ out, int oh, int ow,
                                                  int align_corners, const T* __restrict__ addend) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int p = blockIdx.z;
    if (x >= ow || y >= oh || p >= nc) return;
    AvsTap tx = avs_tap(x, iw, ow, align_corners);
    AvsTap ty = avs_tap(y, ih, oh, align_corners);
    float wx0 = 1.0f - tx.w1, wy0 = 1.0f - ty.w1;
    const T* src = in + (long long)p * ih * iw;
    long long r0 = (long long)ty.i0 * iw, r1 = (long long)ty.i1 * iw;
    float top = wx0 * avs_ld(src, r0 + tx.i0) + tx.w1 * avs_ld(src, r0 + tx.i1);
    float bot = wx0 * avs_ld(src, r1 + tx.i0) + tx.w1 * avs_ld(src, r1 + tx.i1);
    float v = wy0 * top + ty.w1 * bot;
    long long o = (long long)p * oh * ow + (long long)y * ow + x;
    if (addend) v += avs_ld(addend, o);
    avs_st(out, o, v);
}

extern "C" __global__ void upsample_bilinear_f32(const float* in, int nc, int ih, int iw, float* out,
                                                 int oh, int ow, int align_corners,
                                                 const float* addend) {
    upsample_bilinear(in, nc, ih, iw, out, oh, ow, align_corners, addend);
}

extern "C" __global__ void upsample_bilinear_f16(const unsigned short* in, int nc, int ih, int iw,
                                                 unsigned short* out, int oh, int ow,
                                                 int align_corners, const unsigned short* addend) {
    upsample_bilinear(in, nc, ih, iw, out, oh, ow, align_corners, addend);
}
