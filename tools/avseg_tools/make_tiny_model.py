#!/usr/bin/env python3
"""Generate the tiny random-weight TPAVI-R50 package used by tests and the sample.

    avseg-make-tiny-model --seed 0 --out models/tiny-tpavi

The state dicts use the official key layout (docs/spec/tpavi.md §6.10 and docs/spec/vggish.md §3), including
the dead `layer3_2`/`layer4_2`/`path4.resConfUnit1` keys the exporter must
skip, but every width is reduced so the package stays small. Shapes are never
passed to the exporters: they infer everything from the tensors, exactly as
for a real checkpoint.

BatchNorm running statistics are calibrated (one BN at a time, in forward
order) on two clips, the bundled sample frames and N(0,1) frames, so
activations stay O(1) and the TPAVI attention term is comparable to the
residual it is added to. Near-dead channels get a variance floor and each
bottleneck's last BN a small gamma: a random 50-layer net is otherwise so
ill-conditioned that float32 rounding differences between backends (tract vs
ONNX Runtime) grow to ~3e-4 on the logits; with them it is ~3e-5. The final
bias is then set so about 30 % of the sample's pixels are foreground.
Calibrated numbers are rounded to 3 significant digits so the exported bytes
do not hinge on the last bits of a floating-point reduction.

Same seed -> byte-identical ONNX files.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from avseg_export import sample
from avseg_export.ort import session
from avseg_export.package import manifest, write_package
from avseg_export.tpavi import build_tpavi
from avseg_export.vggish import build_vggish
from avseg_export.weights import write_safetensors

# Reduced widths; the official values are in the comments.
STEM = 8                       # 64
WIDTHS = (4, 8, 16, 32)        # 64, 128, 256, 512 (bottleneck outputs are 4x)
BLOCKS = (3, 4, 6, 3)          # same as ResNet-50
CHANNEL = 32                   # 256 (ASPP / TPAVI / decoder width)
TPAVI_INNER = 16               # 128
HEAD = (16, 16)                # 128, 32
CLASSES = 1
AUDIO_DIM = 128                # 128 (kept: it is the manifest's embedding_dim)
VGG_CONVS = (4, 8, 16, 16, 32, 32)   # 64, 128, 256, 256, 512, 512
VGG_FC = (128, 128, AUDIO_DIM)       # 4096, 4096, 128
T, SIZE = 5, 224
CALIB_SIZE = 64                # BN statistics are gathered at this resolution
FOREGROUND_TARGET = 0.30
VAR_FLOOR = 0.25               # relative to the median channel variance of the same BN
BN3_GAMMA = (0.05, 0.2)        # last BN of each bottleneck: small, so blocks stay near identity


def _round_sig(a, digits=3):
    a = np.asarray(a, dtype=np.float64)
    return np.array([float(f"{v:.{digits - 1}e}") for v in a.ravel()]).reshape(a.shape)


class Init:
    def __init__(self, rng):
        self.rng = rng

    def he(self, *shape, gain=1.0):
        fan_in = int(np.prod(shape[1:]))
        return (gain * np.sqrt(2.0 / fan_in) * self.rng.standard_normal(shape)).astype(np.float32)

    def torch_default(self, *shape):
        # PyTorch's default for Linear/ConvNd: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
        bound = 1.0 / np.sqrt(int(np.prod(shape[1:])))
        w = self.rng.uniform(-bound, bound, shape).astype(np.float32)
        b = self.rng.uniform(-bound, bound, shape[0]).astype(np.float32)
        return w, b

    def normal(self, n, std):
        return (std * self.rng.standard_normal(n)).astype(np.float32)

    def bn(self, sd, prefix, c, gamma=(0.5, 1.0)):
        sd[prefix + ".weight"] = self.rng.uniform(*gamma, c).astype(np.float32)
        sd[prefix + ".bias"] = self.normal(c, 0.1)
        # Placeholders; replaced by calibrate_bn().
        sd[prefix + ".running_mean"] = np.zeros(c, np.float32)
        sd[prefix + ".running_var"] = np.ones(c, np.float32)
        sd[prefix + ".num_batches_tracked"] = np.array(0, dtype=np.int64)


def random_tpavi(rng) -> dict:
    ini = Init(rng)
    sd = {}
    sd["resnet.conv1.weight"] = ini.he(STEM, 3, 7, 7)
    ini.bn(sd, "resnet.bn1", STEM)

    def layer(name, c_in, width, n_blocks):
        for i in range(n_blocks):
            p = f"resnet.{name}.{i}"
            cin = c_in if i == 0 else 4 * width
            sd[p + ".conv1.weight"] = ini.he(width, cin, 1, 1)
            ini.bn(sd, p + ".bn1", width)
            sd[p + ".conv2.weight"] = ini.he(width, width, 3, 3)
            ini.bn(sd, p + ".bn2", width)
            sd[p + ".conv3.weight"] = ini.he(4 * width, width, 1, 1)
            # A small last gamma keeps the residual stream from growing block over block.
            ini.bn(sd, p + ".bn3", 4 * width, gamma=BN3_GAMMA)
            if i == 0:
                sd[p + ".downsample.0.weight"] = ini.he(4 * width, c_in, 1, 1)
                ini.bn(sd, p + ".downsample.1", 4 * width)
        return 4 * width

    c = STEM
    outs = []
    for name, width, n in zip(("layer1", "layer2", "layer3_1", "layer4_1"), WIDTHS, BLOCKS):
        c = layer(name, c, width, n)
        outs.append(c)
    # The official model also builds a second branch that forward() never runs.
    layer("layer3_2", outs[1], WIDTHS[2], BLOCKS[2])
    layer("layer4_2", outs[2], WIDTHS[3], BLOCKS[3])

    for k, c_in in enumerate(outs, start=1):
        for i in range(4):
            # Four summed branches: scale each down so the sum keeps unit gain.
            sd[f"conv{k}.conv2d_list.{i}.weight"] = ini.he(CHANNEL, c_in, 3, 3, gain=0.5)
            sd[f"conv{k}.conv2d_list.{i}.bias"] = ini.normal(CHANNEL, 0.05)

    for k in range(1, 5):
        p = f"tpavi_b{k}"
        sd[p + ".align_channel.weight"], sd[p + ".align_channel.bias"] = ini.torch_default(CHANNEL, AUDIO_DIM)
        for name in ("theta", "phi", "g"):
            w, b = ini.torch_default(TPAVI_INNER, CHANNEL, 1, 1, 1)
            sd[f"{p}.{name}.weight"], sd[f"{p}.{name}.bias"] = w, b
        sd[p + ".W_z.0.weight"], sd[p + ".W_z.0.bias"] = ini.torch_default(CHANNEL, TPAVI_INNER, 1, 1, 1)
        # Official init zeroes this BN (block = identity); random signs make the attention count.
        ini.bn(sd, p + ".W_z.1", CHANNEL, gamma=(0.3, 0.8))
        sd[p + ".W_z.1.weight"] *= np.where(rng.random(CHANNEL) < 0.5, -1, 1).astype(np.float32)
        sd[p + ".norm_layer.weight"] = rng.uniform(0.5, 1.5, CHANNEL).astype(np.float32)
        sd[p + ".norm_layer.bias"] = ini.normal(CHANNEL, 0.1)

    for k in (4, 3, 2, 1):
        for u in (1, 2):
            for j, gain in ((1, 1.0), (2, 0.5)):
                key = f"path{k}.resConfUnit{u}.conv{j}"
                sd[key + ".weight"] = ini.he(CHANNEL, CHANNEL, 3, 3, gain=gain)
                sd[key + ".bias"] = ini.normal(CHANNEL, 0.05)

    sd["output_conv.0.weight"] = ini.he(HEAD[0], CHANNEL, 3, 3, gain=0.7)
    sd["output_conv.0.bias"] = ini.normal(HEAD[0], 0.05)
    sd["output_conv.2.weight"] = ini.he(HEAD[1], HEAD[0], 3, 3)
    sd["output_conv.2.bias"] = ini.normal(HEAD[1], 0.05)
    sd["output_conv.4.weight"] = ini.he(CLASSES, HEAD[1], 1, 1, gain=0.7)
    sd["output_conv.4.bias"] = np.zeros(CLASSES, np.float32)   # calibrated later
    return sd


def random_vggish(rng) -> dict:
    ini = Init(rng)
    sd = {}
    c_in = 1
    for idx, c in zip((0, 3, 6, 8, 11, 13), VGG_CONVS):
        sd[f"features.{idx}.weight"] = ini.he(c, c_in, 3, 3)
        sd[f"features.{idx}.bias"] = ini.normal(c, 0.1)
        c_in = c
    d = c_in * 6 * 4
    for idx, n in zip((0, 2, 4), VGG_FC):
        sd[f"embeddings.{idx}.weight"] = ini.he(n, d)
        sd[f"embeddings.{idx}.bias"] = ini.normal(n, 0.1)
        d = n
    return sd


def _bn_order(sd):
    """BN prefixes in an order where each one's input depends only on earlier ones."""
    resnet = [k[: -len(".running_mean")] for k in sd
              if k.endswith(".running_mean") and k.startswith("resnet.")
              and not k.startswith(("resnet.layer3_2.", "resnet.layer4_2."))]
    tpavi = [f"tpavi_b{k}.W_z.1" for k in range(1, 5)]
    return resnet + tpavi


