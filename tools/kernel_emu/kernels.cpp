// tools/kernel_emu: the pre-processing, post-processing and decoder kernels, emulated on the CPU
// with every output poisoned (NaN / 0xAA): f32 against PyTorch's and OpenCV's rules restated here
// in double precision, fp16 against the fp16 rounding of the f32 result.
#include "shim.h"
#include <cstdio>
#include <random>
#include "common.cuh"
#include "preprocess.cu"
#include "postprocess.cu"
#include "decoder.cu"
static int failures = 0;
// The larger of two differences, NaN-aware: std::max(worst, NaN) returns worst, which would let a
// kernel that writes NaN pass.
static double worse(double worst, double d) { return (std::isnan(worst) || std::isnan(d)) ? NAN : std::max(worst, d); }
static void check(const char* what, double worst, double tol) {
  printf("%-44s max diff %.3e%s\n", what, worst, worst <= tol ? "" : "  FAIL");
  if (!(worst <= tol)) failures++;
}
// PyTorch's bilinear source coordinate, in double, straight from its definition.
static double coord(int d, int in, int out, bool ac) {
  if (ac) return out > 1 ? (double)(in - 1) / (out - 1) * d : 0.0;
  double s = (double)in / out * (d + 0.5) - 0.5; return s < 0 ? 0 : s;
}
static double sample(const std::vector<float>& p, int ih, int iw, double y, double x) {
  int y0 = std::min((int)y, ih - 1), x0 = std::min((int)x, iw - 1), y1 = std::min(y0 + 1, ih - 1), x1 = std::min(x0 + 1, iw - 1);
  double wy = std::clamp(y - y0, 0.0, 1.0), wx = std::clamp(x - x0, 0.0, 1.0);
  return (1 - wy) * ((1 - wx) * p[y0 * iw + x0] + wx * p[y0 * iw + x1]) + wy * ((1 - wx) * p[y1 * iw + x0] + wx * p[y1 * iw + x1]);
}
int main() {
  std::mt19937 rng(7); std::normal_distribution<float> nd(0, 1); std::uniform_int_distribution<int> byte(0, 255);
  const float NaN = NAN;
  { // preprocess: 37x23 (stride +5) -> 20x31, then an identity size
    for (auto [sw, sh, dw, dh] : {std::array<int,4>{37, 23, 20, 31}, {16, 16, 16, 16}, {1, 1, 3, 2}}) {
      int stride = sw * 3 + 5; std::vector<unsigned char> src(stride * sh); for (auto& b : src) b = byte(rng);
      std::vector<float> out(3 * dw * dh, NaN);
      launch({(unsigned)(dw + 15) / 16, (unsigned)(dh + 15) / 16, 1}, {16, 16, 1}, [&] { preprocess_bilinear_f32(src.data(), sw, sh, stride, out.data(), dw, dh, .485f, .456f, .406f, .229f, .224f, .225f); });
      double worst = 0; int boundary = 0; float mean[3] = {.485f, .456f, .406f}, sd[3] = {.229f, .224f, .225f};
      for (int c = 0; c < 3; c++) { std::vector<float> plane(sw * sh); for (int y = 0; y < sh; y++) for (int x = 0; x < sw; x++) plane[y * sw + x] = src[y * stride + x * 3 + c];
        for (int y = 0; y < dh; y++) for (int x = 0; x < dw; x++) {
          double exact = sample(plane, sh, sw, std::min(coord(y, sh, dh, false), sh - 1.0), std::min(coord(x, sw, dw, false), sw - 1.0));
          double want = (std::nearbyint(exact) / 255.0 - mean[c]) / sd[c]; double d = std::fabs(out[c * dw * dh + y * dw + x] - want);
          // f32 and double may round a value sitting on a .5 boundary to different levels
          if (d > 1e-5 && d < 1.01 / 255.0 / sd[c] && std::fabs(exact - std::floor(exact) - 0.5) < 1e-3) { boundary++; continue; }
          worst = worse(worst, std::isnan(d) ? 1e9 : d); }
      }
      char name[80]; snprintf(name, sizeof name, "preprocess_bilinear_f32 %dx%d->%dx%d (%d on .5)", sw, sh, dw, dh, boundary); check(name, worst, 1e-5);
    }
  }
  { // mask_binary 7x9 -> 23x13, threshold 0.4; argmax + nearest
    int h = 7, w = 9, ow = 23, oh = 13; std::vector<float> lg(h * w); for (auto& v : lg) v = 3 * nd(rng);
    std::vector<unsigned char> lab(ow * oh, 0xAA); std::vector<float> conf(ow * oh, NaN);
    launch({2, 1, 1}, {16, 16, 1}, [&] { mask_binary_f32(lg.data(), h, w, lab.data(), conf.data(), ow, oh, 0.4f); });
    double worst = 0;
    for (int y = 0; y < oh; y++) for (int x = 0; x < ow; x++) { double v = sample(lg, h, w, std::min(coord(y, h, oh, false), h - 1.0), std::min(coord(x, w, ow, false), w - 1.0));
      double p = 1 / (1 + std::exp(-v)); int l = p > 0.4; double c = l ? p : 1 - p; int i = y * ow + x;
      worst = worse(worst, (lab[i] != l && std::fabs(p - 0.4) > 1e-5) ? 1e9 : std::fabs(conf[i] - c)); }
    check("mask_binary_f32 7x9->23x13", worst, 1e-5);
    int k = 5; std::vector<float> sl(k * h * w); for (auto& v : sl) v = nd(rng);
    std::vector<unsigned char> small(h * w, 0xAA), big(ow * oh, 0xAA); std::vector<float> sc(h * w, NaN), bc(ow * oh, NaN);
    launch({1, 1, 1}, {256, 1, 1}, [&] { argmax_classes_f32(sl.data(), k, h * w, small.data(), sc.data()); });
    launch({2, 1, 1}, {16, 16, 1}, [&] { nearest_labels(small.data(), sc.data(), h, w, big.data(), bc.data(), ow, oh); });
    worst = 0;
    for (int y = 0; y < oh; y++) for (int x = 0; x < ow; x++) {
      int sy = std::min((int)std::floor((y + 0.5) * h / oh), h - 1), sx = std::min((int)std::floor((x + 0.5) * w / ow), w - 1), s = sy * w + sx;
      int best = 0; for (int c = 1; c < k; c++) if (sl[c * h * w + s] > sl[best * h * w + s]) best = c;
      double sum = 0; for (int c = 0; c < k; c++) sum += std::exp((double)sl[c * h * w + s] - sl[best * h * w + s]);
      int i = y * ow + x; worst = worse(worst, big[i] != best ? 1e9 : std::fabs(bc[i] - 1 / sum)); }
    check("argmax_classes_f32 + nearest_labels k=5", worst, 1e-6);
  }
  { // decoder: 2 frames x 3 channels of 5x6; upsample both modes (with addend), epilogues
    int n = 2, c = 3, h = 5, w = 6, plane = h * w, len = n * c * plane; std::vector<float> x(len), conv(len), bias(c);
    for (auto& v : x) v = nd(rng); for (auto& v : conv) v = nd(rng); for (auto& v : bias) v = nd(rng);
    for (bool ac : {true, false}) { int oh = ac ? 2 * h : 7, ow = ac ? 2 * w : 17; std::vector<float> add(n * c * oh * ow), out(n * c * oh * ow, NaN);
      for (auto& v : add) v = nd(rng);
      launch({(unsigned)(ow + 15) / 16, (unsigned)(oh + 15) / 16, (unsigned)(n * c)}, {16, 16, 1}, [&] { upsample_bilinear_f32(x.data(), n * c, h, w, out.data(), oh, ow, ac, add.data()); });
      double worst = 0;
      for (int p = 0; p < n * c; p++) { std::vector<float> pl(x.begin() + p * plane, x.begin() + (p + 1) * plane);
        for (int y = 0; y < oh; y++) for (int xx = 0; xx < ow; xx++) { int i = p * oh * ow + y * ow + xx;
          double want = sample(pl, h, w, std::min(coord(y, h, oh, ac), h - 1.0), std::min(coord(xx, w, ow, ac), w - 1.0)) + add[i];
          worst = worse(worst, std::isnan(out[i]) ? 1e9 : std::fabs(out[i] - want)); } }
      check(ac ? "upsample_bilinear_f32 align_corners x2 + add" : "upsample_bilinear_f32 half-pixel 5x6->7x17 + add", worst, 1e-5);
    }
    std::vector<float> r(len, NaN), y = x; double worst = 0;
    launch({1, 1, 1}, {256, 1, 1}, [&] { rcu_residual_f32(r.data(), conv.data(), bias.data(), x.data(), c, plane, len); });
    launch({1, 1, 1}, {256, 1, 1}, [&] { bias_relu_f32(y.data(), bias.data(), c, plane, len); });
    for (int i = 0; i < len; i++) { int ch = (i / plane) % c;
      worst = worse(worse(worst, std::isnan(r[i]) ? 1e9 : std::fabs(r[i] - (conv[i] + bias[ch] + std::max(x[i], 0.f)))), (double)std::fabs(y[i] - std::max(x[i] + bias[ch], 0.f))); }
    check("rcu_residual_f32 + bias_relu_f32", worst, 1e-6);
    std::vector<float> s(len, NaN); launch({1, 1, 1}, {256, 1, 1}, [&] { add_f32(s.data(), x.data(), conv.data(), len); });
    worst = 0; for (int i = 0; i < len; i++) worst = worse(worst, std::isnan(s[i]) ? 1e9 : (double)std::fabs(s[i] - (x[i] + conv[i])));
    check("add_f32", worst, 0);
  }
  { // fp16 variants: on fp16-valued inputs, each must store exactly the fp16 rounding of what its
    // f32 twin (checked above) computes, since both work in fp32 and round once.
    auto h = [](float f) { return avs_emu_f2h(f); };
    auto same = [&](const char* what, const std::vector<float>& f32, const std::vector<unsigned short>& f16) {
      int bad = 0;
      for (size_t i = 0; i < f32.size(); i++) bad += f16[i] != h(f32[i]);
      check(what, bad, 0);
    };
    int sw = 29, sh = 17, dw = 12, dh = 9, stride = sw * 3 + 2;
    std::vector<unsigned char> src(stride * sh); for (auto& b : src) b = byte(rng);
    std::vector<float> pf(3 * dw * dh, NaN); std::vector<unsigned short> ph(3 * dw * dh, 0x7e00);
    launch({1, 1, 1}, {16, 16, 1}, [&] { preprocess_bilinear_f32(src.data(), sw, sh, stride, pf.data(), dw, dh, .485f, .456f, .406f, .229f, .224f, .225f); });
    launch({1, 1, 1}, {16, 16, 1}, [&] { preprocess_bilinear_f16(src.data(), sw, sh, stride, ph.data(), dw, dh, .485f, .456f, .406f, .229f, .224f, .225f); });
    same("preprocess_bilinear_f16 (elements off)", pf, ph);

    int n = 2, c = 3, ih = 4, iw = 5, oh = 9, ow = 11, len = n * c * ih * iw, olen = n * c * oh * ow;
    std::vector<float> x(len), y(len), bias(c), add(olen);
    for (auto* v : {&x, &y, &add}) for (auto& e : *v) e = avs_emu_h2f(h(nd(rng)));
    for (auto& b : bias) b = nd(rng);
    std::vector<unsigned short> xh(len), yh(len), addh(olen);
    for (int i = 0; i < len; i++) xh[i] = h(x[i]), yh[i] = h(y[i]);
    for (int i = 0; i < olen; i++) addh[i] = h(add[i]);
    for (int ac = 0; ac < 2; ac++) {
      std::vector<float> uf(olen, NaN); std::vector<unsigned short> uh(olen, 0x7e00);
      launch({1, 1, (unsigned)(n * c)}, {16, 16, 1}, [&] { upsample_bilinear_f32(x.data(), n * c, ih, iw, uf.data(), oh, ow, ac, add.data()); });
      launch({1, 1, (unsigned)(n * c)}, {16, 16, 1}, [&] { upsample_bilinear_f16(xh.data(), n * c, ih, iw, uh.data(), oh, ow, ac, addh.data()); });
      same(ac ? "upsample_bilinear_f16 align_corners" : "upsample_bilinear_f16 half-pixel", uf, uh);
    }
    std::vector<float> rf(len, NaN), af(len, NaN), bf = x; std::vector<unsigned short> rh(len, 0x7e00), ah(len, 0x7e00), bh = xh;
    launch({1, 1, 1}, {256, 1, 1}, [&] { rcu_residual_f32(rf.data(), y.data(), bias.data(), x.data(), c, ih * iw, len); });
    launch({1, 1, 1}, {256, 1, 1}, [&] { rcu_residual_f16(rh.data(), yh.data(), bias.data(), xh.data(), c, ih * iw, len); });
    same("rcu_residual_f16", rf, rh);
    launch({1, 1, 1}, {256, 1, 1}, [&] { add_f32(af.data(), x.data(), y.data(), len); });
    launch({1, 1, 1}, {256, 1, 1}, [&] { add_f16(ah.data(), xh.data(), yh.data(), len); });
    same("add_f16", af, ah);
    launch({1, 1, 1}, {256, 1, 1}, [&] { bias_relu_f32(bf.data(), bias.data(), c, ih * iw, len); });
    launch({1, 1, 1}, {256, 1, 1}, [&] { bias_relu_f16(bh.data(), bias.data(), c, ih * iw, len); });
    same("bias_relu_f16", bf, bh);

    int k = 4, plane = ih * iw;  // logits in fp16: labels and confidences must match the f32 path
    std::vector<unsigned char> lf(plane, 0xAA), lh(plane, 0xAA), mf(oh * ow, 0xAA), mh(oh * ow, 0xAA);
    std::vector<float> cf(plane, NaN), ch(plane, NaN), qf(oh * ow, NaN), qh(oh * ow, NaN);
    launch({1, 1, 1}, {256, 1, 1}, [&] { argmax_classes_f32(x.data(), k, plane, lf.data(), cf.data()); });
    launch({1, 1, 1}, {256, 1, 1}, [&] { argmax_classes_f16(xh.data(), k, plane, lh.data(), ch.data()); });
    launch({1, 1, 1}, {16, 16, 1}, [&] { mask_binary_f32(x.data(), ih, iw, mf.data(), qf.data(), ow, oh, 0.5f); });
    launch({1, 1, 1}, {16, 16, 1}, [&] { mask_binary_f16(xh.data(), ih, iw, mh.data(), qh.data(), ow, oh, 0.5f); });
    int bad = 0;
    for (int i = 0; i < plane; i++) bad += lf[i] != lh[i] || cf[i] != ch[i];
    for (int i = 0; i < oh * ow; i++) bad += mf[i] != mh[i] || qf[i] != qh[i];
    check("argmax_classes_f16 + mask_binary_f16 (off)", bad, 0);
  }
  return failures != 0;
}
