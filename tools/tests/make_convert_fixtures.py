#!/usr/bin/env python3
"""Checkpoint fixtures for `tests/convert.rs` (and by hand), written without torch.

    python tools/tests/make_convert_fixtures.py --out DIR

A width-reduced TPAVI-R50 + VGGish with the official key layout (dead branch and
num_batches_tracked included, models.md 6.10) saved as torch.save would save it,
plus broken variants, one per error the converter must report:

  tpavi.pth, tpavi.safetensors    the same state dict in both formats
  tpavi_module.pth                `module.` prefix, nested under {'state_dict': ..., 'epoch': 1}
  vggish.pth                      legacy (pre-1.6) stream format, as the 2019 vggish-10086976.pth
  truncated.pth                   tpavi.pth cut short
  nostorage.pth                   tpavi.pth without its storage record data/3
  shape.pth                       tpavi_b2.phi.weight with the wrong input width
  channels.pth                    resnet.layer2.1.conv2.weight taking 6 channels where 8 arrive
  nan.pth                         a NaN in conv3.conv2d_list.1.weight
  missing.pth                     every tpavi_b3.* key removed
  avsegformer.pth                 a few AVSegFormer-R50 keys (for the wrong-family error)
  evil.pth                        a pickle that calls os.system (must be refused, not run)
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avseg_export.checkpoint import save_pth  # noqa: E402
from avseg_export.weights import write_safetensors  # noqa: E402

STEM, WIDTHS, BLOCKS = 8, (4, 8, 16, 32), (3, 4, 6, 3)
CHANNEL, INNER, HEAD = 16, 8, (8, 8)
VGG_CONVS, VGG_FC = (4, 8, 8, 8, 16, 16), (32, 32, 128)


def tpavi_state_dict(rng) -> dict:
    sd = {}

    def conv(key, co, ci, k, gain=1.0, bias=False):
        sd[key + ".weight"] = (gain * np.sqrt(2.0 / (ci * k * k)) * rng.standard_normal((co, ci, k, k))).astype(np.float32)
        if bias:
            sd[key + ".bias"] = (0.05 * rng.standard_normal(co)).astype(np.float32)

    def bn(key, c, gamma=(0.5, 1.0)):
        sd[key + ".weight"] = rng.uniform(*gamma, c).astype(np.float32)
        sd[key + ".bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        sd[key + ".running_mean"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        sd[key + ".running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        sd[key + ".num_batches_tracked"] = np.array(100, dtype=np.int64)

    conv("resnet.conv1", STEM, 3, 7)
    bn("resnet.bn1", STEM)

    def layer(name, c_in, width, n):
        for i in range(n):
            p = f"resnet.{name}.{i}"
            cin = c_in if i == 0 else 4 * width
            conv(p + ".conv1", width, cin, 1)
            bn(p + ".bn1", width)
            conv(p + ".conv2", width, width, 3)
            bn(p + ".bn2", width)
            conv(p + ".conv3", 4 * width, width, 1)
            bn(p + ".bn3", 4 * width, gamma=(0.05, 0.2))   # keeps the random net's residual stream tame
            if i == 0:
                conv(p + ".downsample.0", 4 * width, c_in, 1)
                bn(p + ".downsample.1", 4 * width)
        return 4 * width

    c, outs = STEM, []
    for name, width, n in zip(("layer1", "layer2", "layer3_1", "layer4_1"), WIDTHS, BLOCKS):
        c = layer(name, c, width, n)
        outs.append(c)
    layer("layer3_2", outs[1], WIDTHS[2], BLOCKS[2])   # dead branch, as in the official checkpoint
    layer("layer4_2", outs[2], WIDTHS[3], BLOCKS[3])
    for k, c_in in enumerate(outs, start=1):
        for i in range(4):
            conv(f"conv{k}.conv2d_list.{i}", CHANNEL, c_in, 3, gain=0.5, bias=True)
    for k in range(1, 5):
        p = f"tpavi_b{k}"
        sd[p + ".align_channel.weight"] = (rng.standard_normal((CHANNEL, 128)) / np.sqrt(128)).astype(np.float32)
        sd[p + ".align_channel.bias"] = (0.05 * rng.standard_normal(CHANNEL)).astype(np.float32)
        for m, co, ci in (("theta", INNER, CHANNEL), ("phi", INNER, CHANNEL), ("g", INNER, CHANNEL),
                          ("W_z.0", CHANNEL, INNER)):
            sd[f"{p}.{m}.weight"] = (rng.standard_normal((co, ci, 1, 1, 1)) / np.sqrt(ci)).astype(np.float32)
            sd[f"{p}.{m}.bias"] = (0.05 * rng.standard_normal(co)).astype(np.float32)
        bn(p + ".W_z.1", CHANNEL, gamma=(0.3, 0.8))
        sd[p + ".norm_layer.weight"] = rng.uniform(0.5, 1.5, CHANNEL).astype(np.float32)
        sd[p + ".norm_layer.bias"] = (0.1 * rng.standard_normal(CHANNEL)).astype(np.float32)
    for k in (4, 3, 2, 1):
        for u in (1, 2):
            for j, gain in ((1, 1.0), (2, 0.5)):
                conv(f"path{k}.resConfUnit{u}.conv{j}", CHANNEL, CHANNEL, 3, gain=gain, bias=True)
    conv("output_conv.0", HEAD[0], CHANNEL, 3, gain=0.7, bias=True)
    conv("output_conv.2", HEAD[1], HEAD[0], 3, bias=True)
    conv("output_conv.4", 1, HEAD[1], 1, gain=0.7, bias=True)
    return sd


def vggish_state_dict(rng) -> dict:
    sd, c_in = {}, 1
    for idx, c in zip((0, 3, 6, 8, 11, 13), VGG_CONVS):
        sd[f"features.{idx}.weight"] = (np.sqrt(2.0 / (9 * c_in)) * rng.standard_normal((c, c_in, 3, 3))).astype(np.float32)
        sd[f"features.{idx}.bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        c_in = c
    d = c_in * 6 * 4
    for idx, n in zip((0, 2, 4), VGG_FC):
        sd[f"embeddings.{idx}.weight"] = (np.sqrt(2.0 / d) * rng.standard_normal((n, d))).astype(np.float32)
        sd[f"embeddings.{idx}.bias"] = (0.1 * rng.standard_normal(n)).astype(np.float32)
        d = n
    return sd


def evil_pickle() -> bytes:
    # GLOBAL posix.system, then call it with a harmless-looking string: a real attack would do this.
    return b"\x80\x02cposix\nsystem\nX\x0e\x00\x00\x00echo pwned >&2\x85R."


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    sd = tpavi_state_dict(rng)
    vgg = vggish_state_dict(rng)

    save_pth(out / "tpavi.pth", sd)
    write_safetensors(out / "tpavi.safetensors", sd)
    save_pth(out / "tpavi_module.pth", {"module." + k: v for k, v in sd.items()}, wrapper="state_dict")
    save_pth(out / "vggish.pth", vgg, legacy=True)

    data = (out / "tpavi.pth").read_bytes()
    (out / "truncated.pth").write_bytes(data[: len(data) * 3 // 5])

    with zipfile.ZipFile(out / "tpavi.pth") as src, zipfile.ZipFile(out / "nostorage.pth", "w") as dst:
        for item in src.infolist():
            if item.filename != "archive/data/3":
                dst.writestr(item, src.read(item))

    bad = dict(sd)
    bad["resnet.layer2.1.conv2.weight"] = np.zeros((8, 6, 3, 3), np.float32)
    save_pth(out / "channels.pth", bad)

    bad = dict(sd)
    bad["tpavi_b2.phi.weight"] = np.zeros((INNER, CHANNEL + 3, 1, 1, 1), np.float32)
    save_pth(out / "shape.pth", bad)

    bad = dict(sd)
    w = bad["conv3.conv2d_list.1.weight"].copy()
    w[2, 1, 0, 0] = np.nan
    bad["conv3.conv2d_list.1.weight"] = w
    save_pth(out / "nan.pth", bad)

    save_pth(out / "missing.pth", {k: v for k, v in sd.items() if not k.startswith("tpavi_b3.")})

    asf = {"backbone.conv1.weight": np.zeros((8, 3, 7, 7), np.float32),
           "head.fc.4.weight": np.zeros((1, 8, 1, 1), np.float32),
           "audio_proj.weight": np.zeros((8, 128), np.float32)}
    asf.update({"vggish." + k: v for k, v in vgg.items()})
    save_pth(out / "avsegformer.pth", asf)

    with zipfile.ZipFile(out / "evil.pth", "w") as zf:
        zf.writestr("archive/data.pkl", evil_pickle())
        zf.writestr("archive/version", "3\n")
    print(f"fixtures in {out}")


if __name__ == "__main__":
    main()