def _probe_value(bn_prefix):
    """(value name in the exported graph holding the raw input of this BN, channel axis)."""
    if bn_prefix.startswith("tpavi_b"):
        return bn_prefix[: -len(".W_z.1")] + ".W_z", -1
    if bn_prefix == "resnet.bn1":
        return "resnet.conv1", 1
    if bn_prefix.endswith(".downsample.1"):
        return bn_prefix[: -1] + "0", 1
    head, _, bn = bn_prefix.rpartition(".")
    return f"{head}.conv{bn[-1]}", 1


def calibrate_bn(sd, batches, noise_rng, build=build_tpavi):
    """Set each BN's running stats from the statistics of its input, in forward order.

    `batches` is a list of (frames, audio_embedding) clips; their statistics are
    pooled so the model stays well conditioned on photos and on noise alike.
    `build` exports the segmenter (a wrapper can pass exporter options).
    """
    for prefix in _bn_order(sd):
        saved = {k: sd[prefix + k].copy() for k in (".weight", ".bias")}
        c = saved[".weight"].shape[0]
        # Identity BN (scale exactly 1, shift 0) exposes the raw conv output.
        sd[prefix + ".weight"] = np.ones(c, np.float32)
        sd[prefix + ".bias"] = np.zeros(c, np.float32)
        sd[prefix + ".running_mean"] = np.zeros(c, np.float32)
        sd[prefix + ".running_var"] = np.full(c, 1.0 - 1e-5, np.float32)
        size = batches[0][0].shape[-1]
        model, _ = build(sd, frames=T, height=size, width=size, check=False)
        value, axis = _probe_value(prefix)
        model.graph.output.append(helper.make_tensor_value_info(value, onnx.TensorProto.FLOAT, None))
        sess = session(model)
        s1 = np.zeros(c)
        s2 = np.zeros(c)
        count = 0
        for frames, emb in batches:
            probe = sess.run([value], {"frames": frames, "audio_embedding": emb})[0]
            probe = np.moveaxis(probe.astype(np.float64), axis, 0).reshape(c, -1)
            s1 += probe.sum(axis=1)
            s2 += (probe ** 2).sum(axis=1)
            count += probe.shape[1]
        mean = s1 / count
        var = np.maximum(s2 / count - mean ** 2, 0.0)
        # Floor near-dead channels: a tiny running variance turns the folded BN into
        # a large gain, which makes the random model needlessly ill-conditioned.
        var = np.maximum(var, VAR_FLOOR * np.median(var)) + 1e-4
        # Perturb so the folded BN is not an exact whitening (as in a trained net).
        mean = mean + 0.05 * np.sqrt(var) * noise_rng.standard_normal(c)
        var = var * np.exp(0.15 * noise_rng.standard_normal(c))
        sd[prefix + ".weight"], sd[prefix + ".bias"] = saved[".weight"], saved[".bias"]
        sd[prefix + ".running_mean"] = _round_sig(mean).astype(np.float32)
        sd[prefix + ".running_var"] = _round_sig(var).astype(np.float32)


