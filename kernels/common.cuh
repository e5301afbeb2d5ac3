// Prepended by avseg (src/backend/cuda/kernels.rs) to every kernels/*.cu before NVRTC compiles
// it. It is text concatenation, not an #include: no toolkit header is ever needed, so NVRTC alone
// (a Jetson image without cuda_fp16.h) compiles every kernel.
//
// Half-precision values are carried as their 16-bit patterns (unsigned short) and converted with
// the PTX `cvt` instructions, which is all cuda_fp16.h would give us here. Every kernel computes in
// fp32; fp16 is a storage format only.

// Outside device compilation (tools/kernel_emu runs these files as plain C++ on the CPU) the
// conversions come from the emulator instead of PTX.
__device__ __forceinline__ float avs_h2f(unsigned short h) {
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    return avs_emu_h2f(h);
#endif
}

__device__ __forceinline__ unsigned short avs_f2h(float f) {
#ifdef __CUDA_ARCH__
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    return avs_emu_f2h(f);
#endif
}

// Element loads and stores that hide the storage type from the templated kernel bodies.
__device__ __forceinline__ float avs_ld(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float avs_ld(const unsigned short* p, long long i) { return avs_h2f(p[i]); }
__device__ __forceinline__ void avs_st(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void avs_st(unsigned short* p, long long i, float v) { p[i] = avs_f2h(v); }

// One output coordinate's two source taps and the weight of the second, with PyTorch's rules for
// bilinear resampling: the f32 scale is in/out (half-pixel) or (in-1)/(out-1) (align_corners),
// negative half-pixel coordinates clamp to 0, and the second tap clamps to the last sample.
struct AvsTap {
    int i0;
    int i1;
    float w1;
};

__device__ __forceinline__ AvsTap avs_tap(int d, int in, int out, int align_corners) {
    float src;
    if (align_corners) {
        float scale = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
        src = scale * (float)d;
    } else {
        float scale = (float)in / (float)out;
        src = fmaxf(scale * ((float)d + 0.5f) - 0.5f, 0.0f);
    }
    AvsTap t;
    t.i0 = min((int)src, in - 1);
    t.i1 = t.i0 + 1 < in ? t.i0 + 1 : t.i0;
    t.w1 = fminf(fmaxf(src - (float)t.i0, 0.0f), 1.0f);
    return t;
}
