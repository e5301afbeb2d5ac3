// Frame pre-processing: an RGB8 frame of any size (HWC, rows `stride` bytes apart) → squash-resized
// to dw×dh → ImageNet-normalised planar CHW, so frames go up to the GPU as bytes. Two resizes, the
// two a package's manifest can declare (docs/spec/vision.md §4.5):
//
// * `bilinear_opencv`, `preprocess_bilinear` below, one pass;
// * `bilinear_pil`, `resample_rows_u8` then `resample_columns`, further down: two passes.
//
// The OpenCV resize follows cv2.resize(INTER_LINEAR), which made the official S4/MS3 frames: half-pixel
// centres, a fixed 2×2 kernel (no antialiasing on downscale), edge taps clamped. OpenCV rounds
// its fixed-point result to uint8 before the dataloader normalises it, so this kernel rounds too
// (ties to even) and normalises the integer with the same f32 operations as torchvision's
// `(p / 255 - mean) / std`. Compiled with --fmad=false so each value is the one the CPU reference
// computes.

// One output pixel's RGB bytes, normalised as torchvision does, into planar CHW.
template <typename T>
__device__ __forceinline__ void avs_store_normalised(T* __restrict__ dst, int dw, int dh, int x, int y,
                                                     const int* px, float m0, float m1, float m2,
                                                     float s0, float s1, float s2) {
    float mean[3] = {m0, m1, m2};
    float sd[3] = {s0, s1, s2};
    long long plane = (long long)dw * dh;
    long long o = (long long)y * dw + x;
#pragma unroll
    for (int c = 0; c < 3; c++) {
        float p = (float)px[c];
        avs_st(dst, c * plane + o, (p / 255.0f - mean[c]) / sd[c]);
    }
}

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
    int px[3];
#pragma unroll
    for (int c = 0; c < 3; c++) {
        float top = wx0 * (float)r0[tx.i0 * 3 + c] + tx.w1 * (float)r0[tx.i1 * 3 + c];
        float bot = wx0 * (float)r1[tx.i0 * 3 + c] + tx.w1 * (float)r1[tx.i1 * 3 + c];
        float v = wy0 * top + ty.w1 * bot;
        px[c] = min(max(__float2int_rn(v), 0), 255);
    }
    avs_store_normalised(dst, dw, dh, x, y, px, m0, m1, m2, s0, s1, s2);
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

// PIL's BILINEAR resize (`Image.resize`, what AVSS frames and the default package's training data
// went through), as two separable passes in PIL's fixed point, so each byte is PIL's:
//
// 1. `resample_rows_u8`: source rows [row0, row0 + rows) → dw columns, rounded to bytes;
// 2. `resample_columns_*`: those rows → dh rows, rounded to bytes, then normalised as above.
//
// The host computes both passes' tables (src/backend/cuda/resample.rs): per output index its first
// source tap and tap count (`bounds`, pairs), and its `taps` weights (`coeffs`, `taps` apart) as
// integers scaled by 2^22. PIL widens the triangle with the downscale factor, so `taps` grows with
// it. Sums are int32 as in PIL: a tap's weight is at most 2^22 and the weights sum to about 2^22,
// so 255 x that fits.
#define AVS_PIL_BITS 22

__device__ __forceinline__ int avs_pil_byte(int sum) {
    int v = sum >> AVS_PIL_BITS;
    return v < 0 ? 0 : (v > 255 ? 255 : v);
}

// tmp[r][x][c] for r in [0, rows), x in [0, dw): one thread per (x, r).
extern "C" __global__ void resample_rows_u8(const unsigned char* __restrict__ src, int stride, int row0, int rows,
                                            const int* __restrict__ bounds, const int* __restrict__ coeffs,
                                            int taps, unsigned char* __restrict__ tmp, int dw) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int r = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dw || r >= rows) return;
    int first = bounds[2 * x], count = bounds[2 * x + 1];
    const int* k = coeffs + (long long)x * taps;
    const unsigned char* row = src + (long long)(row0 + r) * stride + 3 * first;
    int s0 = 1 << (AVS_PIL_BITS - 1), s1 = s0, s2 = s0;
    for (int i = 0; i < count; i++) {
        s0 += (int)row[3 * i] * k[i];
        s1 += (int)row[3 * i + 1] * k[i];
        s2 += (int)row[3 * i + 2] * k[i];
    }
    unsigned char* o = tmp + ((long long)r * dw + x) * 3;
    o[0] = (unsigned char)avs_pil_byte(s0);
    o[1] = (unsigned char)avs_pil_byte(s1);
    o[2] = (unsigned char)avs_pil_byte(s2);
}

// dst[c][y][x] from tmp (rows of dw RGB pixels; `bounds` count rows of tmp, not of the frame).
template <typename T>
__device__ __forceinline__ void resample_columns(const unsigned char* __restrict__ tmp, int dw,
                                                 const int* __restrict__ bounds,
                                                 const int* __restrict__ coeffs, int taps,
                                                 T* __restrict__ dst, int dh, float m0, float m1,
                                                 float m2, float s0, float s1, float s2) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dw || y >= dh) return;
    int first = bounds[2 * y], count = bounds[2 * y + 1];
    const int* k = coeffs + (long long)y * taps;
    const unsigned char* col = tmp + ((long long)first * dw + x) * 3;
    long long step = (long long)dw * 3;
    int a[3] = {1 << (AVS_PIL_BITS - 1), 1 << (AVS_PIL_BITS - 1), 1 << (AVS_PIL_BITS - 1)};
    for (int i = 0; i < count; i++) {
        const unsigned char* p = col + i * step;
        a[0] += (int)p[0] * k[i];
        a[1] += (int)p[1] * k[i];
        a[2] += (int)p[2] * k[i];
    }
    int px[3] = {avs_pil_byte(a[0]), avs_pil_byte(a[1]), avs_pil_byte(a[2])};
    avs_store_normalised(dst, dw, dh, x, y, px, m0, m1, m2, s0, s1, s2);
}

extern "C" __global__ void resample_columns_f32(const unsigned char* tmp, int dw, const int* bounds, const int* coeffs,
                                                int taps, float* dst, int dh, float m0, float m1, float m2,
                                                float s0, float s1, float s2) {
    resample_columns(tmp, dw, bounds, coeffs, taps, dst, dh, m0, m1, m2, s0, s1, s2);
}

extern "C" __global__ void resample_columns_f16(const unsigned char* tmp, int dw, const int* bounds, const int* coeffs,
                                                int taps, unsigned short* dst, int dh, float m0, float m1,
                                                float m2, float s0, float s1, float s2) {
    resample_columns(tmp, dw, bounds, coeffs, taps, dst, dh, m0, m1, m2, s0, s1, s2);
}
