// The emulated device's kernels: kernels/*.cu compiled for the host with kernels/emu/shim.h, each
// entry point behind a C launcher `avs_emu_<kernel>(grid, block, args...)` that checks the launch
// against CUDA's limits (returning 1 when it breaks them) and runs the kernel as the shim does.
// Built by build.rs under the `cuda-emulated` feature; src/backend/cuda/emulated.rs declares the
// launchers.
#include "shim.h"
#include "common.cuh"
#include "decoder.cu"
#include "tpavi.cu"
#include "graph.cu"
#include "preprocess.cu"
#include "postprocess.cu"

#define AVS_EMU_FLAT(name, params, args)                                   \
  extern "C" int avs_emu_##name(dim3 grid, dim3 block, params) {          \
    if (!avs_emu_launch_ok(grid, block)) return 1;                        \
    launch_flat(grid, block, [&] { name args; });                          \
    return 0;                                                             \
  }
#define P(...) __VA_ARGS__

typedef unsigned short h16;

AVS_EMU_FLAT(conv2d_f32, P(const float* x, const float* w, const float* b, const float* r, float* y, AvsConv p), (x, w, b, r, y, p))
AVS_EMU_FLAT(conv2d_f16, P(const h16* x, const h16* w, const float* b, const h16* r, h16* y, AvsConv p), (x, w, b, r, y, p))
AVS_EMU_FLAT(matmul_f32, P(const float* a, const float* b, const float* bias, float* o, AvsMatMul p), (a, b, bias, o, p))
AVS_EMU_FLAT(matmul_f16, P(const h16* a, const h16* b, const float* bias, h16* o, AvsMatMul p), (a, b, bias, o, p))
AVS_EMU_FLAT(binary_f32, P(const float* a, const float* b, float* o, int kind, AvsStrided s, long long n), (a, b, o, kind, s, n))
AVS_EMU_FLAT(binary_f16, P(const h16* a, const h16* b, h16* o, int kind, AvsStrided s, long long n), (a, b, o, kind, s, n))
AVS_EMU_FLAT(unary_f32, P(const float* x, float* o, int kind, long long n), (x, o, kind, n))
AVS_EMU_FLAT(unary_f16, P(const h16* x, h16* o, int kind, long long n), (x, o, kind, n))
AVS_EMU_FLAT(transpose_f32, P(const float* x, float* o, AvsStrided s, long long n), (x, o, s, n))
AVS_EMU_FLAT(transpose_f16, P(const h16* x, h16* o, AvsStrided s, long long n), (x, o, s, n))
AVS_EMU_FLAT(max_pool_f32, P(const float* x, float* o, AvsPool p), (x, o, p))
AVS_EMU_FLAT(max_pool_f16, P(const h16* x, h16* o, AvsPool p), (x, o, p))
AVS_EMU_FLAT(resize_linear_f32, P(const float* x, const float* r, float* o, const int* rt, const float* rw, const int* ct, const float* cw, AvsResize p),
             (x, r, o, rt, rw, ct, cw, p))
AVS_EMU_FLAT(resize_linear_f16, P(const h16* x, const h16* r, h16* o, const int* rt, const float* rw, const int* ct, const float* cw, AvsResize p),
             (x, r, o, rt, rw, ct, cw, p))
AVS_EMU_FLAT(tpavi_frame_sum_nchw_f32, P(const float* v, int hw, int tc, float* s), (v, hw, tc, s))
AVS_EMU_FLAT(tpavi_frame_sum_nchw_f16, P(const h16* v, int hw, int tc, float* s), (v, hw, tc, s))
AVS_EMU_FLAT(tpavi_small_gemm,
             P(const float* a, long long sam, long long sak, const float* b, long long sbk, long long sbn, const float* bias,
               float bias_scale, float alpha, float diag, float* out, int m, int n, int k),
             (a, sam, sak, b, sbk, sbn, bias, bias_scale, alpha, diag, out, m, n, k))
AVS_EMU_FLAT(tpavi_apply_nchw_f32,
             P(const float* v, const float* weff, const float* cvec, const float* g, const float* be, float* out, int frames, int c, int hw,
               float eps),
             (v, weff, cvec, g, be, out, frames, c, hw, eps))
AVS_EMU_FLAT(tpavi_apply_nchw_f16,
             P(const h16* v, const float* weff, const float* cvec, const float* g, const float* be, h16* out, int frames, int c, int hw,
               float eps),
             (v, weff, cvec, g, be, out, frames, c, hw, eps))
AVS_EMU_FLAT(tpavi_widen_f16, P(const h16* x, float* out, int n), (x, out, n))
AVS_EMU_FLAT(preprocess_bilinear_f32,
             P(const unsigned char* src, int sw, int sh, int stride, float* dst, int dw, int dh, float m0, float m1, float m2, float s0,
               float s1, float s2),
             (src, sw, sh, stride, dst, dw, dh, m0, m1, m2, s0, s1, s2))
AVS_EMU_FLAT(preprocess_bilinear_f16,
             P(const unsigned char* src, int sw, int sh, int stride, h16* dst, int dw, int dh, float m0, float m1, float m2, float s0,
               float s1, float s2),
             (src, sw, sh, stride, dst, dw, dh, m0, m1, m2, s0, s1, s2))
AVS_EMU_FLAT(resample_rows_u8,
             P(const unsigned char* src, int stride, int row0, int rows, const int* bounds, const int* coeffs, int taps, unsigned char* tmp,
               int dw),
             (src, stride, row0, rows, bounds, coeffs, taps, tmp, dw))
AVS_EMU_FLAT(resample_columns_f32,
             P(const unsigned char* tmp, int dw, const int* bounds, const int* coeffs, int taps, float* dst, int dh, float m0, float m1,
               float m2, float s0, float s1, float s2),
             (tmp, dw, bounds, coeffs, taps, dst, dh, m0, m1, m2, s0, s1, s2))
AVS_EMU_FLAT(resample_columns_f16,
             P(const unsigned char* tmp, int dw, const int* bounds, const int* coeffs, int taps, h16* dst, int dh, float m0, float m1,
               float m2, float s0, float s1, float s2),
             (tmp, dw, bounds, coeffs, taps, dst, dh, m0, m1, m2, s0, s1, s2))
AVS_EMU_FLAT(mask_binary_f32, P(const float* l, int h, int w, unsigned char* lab, float* conf, int ow, int oh, float th),
             (l, h, w, lab, conf, ow, oh, th))
AVS_EMU_FLAT(mask_binary_f16, P(const h16* l, int h, int w, unsigned char* lab, float* conf, int ow, int oh, float th),
             (l, h, w, lab, conf, ow, oh, th))
AVS_EMU_FLAT(argmax_classes_f32, P(const float* l, int k, int plane, unsigned char* lab, float* conf), (l, k, plane, lab, conf))
AVS_EMU_FLAT(argmax_classes_f16, P(const h16* l, int k, int plane, unsigned char* lab, float* conf), (l, k, plane, lab, conf))
AVS_EMU_FLAT(nearest_labels,
             P(const unsigned char* lab, const float* conf, int h, int w, unsigned char* ol, float* oc, int ow, int oh),
             (lab, conf, h, w, ol, oc, ow, oh))
