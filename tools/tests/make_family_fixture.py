#!/usr/bin/env python3
"""Small random checkpoints with the official key layout, one per model family.

    python tools/tests/make_family_fixture.py --family tpavi-pvt --seed 0 --out /tmp/pvt.safetensors

Writes the segmenter checkpoint to --out and, for families whose official
checkpoint does not include VGGish (TPAVI, models.md 6.10), a separate VGGish
file (keys `features.*`, `embeddings.*`) to --vggish-out (default: --out with
`.vggish.safetensors`). Keys and their grammar are exactly the official ones
(dead branches included), only widths and depths are reduced, so the
exporters see what they would see in a real checkpoint. Exporter options that
a checkpoint cannot carry (the PVT head split) go into the safetensors
metadata as `export.*`.

Families are a table (FAMILIES) of name -> generator(seed) -> Fixture; add new
ones there.

Conditioning (as in tools/make_tiny_model.py): ResNet BNs are calibrated on
real and noise frames with a variance floor and small last-BN gammas; every
family's TPAVI BN (W_z.1) is calibrated the same way, so the attention term
is O(1) next to the residual and float32 differences between backends stay
~1e-5.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOOLS))

import make_tiny_model as tiny  # noqa: E402
from avseg_export.tpavi import PVT_PREFIX, build_tpavi  # noqa: E402
from avseg_export.weights import write_safetensors  # noqa: E402

# Width-reduced PVT-v2: official b5 is (64, 128, 320, 512), depths (3, 6, 40, 3).
PVT_DIMS = (16, 32, 80, 96)
PVT_DEPTHS = (2, 2, 3, 1)
PVT_SR = (8, 4, 2, 1)      # official
PVT_MLP_RATIO = 4          # official
PVT_HEAD_DIM = 16          # 64 officially; heads 1, 2, 5, 6 here (a power-of-4 head dim keeps
                           # the folded 1/sqrt(d) scale exact)
AVSS_CLASSES = 71
AVSS_FRAMES = 10


@dataclass
class Fixture:
    family: str
    checkpoint: dict
    vggish: dict | None
    frames: int                          # T of the official model
    export: dict = field(default_factory=dict)   # extra build_tpavi keyword arguments

    def metadata(self, seed):
        meta = {"family": self.family, "seed": seed, "frames": self.frames}
        meta.update({f"export.{k}": v for k, v in self.export.items()})
        return meta


def random_pvt(rng, prefix, dims=PVT_DIMS, depths=PVT_DEPTHS, sr=PVT_SR, mlp_ratio=PVT_MLP_RATIO,
               bias_std=0.05):
    """PVT-v2 state dict under `prefix`, keyed as pvt_v2_b5 (models.md 6.10)."""
    sd = {}

    def w(*shape, gain=1.0):
        fan_in = int(np.prod(shape[1:]))
        return (gain / np.sqrt(fan_in) * rng.standard_normal(shape)).astype(np.float32)

    def b(n):
        return (bias_std * rng.standard_normal(n)).astype(np.float32)

    def ln(key, c):
        sd[key + ".weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[key + ".bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)

    c_in = 3
    for s, (c, depth, r) in enumerate(zip(dims, depths, sr), start=1):
        k = 7 if s == 1 else 3
        pe = f"{prefix}patch_embed{s}"
        sd[pe + ".proj.weight"] = w(c, c_in, k, k, gain=1.5)
        sd[pe + ".proj.bias"] = b(c)
        ln(pe + ".norm", c)
        hidden = mlp_ratio * c
        for j in range(depth):
            p = f"{prefix}block{s}.{j}"
            ln(p + ".norm1", c)
            # q/kv gains near 1 give O(1) scores: the softmax is neither uniform nor one-hot.
            sd[p + ".attn.q.weight"], sd[p + ".attn.q.bias"] = w(c, c, gain=1.2), b(c)
            sd[p + ".attn.kv.weight"], sd[p + ".attn.kv.bias"] = w(2 * c, c, gain=1.2), b(2 * c)
            sd[p + ".attn.proj.weight"], sd[p + ".attn.proj.bias"] = w(c, c, gain=0.5), b(c)
            if r > 1:
                sd[p + ".attn.sr.weight"], sd[p + ".attn.sr.bias"] = w(c, c, r, r), b(c)
                ln(p + ".attn.norm", c)
            ln(p + ".norm2", c)
            sd[p + ".mlp.fc1.weight"], sd[p + ".mlp.fc1.bias"] = w(hidden, c), b(hidden)
            sd[p + ".mlp.dwconv.dwconv.weight"] = w(hidden, 1, 3, 3)
            sd[p + ".mlp.dwconv.dwconv.bias"] = b(hidden)
            sd[p + ".mlp.fc2.weight"], sd[p + ".mlp.fc2.bias"] = w(c, hidden, gain=0.5), b(c)
        ln(f"{prefix}norm{s}", c)
        c_in = c
    return sd


def _avss_head(sd, rng):
    """AVSS differences (models.md 6.9): align_channel without bias, 71 output classes."""
    for k in range(1, 5):
        del sd[f"tpavi_b{k}.align_channel.bias"]
    ini = tiny.Init(rng)
    head = sd["output_conv.2.weight"].shape[0]
    sd["output_conv.4.weight"] = ini.he(AVSS_CLASSES, head, 1, 1, gain=0.7)
    # Class 0 (background) slightly favoured, as a trained AVSS head is.
    sd["output_conv.4.bias"] = ini.normal(AVSS_CLASSES, 0.3)
    sd["output_conv.4.bias"][0] += 0.5


def _calibrate(sd, vgg, seed, export):
    batches = tiny.calibration_inputs(vgg, np.random.default_rng([seed, 1]), tiny.CALIB_SIZE)
    tiny.calibrate_bn(sd, batches, np.random.default_rng([seed, 2]), build=partial(build_tpavi, **export))


def _tpavi_r50(seed, avss):
    rng = np.random.default_rng(seed)
    vgg = tiny.random_vggish(rng)
    sd = tiny.random_tpavi(rng)
    if avss:
        _avss_head(sd, rng)
    _calibrate(sd, vgg, seed, {})
    if not avss:
        sd["output_conv.4.bias"] = np.array([0.25], np.float32)
    name = "tpavi-r50-avss" if avss else "tpavi-r50"
    return Fixture(name, sd, vgg, AVSS_FRAMES if avss else 5)


def _tpavi_pvt(seed, avss):
    rng = np.random.default_rng(seed)
    vgg = tiny.random_vggish(rng)
    # The decoder, TPAVI blocks and head are those of TPAVI-R50; only the encoder and conv1..4 differ.
    sd = {k: v for k, v in tiny.random_tpavi(rng).items() if not k.startswith("resnet.")}
    sd.update(random_pvt(rng, PVT_PREFIX))
    ini = tiny.Init(rng)
    for k, c_in in enumerate(PVT_DIMS, start=1):
        for i in range(4):
            sd[f"conv{k}.conv2d_list.{i}.weight"] = ini.he(tiny.CHANNEL, c_in, 3, 3, gain=0.5)
            sd[f"conv{k}.conv2d_list.{i}.bias"] = ini.normal(tiny.CHANNEL, 0.05)
    if avss:
        _avss_head(sd, rng)
    export = {"pvt_head_dim": PVT_HEAD_DIM}
    _calibrate(sd, vgg, seed, export)
    if not avss:
        sd["output_conv.4.bias"] = np.array([0.25], np.float32)
    name = "tpavi-pvt-avss" if avss else "tpavi-pvt"
    return Fixture(name, sd, vgg, AVSS_FRAMES if avss else 5, export)


FAMILIES = {
    "tpavi-r50": partial(_tpavi_r50, avss=False),
    "tpavi-pvt": partial(_tpavi_pvt, avss=False),
    "tpavi-r50-avss": partial(_tpavi_r50, avss=True),
    "tpavi-pvt-avss": partial(_tpavi_pvt, avss=True),
}


def make(family: str, seed: int = 0) -> Fixture:
    if family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[family](seed)


def write(fx: Fixture, seed: int, out, vggish_out=None):
    out = Path(out)
    write_safetensors(out, fx.checkpoint, fx.metadata(seed))
    paths = [out]
    if fx.vggish is not None:
        vout = Path(vggish_out) if vggish_out else out.with_name(out.name.removesuffix(".safetensors") + ".vggish.safetensors")
        write_safetensors(vout, fx.vggish, {"family": "vggish", "seed": seed})
        paths.append(vout)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", required=True, choices=sorted(FAMILIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="checkpoint .safetensors")
    ap.add_argument("--vggish-out", help="VGGish .safetensors (TPAVI families)")
    args = ap.parse_args()
    fx = make(args.family, args.seed)
    for p in write(fx, args.seed, args.out, args.vggish_out):
        print(f"{p.stat().st_size:>9}  {p}")


if __name__ == "__main__":
    main()