def calibration_inputs(vggish_sd, rng, size):
    """Two clips: the sample photo's frames and N(0,1) frames, each with its own audio."""
    model, _ = build_vggish(vggish_sd, check=False)
    enc = session(model)
    batches = []
    for frames in (sample.frames_to_tensor(sample.sample_frames(), size, size),
                   rng.standard_normal((T, 3, size, size)).astype(np.float32)):
        logmel = rng.uniform(-4.6, 2.0, (T, 1, 96, 64)).astype(np.float32)
        batches.append((frames, enc.run(["audio_embedding"], {"audio_logmel": logmel})[0]))
    return batches


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="models/tiny-tpavi")
    ap.add_argument("--save-weights", default=None,
                    help="also write the (calibrated) state dicts as safetensors under this folder, e.g. tools/out")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    vgg = random_vggish(rng)
    seg = random_tpavi(rng)
    calib_rng = np.random.default_rng([args.seed, 1])
    batches = calibration_inputs(vgg, calib_rng, CALIB_SIZE)
    calibrate_bn(seg, batches, np.random.default_rng([args.seed, 2]))
    emb = batches[0][1]

    # Final bias: put the FOREGROUND_TARGET quantile of the sample's logits at 0.
    frames_full = sample.frames_to_tensor(sample.sample_frames(), SIZE, SIZE)
    model, _ = build_tpavi(seg, frames=T, height=SIZE, width=SIZE, check=False)
    logits = session(model).run(["mask_logits"], {"frames": frames_full, "audio_embedding": emb})[0]
    seg["output_conv.4.bias"] = _round_sig([-np.quantile(logits, 1.0 - FOREGROUND_TARGET)]).astype(np.float32)

    audio_model, ainfo = build_vggish(vgg)
    seg_model, sinfo = build_tpavi(seg, frames=T, height=SIZE, width=SIZE)
    params = ainfo["parameters"] + sinfo["parameters"]
    meta = manifest(
        name="tiny-tpavi-r50",
        description="Width-reduced TPAVI-R50 with random weights, for tests and the bundled sample; "
                    "its masks are meaningless",
        family="tpavi",
        frames_per_clip=T, width=SIZE, height=SIZE,
        embedding_dim=ainfo["embedding_dim"],
        output={"kind": "binary", "threshold": 0.5},
        provenance={
            "source": "generated by tools/make_tiny_model.py (official TPAVI-R50/VGGish key layout, reduced widths)",
            "licence": "MIT OR Apache-2.0",
            "created_by": f"tools/make_tiny_model.py --seed {args.seed}",
            "trained": False,
            "parameters": params,
            "metrics": {},
        },
    )
    out = write_package(args.out, meta, audio_model, seg_model)
    if args.save_weights:
        wd = Path(args.save_weights)
        wd.mkdir(parents=True, exist_ok=True)
        write_safetensors(wd / f"tiny-tpavi-seed{args.seed}.safetensors", seg, {"seed": args.seed})
        write_safetensors(wd / f"tiny-vggish-seed{args.seed}.safetensors", vgg, {"seed": args.seed})

    fg = float((logits + seg["output_conv.4.bias"][0] > 0).mean())
    print(f"parameters: audio_encoder {ainfo['parameters']:,}  segmenter {sinfo['parameters']:,}  total {params:,}")
    print(f"output bias {seg['output_conv.4.bias'][0]:+.4g}; sample-clip foreground fraction {fg:.3f}")
    for p in sorted(out.iterdir()):
        print(f"{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}  {p.stat().st_size:>9}  {p}")


if __name__ == "__main__":
    main()
