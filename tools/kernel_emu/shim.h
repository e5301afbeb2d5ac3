// A CPU stand-in for the CUDA execution model, just enough to run avseg's kernels without a
// GPU: every block runs its threads as real std::threads, so __syncthreads is a block barrier and
// __shfl_xor_sync a per-warp exchange. __shared__ becomes a function-level static (blocks run one
// after another). fp16 conversion, PTX `cvt` on the device, is the compiler's _Float16 here (the
// same IEEE round-to-nearest-even).
//
// This checks the kernels' indexing, guards, shared-memory staging and reductions, which the NVRTC
// compile check cannot; it says nothing about timing or occupancy.
#include <cmath>
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
dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(x)
#define __shared__ static
inline float avs_emu_h2f(unsigned short h) { _Float16 x; std::memcpy(&x, &h, 2); return (float)x; }
inline unsigned short avs_emu_f2h(float f) { _Float16 x = (_Float16)f; unsigned short h; std::memcpy(&h, &x, 2); return h; }
inline int __float2int_rn(float v) { return (int)std::nearbyint(v); }
std::barrier<>* g_block_bar;
std::vector<std::barrier<>*> g_warp_bars;
std::vector<float> g_shfl;
inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int off) {
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
      ts.emplace_back([=] { threadIdx = {tx, ty, tz}; blockIdx = {bx, by, bz}; k(); });
    for (auto& t : ts) t.join();
    for (auto* b : wb) delete b;
  }
}
