// Post-processing at the frame's own size, so masks come down from the GPU as bytes.
//
// Binary models: the [h,w] logit map is upsampled bilinearly with half-pixel centres
// (F.interpolate(align_corners=False)) straight to the frame size, and a pixel is foreground when
// sigmoid(logit) > threshold, strictly. Semantic models: argmax over K at model resolution (ties
// to the lowest class), the winner's softmax probability, then nearest-neighbour upsampling of the
// labels. Both match src/post/mask.rs, which the CPU path uses; compiled with --fmad=false so the
// interpolated logits are the CPU's to the bit.

template <typename T>
__device__ __forceinline__ void mask_binary(const T* __restrict__ logits, int h, int w,
                                            unsigned char* __restrict__ labels,
                                            float* __restrict__ confidence, int ow, int oh,
                                            float threshold) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= ow || y >= oh) return;
    AvsTap tx = avs_tap(x, w, ow, 0);
    AvsTap ty = avs_tap(y, h, oh, 0);
    float wx0 = 1.0f - tx.w1, wy0 = 1.0f - ty.w1;
    long long r0 = (long long)ty.i0 * w, r1 = (long long)ty.i1 * w;
    float top = wx0 * avs_ld(logits, r0 + tx.i0) + tx.w1 * avs_ld(logits, r0 + tx.i1);
    float bot = wx0 * avs_ld(logits, r1 + tx.i0) + tx.w1 * avs_ld(logits, r1 + tx.i1);
    float v = wy0 * top + ty.w1 * bot;
    float p = 1.0f / (1.0f + expf(-v));
    long long o = (long long)y * ow + x;
    // NaN fails the comparison and lands in background with zero confidence, as on the CPU.
    bool fg = p > threshold;
    labels[o] = fg ? 1 : 0;
    if (confidence) confidence[o] = fg ? p : (p != p ? 0.0f : 1.0f - p);
}

extern "C" __global__ void mask_binary_f32(const float* logits, int h, int w, unsigned char* labels,
                                           float* confidence, int ow, int oh, float threshold) {
    mask_binary(logits, h, w, labels, confidence, ow, oh, threshold);
}

extern "C" __global__ void mask_binary_f16(const unsigned short* logits, int h, int w,
                                           unsigned char* labels, float* confidence, int ow, int oh,
                                           float threshold) {
    mask_binary(logits, h, w, labels, confidence, ow, oh, threshold);
}

// One thread per model-resolution pixel of a [k,h,w] logit map.
template <typename T>
__device__ __forceinline__ void argmax_classes(const T* __restrict__ logits, int k, int plane,
                                               unsigned char* __restrict__ labels,
                                               float* __restrict__ confidence) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= plane) return;
    int best = 0;
    float best_v = avs_ld(logits, i);
    for (int c = 1; c < k; c++) {
        float v = avs_ld(logits, (long long)c * plane + i);
        if (v > best_v) {
            best = c;
            best_v = v;
        }
    }
    float sum = 0.0f;
    for (int c = 0; c < k; c++) sum += expf(avs_ld(logits, (long long)c * plane + i) - best_v);
    float p = 1.0f / sum;
    labels[i] = (unsigned char)best;
    confidence[i] = isfinite(p) ? p : 0.0f;
}

extern "C" __global__ void argmax_classes_f32(const float* logits, int k, int plane,
                                              unsigned char* labels, float* confidence) {
    argmax_classes(logits, k, plane, labels, confidence);
}

extern "C" __global__ void argmax_classes_f16(const unsigned short* logits, int k, int plane,
                                              unsigned char* labels, float* confidence) {
    argmax_classes(logits, k, plane, labels, confidence);
}

// Nearest-neighbour upsampling of labels and confidences, sampling at pixel centres (PyTorch
// "nearest-exact", PIL NEAREST): source index floor((2d+1)·in / (2·out)), in integers.
extern "C" __global__ void nearest_labels(const unsigned char* __restrict__ labels,
                                          const float* __restrict__ confidence, int h, int w,
                                          unsigned char* __restrict__ out_labels,
                                          float* __restrict__ out_confidence, int ow, int oh) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= ow || y >= oh) return;
    int sx = min((int)(((2LL * x + 1) * w) / (2LL * ow)), w - 1);
    int sy = min((int)(((2LL * y + 1) * h) / (2LL * oh)), h - 1);
    long long s = (long long)sy * w + sx, o = (long long)y * ow + x;
    out_labels[o] = labels[s];
    if (out_confidence) out_confidence[o] = confidence[s];
}
