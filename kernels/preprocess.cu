// Frame pre-processing: an RGB8 frame of any size (HWC, rows `stride` bytes apart) → squash-resized
// to dw×dh → ImageNet-normalised planar CHW, in one pass, so frames go up to the GPU as bytes.
//
// The resize follows cv2.resize(INTER_LINEAR), which made the official S4/MS3 frames: half-pixel
// centres, a fixed 2×2 kernel (no antialiasing on downscale), edge taps clamped. OpenCV rounds
// its fixed-point result to uint8 before the dataloader normalises it, so this kernel rounds too
// (ties to even) and normalises the integer with the same f32 operations as torchvision's
// `(p / 255 - mean) / std`. Compiled with --fmad=false so each value is the one the CPU reference
// computes.

template <typename T>
__device__ __forceinline__ void preprocess_bilinear(const unsigned char* __restrict__ src, int sw, int sh,
                                                    int stride, T* __restrict__ dst, int dw, int dh,
                                                    float m0, float m1, float m2, float s0, float s1,
                                                    float s2) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dw || y >= dh) return;
    AvsTap tx = avs_tap(x, sw, dw, 0);
    AvsTap ty = avs_tap(y, sh, dh, 0);
    const unsigned char* r0 = src + (long long)ty.i0 * stride;
    const unsigned char* r1 = src + (long long)ty.i1 * stride;
    float wx0 = 1.0f - tx.w1, wy0 = 1.0f - ty.w1;
    float mean[3] = {m0, m1, m2};
    float sd[3] = {s0, s1, s2};
    long long plane = (long long)dw * dh;
    long long o = (long long)y * dw + x;
#pragma unroll
    for (int c = 0; c < 3; c++) {
        float top = wx0 * (float)r0[tx.i0 * 3 + c] + tx.w1 * (float)r0[tx.i1 * 3 + c];
        float bot = wx0 * (float)r1[tx.i0 * 3 + c] + tx.w1 * (float)r1[tx.i1 * 3 + c];
        float v = wy0 * top + ty.w1 * bot;
        float p = (float)min(max(__float2int_rn(v), 0), 255);
        avs_st(dst, c * plane + o, (p / 255.0f - mean[c]) / sd[c]);
    }
}

extern "C" __global__ void preprocess_bilinear_f32(const unsigned char* src, int sw, int sh, int stride,
                                                   float* dst, int dw, int dh, float m0, float m1,
                                                   float m2, float s0, float s1, float s2) {
    preprocess_bilinear(src, sw, sh, stride, dst, dw, dh, m0, m1, m2, s0, s1, s2);
}

extern "C" __global__ void preprocess_bilinear_f16(const unsigned char* src, int sw, int sh, int stride,
                                                   unsigned short* dst, int dw, int dh, float m0,
                                                   float m1, float m2, float s0, float s1, float s2) {
    preprocess_bilinear(src, sw, sh, stride, dst, dw, dh, m0, m1, m2, s0, s1, s2);
}
