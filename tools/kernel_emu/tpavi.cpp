// tools/kernel_emu: the TPAVI kernel sequence (kernels/tpavi.cu), emulated on the CPU, against the
// literal N×N definition of docs/spec/tpavi.md §6.5 in double precision, for fp32 and fp16 features.
// N = 225 is not a multiple of the 32-row tile, so the tail guards are exercised.
#include "shim.h"
#include <cstdio>
#include <random>
#include <type_traits>
#include "common.cuh"
#include "tpavi.cu"

const int T = 5, H = 5, W = 9, C = 256, CP = 128, D = 128, HW = H * W, N = T * HW;
std::vector<float> A, AW, AB, TW, TB, PW, PB, GW, GB, ZW, ZB, LG, LB;

// The launch sequence of src/backend/cuda/ops.rs (TpaviBlock::run), on buffers of storage type S.
template <typename S>
std::vector<float> run(const std::vector<float>& v, void (*frame_sum)(const S*, int, int, float*),
                       void (*apply)(const S*, const float*, const float*, const float*, const float*, S*, int, float)) {
  std::vector<S> vs(v.size()), out(v.size());
  for (size_t i = 0; i < v.size(); i++) {
    if constexpr (std::is_same_v<S, float>) vs[i] = v[i], out[i] = NAN;  // poisoned
    else vs[i] = avs_emu_f2h(v[i]), out[i] = 0x7e00;                      // fp16 NaN
  }
  std::vector<float> S_(T * C), AL(T * C), PH(T * CP), GS(T * CP), K(CP * CP), TK(C * CP), WE(C * C), U(CP), CV(C);
  launch({(C + 31) / 32, T, 1}, {32, 8, 1}, [&] { frame_sum(vs.data(), HW, C, S_.data()); });
  auto gemm = [&](const float* a, long sam, long sak, const float* b, long sbk, long sbn, const float* bias, float bs,
                  float al, float dg, float* o, int m, int n, int k) {
    launch({(unsigned)((m * n + 255) / 256), 1, 1}, {256, 1, 1},
           [=] { tpavi_small_gemm(a, sam, sak, b, sbk, sbn, bias, bs, al, dg, o, m, n, k); });
  };
  gemm(A.data(), D, 1, AW.data(), 1, D, AB.data(), 1, 1, 0, AL.data(), T, C, D);
  gemm(AL.data(), C, 1, PW.data(), 1, C, PB.data(), 1, 1, 0, PH.data(), T, CP, C);
  gemm(S_.data(), C, 1, GW.data(), 1, C, GB.data(), (float)HW, 1, 0, GS.data(), T, CP, C);
  gemm(PH.data(), 1, CP, GS.data(), CP, 1, nullptr, 1, 1.0f / N, 0, K.data(), CP, CP, T);
  gemm(TW.data(), 1, C, K.data(), CP, 1, nullptr, 1, 1, 0, TK.data(), C, CP, CP);
  gemm(TK.data(), CP, 1, ZW.data(), 1, CP, nullptr, 1, 1, 1, WE.data(), C, C, CP);
  gemm(TB.data(), 0, 1, K.data(), CP, 1, nullptr, 1, 1, 0, U.data(), 1, CP, CP);
  gemm(U.data(), 0, 1, ZW.data(), 1, CP, ZB.data(), 1, 1, 0, CV.data(), 1, C, CP);
  launch({(N + 31) / 32, 1, 1}, {256, 1, 1},
         [&] { apply(vs.data(), WE.data(), CV.data(), LG.data(), LB.data(), out.data(), N, 1e-5f); });
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); i++) {
    if constexpr (std::is_same_v<S, float>) o[i] = out[i];
    else o[i] = avs_emu_h2f(out[i]);
  }
  return o;
}

// y_n = Σ_m (θ_n·φ_m / N) g_m; out_n = LN(W_z' y_n + b_z' + V_n), in double.
std::vector<double> literal(const std::vector<float>& V) {
  std::vector<double> al(T * C), th(N * CP), g(N * CP), ph(N * CP), out(N * C);
  for (int t = 0; t < T; t++)
    for (int c = 0; c < C; c++) {
      double s = AB[c];
      for (int d = 0; d < D; d++) s += (double)AW[c * D + d] * A[t * D + d];
      al[t * C + c] = s;
    }
  for (int p = 0; p < N; p++)
    for (int i = 0; i < CP; i++) {
      double a = TB[i], b = GB[i], q = PB[i];
      for (int c = 0; c < C; c++) {
        a += (double)TW[i * C + c] * V[p * C + c];
        b += (double)GW[i * C + c] * V[p * C + c];
        q += (double)PW[i * C + c] * al[(p / HW) * C + c];
      }
      th[p * CP + i] = a; g[p * CP + i] = b; ph[p * CP + i] = q;
    }
  for (int p = 0; p < N; p++) {
    std::vector<double> y(CP, 0), z(C);
    for (int m = 0; m < N; m++) {
      double f = 0;
      for (int i = 0; i < CP; i++) f += th[p * CP + i] * ph[m * CP + i];
      f /= N;
      for (int j = 0; j < CP; j++) y[j] += f * g[m * CP + j];
    }
    double mean = 0, var = 0;
    for (int o = 0; o < C; o++) {
      double s = ZB[o];
      for (int j = 0; j < CP; j++) s += (double)ZW[o * CP + j] * y[j];
      z[o] = s + V[p * C + o];
      mean += z[o];
    }
    mean /= C;
    for (int o = 0; o < C; o++) var += (z[o] - mean) * (z[o] - mean);
    var /= C;
    for (int o = 0; o < C; o++) out[p * C + o] = (z[o] - mean) / std::sqrt(var + 1e-5) * LG[o] + LB[o];
  }
  return out;
}

int compare(const char* what, const std::vector<float>& got, const std::vector<double>& want, double tol) {
  double worst = 0; int bad = 0;
  for (size_t i = 0; i < got.size(); i++) {
    double d = std::fabs(got[i] - want[i]) / std::max(1.0, std::fabs(want[i]));
    if (!(d <= tol)) bad++;
    if (std::isnan(d) || std::isnan(worst)) worst = NAN;  // a NaN stays the worst
    else if (d > worst) worst = d;
  }
  printf("%s vs literal: N=%d max rel diff %.3e, %d elements over %.0e\n", what, N, worst, bad, tol);
  return bad != 0;
}

int main() {
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0, 1);
  auto r = [&](int n, float s) { std::vector<float> v(n); for (auto& x : v) x = nd(rng) * s; return v; };
  auto V = r(N * C, 1);
  A = r(T * D, 1), AW = r(C * D, 0.09f), AB = r(C, .1f), TW = r(CP * C, .06f), TB = r(CP, .1f), PW = r(CP * C, .06f),
  PB = r(CP, .1f), GW = r(CP * C, .06f), GB = r(CP, .1f), ZW = r(C * CP, .09f), ZB = r(C, .1f), LG = r(C, .3f), LB = r(C, .2f);
  for (auto& g : LG) g += 1;
  int fail = compare("tpavi_*_f32", run<float>(V, tpavi_frame_sum_f32, tpavi_apply_f32), literal(V), 1e-4);
  std::vector<float> Vh(V.size());
  for (size_t i = 0; i < V.size(); i++) Vh[i] = avs_emu_h2f(avs_emu_f2h(V[i]));
  fail |= compare("tpavi_*_f16", run<unsigned short>(Vh, tpavi_frame_sum_f16, tpavi_apply_f16), literal(Vh), 4e-3);
  return fail;
}
