// A CPU stand-in for the CUDA execution model, enough to run avseg's kernels (kernels/*.cu) as
// plain C++ without a GPU. Used by tools/kernel_emu (each kernel against a restatement of its
// math) and by the emulated device of the CUDA runner (src/backend/cuda/emulated.cpp).
//
// Two ways to launch:
// * `launch`: every block runs its threads as real std::threads, so __syncthreads is a block
//   barrier and __shfl_xor_sync a per-warp exchange. For kernels that cooperate within a block
//   (tpavi_frame_sum, tpavi_apply). Slow: a thread per CUDA thread.
// * `launch_flat`: for kernels with no block cooperation (one thread per output, no shared memory,
//   no barriers): the CUDA threads run as a loop, the blocks split over the host's cores. A
//   barrier or shuffle reached in this mode aborts, so a kernel that needs `launch` cannot pass
//   silently.
// __shared__ becomes a function-level static (threaded blocks run one after another). fp16
// conversion, PTX `cvt` on the device, is the compiler's _Float16 here (the same IEEE
// round-to-nearest-even).
//
// This checks the kernels' indexing, guards, shared-memory staging and reductions, which the NVRTC
// compile check cannot; it says nothing about timing, occupancy, races between blocks or the
// memory model.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <barrier>
#include <thread>
#include <vector>
#include <functional>
#include <array>
#include <cstring>
using std::min; using std::max; using std::isfinite;
struct dim3 { unsigned x=1,y=1,z=1; };
thread_local dim3 threadIdx, blockIdx;
// Per host thread: a flat launch's workers each see the launch's shape.
thread_local dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(x)
#define __shared__ static
inline float avs_emu_h2f(unsigned short h) { _Float16 x; std::memcpy(&x, &h, 2); return (float)x; }
inline unsigned short avs_emu_f2h(float f) { _Float16 x = (_Float16)f; unsigned short h; std::memcpy(&h, &x, 2); return h; }
inline int __float2int_rn(float v) { return (int)std::nearbyint(v); }
inline std::barrier<>* g_block_bar;
inline std::vector<std::barrier<>*> g_warp_bars;
inline std::vector<float> g_shfl;
// Set on the workers of a flat launch, where no block cooperation exists.
thread_local bool g_flat = false;
[[noreturn]] inline void avs_emu_no_cooperation(const char* what) {
  std::fprintf(stderr, "avseg kernel emulator: %s in a kernel launched flat (no block cooperation)\n", what);
  std::abort();
}
inline void __syncthreads() {
  if (g_flat) avs_emu_no_cooperation("__syncthreads");
  g_block_bar->arrive_and_wait();
}
inline float __shfl_xor_sync(unsigned, float v, int off) {
  if (g_flat) avs_emu_no_cooperation("__shfl_xor_sync");
  int tid = threadIdx.x + threadIdx.y * blockDim.x;
  auto* b = g_warp_bars[tid / 32];
  g_shfl[tid] = v; b->arrive_and_wait();
  float r = g_shfl[tid ^ off]; b->arrive_and_wait();
  return r;
}
inline void launch(dim3 grid, dim3 block, std::function<void()> k) {
  blockDim = block; gridDim = grid;
  int nt = block.x * block.y * block.z;
  for (unsigned bz = 0; bz < grid.z; bz++) for (unsigned by = 0; by < grid.y; by++) for (unsigned bx = 0; bx < grid.x; bx++) {
    std::barrier<> bar(nt); g_block_bar = &bar;
    std::vector<std::barrier<>*> wb; for (int w = 0; w < (nt + 31) / 32; w++) wb.push_back(new std::barrier<>(std::min(32, nt - w * 32)));
    g_warp_bars = wb; g_shfl.assign(nt, 0.f);
    std::vector<std::thread> ts;
    for (unsigned tz = 0; tz < block.z; tz++) for (unsigned ty = 0; ty < block.y; ty++) for (unsigned tx = 0; tx < block.x; tx++)
      ts.emplace_back([=] { blockDim = block; gridDim = grid; threadIdx = {tx, ty, tz}; blockIdx = {bx, by, bz}; k(); });
    for (auto& t : ts) t.join();
    for (auto* b : wb) delete b;
  }
}
// The CUDA launch limits a real device enforces (compute capability 5.0 and later).
inline bool avs_emu_launch_ok(dim3 grid, dim3 block) {
  unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
  return grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 2147483647u && grid.y <= 65535u && grid.z <= 65535u &&
         nt >= 1 && nt <= 1024 && block.x <= 1024 && block.y <= 1024 && block.z <= 64;
}
template <typename K>
inline void launch_flat(dim3 grid, dim3 block, K k, unsigned workers = 0) {
  unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
  if (workers == 0) workers = std::max(1u, std::thread::hardware_concurrency());
  workers = (unsigned)std::min<unsigned long long>(workers, blocks);
  auto run = [=](unsigned long long b0, unsigned long long b1) {
    g_flat = true; blockDim = block; gridDim = grid;
    for (unsigned long long b = b0; b < b1; b++) {
      blockIdx = {(unsigned)(b % grid.x), (unsigned)((b / grid.x) % grid.y), (unsigned)(b / ((unsigned long long)grid.x * grid.y))};
      for (unsigned tz = 0; tz < block.z; tz++) for (unsigned ty = 0; ty < block.y; ty++) for (unsigned tx = 0; tx < block.x; tx++) {
        threadIdx = {tx, ty, tz};
        k();
      }
    }
    g_flat = false;
  };
  if (workers <= 1) { run(0, blocks); return; }
  std::vector<std::thread> ts;
  for (unsigned w = 0; w < workers; w++) ts.emplace_back(run, blocks * w / workers, blocks * (w + 1) / workers);
  for (auto& t : ts) t.join();
}
