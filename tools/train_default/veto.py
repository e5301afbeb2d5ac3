#!/usr/bin/env python3
"""Put the two-stage package's sound-source veto inside the default model's graph (issue 15).

    avseg-train-veto --veto family --family-depth 1 --default STAGE10_PACKAGE \
        --two-stage models/bavs-avsreg --cache RUN/cache_train --val-cache RUN/cache_val --out PACKAGE

Why: the default (TPAVI) head ties a sound to the objects that make sounds *like* it, so an
off-screen sound of the visible object's own family gets the visible object masked. The two-stage
package names the object before it masks, and keeps such frames empty, but it misses sounding
objects that the TPAVI head finds. The veto keeps the TPAVI mask and drops the parts of it that
lie where the two-stage rules say the sound is not theirs (tools/avsreg/unseen_split.md, rounds
eleven to thirteen; the bundled default, stage 11, is `--veto family --family-depth 1`).

What the output package computes, all inside its segmenter graph (same family, manifest schema and
graph signatures as the default, so every interface runs it unchanged):
  1. the default's TPAVI mask logits L, as before;
  2. the two-stage segmenter's semantic head, on the *same* encoder features: both packages use
     the same frozen EfficientNet-Lite0, so the encoder's nodes are merged (checked: a tensor is
     shared only when its bytes are equal, a node only when its operator, attributes and inputs
     are);
  3. a tagger: one linear layer and a softmax over the 100 sounds and silence, on the default's
     own audio embedding (already an input of the segmenter graph), fitted here on the default's
     embeddings of the training clips' seconds;
  4. the label tree (each sound's node, with its threshold, supports visual classes; the AVS-Reg
     tree has independent parents) gives the heard classes, and the heard-mass pixel rule
     (`avseg::post::heard_mass_keeps`) the kept pixels, as the two-stage package's own post stage;
  5. n, whether a mask pixel survives, from windows of --radius pixels (separable max pooling):
     `kept`, a kept pixel is near; `silent`, a kept pixel is near or no silent object's pixel is;
     `family`, as `silent` with only the unheard classes of a heard sound's family (its ancestor
     at --family-depth in the tree) counting as silent. The output is min(L, 1000 (n - 1/2)): a
     surviving pixel keeps its logit, any other is -500.

The graph uses only operators the CUDA runner has kernels for (no Slice, Concat, Softmax, Log,
reduction or comparison): a strict test x > 0 is min(relu(x) * 1e30, 1), maxima over an axis are
max pooling, sums are products, and the heard-mass rule is written without a division or a
logarithm (see `veto_tail`). `strip` takes the veto out again (`avseg-from-package` uses it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from avseg_export.package import dumps_manifest, record_file

BIG = 1e30       # relu(x) * BIG saturates at 1 for any x > 1e-30: a strict "x > 0"
VETO = 1000.0    # min(L, VETO (n - 1/2)): -500 where vetoed


# --- inputs ------------------------------------------------------------------------------------

def read_json(path: Path, what: str):
    """`path`'s JSON, or an error naming the file and the problem."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise SystemExit(f"{path}: cannot read {what} ({e.strerror or e})")
    except ValueError as e:
        raise SystemExit(f"{path}: {what} is not valid JSON ({e})")


def read_manifest(package: Path) -> dict:
    """A package folder's manifest, checked by the exporter's own validation."""
    from avseg_export.package import validate_manifest
    path = Path(package) / "avseg.json"
    m = read_json(path, "the package manifest")
    try:
        validate_manifest(m)
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        raise SystemExit(f"{path}: not a valid avseg manifest ({e})")
    return m


def read_cache(cache: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """A train.py cache folder's log-mel patches [clips, T, 96, 64], sound labels [clips, T, V]
    and clip list, or an error naming the file and the problem."""
    meta = read_json(Path(cache) / "clips.json", "the cache's clip list")
    try:
        logmel = np.load(Path(cache) / "logmel.npy", mmap_mode="r")
        labels = np.load(Path(cache) / "sound_labels.npy")
    except (OSError, ValueError) as e:
        raise SystemExit(f"{cache}: not a train.py cache with logmel.npy and sound_labels.npy ({e})")
    n = len(meta.get("clips", []))
    if logmel.ndim != 4 or logmel.shape[2:] != (96, 64) or labels.shape[:2] != logmel.shape[:2] or logmel.shape[0] != n:
        raise SystemExit(f"{cache}: logmel {logmel.shape}, sound_labels {labels.shape} and {n} clips in clips.json "
                         "do not describe the same clips")
    return logmel, labels, meta


# --- the tagger ------------------------------------------------------------------------------

def embeddings(audio_encoder: Path, logmel: np.ndarray, threads: int) -> np.ndarray:
    """The default's audio embedding of each second: logmel [S, 96, 64] -> [S, D]."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    s = ort.InferenceSession(str(audio_encoder), opts, providers=["CPUExecutionProvider"])
    out = []
    for i in range(0, len(logmel), 512):
        out.append(s.run(["audio_embedding"], {"audio_logmel": np.ascontiguousarray(logmel[i:i + 512, None], np.float32)})[0])
    return np.concatenate(out)


def targets(sound_labels: np.ndarray) -> np.ndarray:
    """[S, V] multi-hot sounds of each second -> [S, V + 1] targets: the sounds spread evenly,
    silence (the last label) when none sounds (as `avseg-pretrain-audio`)."""
    y = sound_labels.reshape(-1, sound_labels.shape[-1]).astype(np.float64)
    y = np.concatenate([y, (y.sum(1) == 0)[:, None].astype(np.float64)], 1)
    return (y / y.sum(1, keepdims=True)).astype(np.float32)


def fit_tagger(x: np.ndarray, y: np.ndarray, *, steps: int, lr: float, weight_decay: float, seed: int):
    """Full-batch Adam on the soft-target cross-entropy of softmax(x W + b). Returns W [D, A], b."""
    import torch
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    lin = torch.nn.Linear(x.shape[1], y.shape[1])
    opt = torch.optim.Adam(lin.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        loss = -(torch.log_softmax(lin(xt), 1) * yt).sum(1).mean()
        loss.backward()
        opt.step()
    w = lin.weight.detach().numpy().T.copy()
    b = lin.bias.detach().numpy().copy()
    return w.astype(np.float32), b.astype(np.float32), float(loss.detach())


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def top1_single(x, y, w, b) -> tuple[float, int]:
    """Top-1 accuracy over seconds with exactly one label (one sound, or silence)."""
    single = (y > 0).sum(1) == 1
    pred = (x[single] @ w + b).argmax(1)
    return float((pred == y[single].argmax(1)).mean()), int(single.sum())


# --- the label tree ----------------------------------------------------------------------------

def support_matrix(tree: dict, audio_labels: list[str], visual_labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """S [A, V-1]: 1 where audio label a's tree node supports object class v (visual labels
    1..V-1; 0 is the background), support flowing up from children; and each audio label's
    threshold. Only `independent` parents are written into a graph: under `needs_parent` a
    sound's heard flag depends on its ancestors', which this matrix does not express."""
    if tree.get("parent_rule", "independent") != "independent":
        raise SystemExit(f"label tree: parent_rule {tree.get('parent_rule')!r}; only 'independent' can be put in a graph")
    nodes = tree["nodes"]
    index = {n["name"]: i for i, n in enumerate(nodes)}
    vis = {v: i for i, v in enumerate(visual_labels)}
    support = [set() for _ in nodes]
    for i, n in enumerate(nodes):
        for v in n.get("visual", []):
            if v not in vis or vis[v] == 0:
                raise SystemExit(f"label tree: node {n['name']!r} names visual label {v!r}, which the segmenter has not (or is the background)")
            support[i].add(vis[v])
    # Support flows up: a parent's sound can come from whatever its children's can.
    def depth(i):
        d, p = 0, nodes[i].get("parent")
        while p is not None:
            d += 1
            p = nodes[index[p]].get("parent")
        return d
    for i in sorted(range(len(nodes)), key=depth, reverse=True):
        p = nodes[i].get("parent")
        if p is not None:
            support[index[p]] |= support[i]
    s = np.zeros((len(audio_labels), len(visual_labels) - 1), np.float32)
    thr = np.full(len(audio_labels), np.inf, np.float32)  # a label with no node is never heard
    for a, name in enumerate(audio_labels):
        if name in index:
            i = index[name]
            thr[a] = nodes[i].get("threshold", tree.get("default_threshold", 0.5))
            for v in support[i]:
                s[a, v - 1] = 1.0
    return s, thr


def family_matrix(tree: dict, audio_labels: list[str], visual_labels: list[str], depth: int) -> np.ndarray:
    """F [A, V-1]: 1 where object class v is in audio label a's family: the classes that a's
    node's ancestor at `depth` (0: its top-level category) supports, or its parent's where the
    node is not that deep (a top-level sound's family is what it supports itself)."""
    nodes = {n["name"]: n for n in tree["nodes"]}
    full, _ = support_matrix(tree, [n["name"] for n in tree["nodes"]], visual_labels)
    row = {n["name"]: i for i, n in enumerate(tree["nodes"])}
    f = np.zeros((len(audio_labels), len(visual_labels) - 1), np.float32)
    for a, name in enumerate(audio_labels):
        if name not in nodes:
            continue
        chain, p = [], nodes[name].get("parent")
        while p is not None:
            chain.insert(0, p)
            p = nodes[p].get("parent")
        top = chain[min(depth, len(chain) - 1)] if chain else name
        f[a] = full[row[top]]
    return f


def window_reference(x: np.ndarray, radius: int) -> np.ndarray:
    """[N, H, W] bool -> whether x holds within `radius` pixels (a (2 radius + 1)² window)."""
    from scipy.ndimage import maximum_filter
    return maximum_filter(x.astype(np.uint8), size=(1, 2 * radius + 1, 2 * radius + 1), mode="constant") > 0


def kept_reference(margin: np.ndarray, cls: np.ndarray, heard: np.ndarray, silent_ratio: float) -> np.ndarray:
    """The heard-mass rule on class logits [bg, objectness + cls_k] in plain numpy (float64):
    margin = objectness - background [N, 1, H, W], cls [N, K, H, W], heard [N, K] -> kept [N, H, W]."""
    logits = np.concatenate([np.zeros_like(margin), margin + cls], 1).astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    bg = p[:, 0]
    h = (p[:, 1:] * heard[:, :, None, None]).sum(1)
    return (h > bg) & (h > silent_ratio * np.maximum(1 - bg - h, 0))


# --- the graph ---------------------------------------------------------------------------------

def _key(node: onnx.NodeProto, inputs: list[str]):
    return (node.domain, node.op_type, tuple(inputs), tuple(a.SerializeToString() for a in node.attribute))


def _digest(t: onnx.TensorProto) -> str:
    a = numpy_helper.to_array(t)
    return f"{a.dtype}{a.shape}" + hashlib.sha256(a.tobytes()).hexdigest()


def head_without_slices(b: onnx.GraphProto) -> onnx.GraphProto:
    """The two-stage segmenter's graph with its last nodes rewritten for the veto: one `margin`
    channel (objectness - background: the difference of output_conv.4's two filters) instead of
    the Slices and the class_logits Concat, and cls.0 over its two inputs as two convolutions
    summed instead of a Concat. Outputs: `head.margin`, `cls.up3`."""
    inits = {i.name: numpy_helper.to_array(i) for i in b.initializer}
    nodes = {n.name: n for n in b.node}
    out4, cls0, concat = nodes["output_conv.4"], nodes["cls.0"], nodes["cls.concat"]
    w4, b4 = inits[out4.input[1]], inits[out4.input[2]]
    if w4.shape[0] != 2:
        raise SystemExit(f"two-stage segmenter: output_conv.4 has {w4.shape[0]} filters, 2 expected (background, objectness)")
    new_inits = [numpy_helper.from_array((w4[1:2] - w4[0:1]).astype(np.float32), "head.margin.weight"),
                 numpy_helper.from_array((b4[1:2] - b4[0:1]).astype(np.float32), "head.margin.bias")]
    a_in, d_in = concat.input
    w0, b0 = inits[cls0.input[1]], inits[cls0.input[2]]
    # The channel count of the Concat's first input: the encoder tap it reads (from the weights of
    # the encoder node that makes it, whose first axis is its output channels).
    producer = {o: n for n in b.node for o in n.output}
    def channels(t):
        n = producer[t]
        while n.op_type not in ("Conv",):
            n = producer[n.input[0]]
        return inits[n.input[1]].shape[0]
    split = channels(a_in)
    if split + channels(d_in) != w0.shape[1]:
        raise SystemExit("two-stage segmenter: cls.0's input channels are not its Concat's two inputs'")
    new_inits += [numpy_helper.from_array(np.ascontiguousarray(w0[:, :split]), "cls.0a.weight"),
                  numpy_helper.from_array(b0, "cls.0a.bias"),
                  numpy_helper.from_array(np.ascontiguousarray(w0[:, split:]), "cls.0b.weight")]
    attrs = {a.name: helper.get_attribute_value(a) for a in cls0.attribute}
    keep = [n for n in b.node if n.name not in ("cls.concat", "cls.0", "output_conv.4", "head.background",
                                                  "head.objectness", "head.objects", "class_logits")]
    extra = [
        helper.make_node("Conv", ["output_conv.3", "head.margin.weight", "head.margin.bias"], ["head.margin"], name="head.margin",
                         kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[1, 1]),
        helper.make_node("Conv", [a_in, "cls.0a.weight", "cls.0a.bias"], ["cls.0a"], name="cls.0a", **attrs),
        helper.make_node("Conv", [d_in, "cls.0b.weight"], ["cls.0b"], name="cls.0b", **attrs),
        helper.make_node("Add", ["cls.0a", "cls.0b"], ["cls.0"], name="cls.0"),
    ]
    # Keep the topological order: each new node goes where the node it replaces was.
    ordered = []
    for n in keep:
        if n.name == "cls.1":
            ordered += extra[1:]
        ordered.append(n)
    ordered.append(extra[0])
    used = {i for n in ordered for i in n.input}
    g = helper.make_graph(ordered, b.name, list(b.input),
                          [helper.make_tensor_value_info("head.margin", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("cls.up3", TensorProto.FLOAT, None)],
                          [i for i in b.initializer if i.name in used] + [i for i in new_inits if i.name in used])
    return g


def merge(d: onnx.GraphProto, b: onnx.GraphProto, prefix: str = "veto.") -> tuple[list, list, dict, dict]:
    """B's nodes and tensors added to D's: a B tensor whose bytes equal a D tensor's is D's; a B
    node whose operator, attributes and (mapped) inputs equal a D node's is that node. Returns
    (new nodes, new initializers, B's name -> merged name, counts)."""
    by_digest = {_digest(t): t.name for t in d.initializer}
    names = {i.name: i.name for i in b.input}
    new_inits, shared_inits = [], 0
    for t in b.initializer:
        k = _digest(t)
        if k in by_digest:
            names[t.name] = by_digest[k]
            shared_inits += 1
        else:
            names[t.name] = prefix + t.name
            c = onnx.TensorProto()
            c.CopyFrom(t)
            c.name = prefix + t.name
            new_inits.append(c)
    index = {_key(n, list(n.input)): list(n.output) for n in d.node}
    new_nodes, shared_nodes = [], 0
    for n in b.node:
        ins = [names[i] if i else "" for i in n.input]
        k = _key(n, ins)
        if k in index:
            for o, m in zip(n.output, index[k]):
                names[o] = m
            shared_nodes += 1
            continue
        c = onnx.NodeProto()
        c.CopyFrom(n)
        del c.input[:]
        c.input.extend(ins)
        del c.output[:]
        c.output.extend(prefix + o for o in n.output)
        c.name = prefix + n.name
        for o in n.output:
            names[o] = prefix + o
        new_nodes.append(c)
    return new_nodes, new_inits, names, {"shared_tensors": shared_inits, "shared_nodes": shared_nodes,
                                          "new_nodes": len(new_nodes), "new_tensors": len(new_inits)}


def veto_tail(logits: str, margin: str, cls: str, upsampling: list, embedding: str, w: np.ndarray, b: np.ndarray,
              support: np.ndarray, thresholds: np.ndarray, silent_ratio: float, radius: int, size: tuple, out: str,
              mode: str = "kept", family: np.ndarray | None = None):
    """The nodes and constants from (TPAVI logits, margin, per-class logits, audio embedding) to
    the vetoed logits. With e_k = exp(cls_k - M), E = sum_k e_k, H = sum_{k heard} e_k, the
    two-stage softmax over [background, objectness + cls_k] keeps a pixel when (heard-mass rule)
    H e^(margin + M) > 1 and H > r (E - H): the first as H - exp(-(margin + M)) > 0 (no overflow
    to inf * 0), the second as (1 + r) H - r E > 0. Both hold for any M; M only keeps the
    exponentials in range. The per-class logits are a bilinear upsampling (`upsampling`: the
    Resize nodes, from the coarse map `cls`) of a coarse map, and a bilinear weight sum is at most
    the largest of its terms, so M = the same upsampling of the coarse map's channel maximum is
    at least max_k cls_k at every pixel (e_k <= 1), and close to it; a channel maximum over the
    full-size map costs more than the rest of the veto together on the CPU."""
    n, c = [], []
    def const(name, value):
        c.append(numpy_helper.from_array(np.asarray(value, np.float32), "veto.const." + name))
        return "veto.const." + name
    def node(op, ins, name, **kw):
        n.append(helper.make_node(op, ins, ["veto." + name], name="veto." + name, **kw))
        return "veto." + name
    big, one = const("big", BIG), const("one", 1.0)
    def gt0(x, name):  # 1 where x > 0 (x > 1e-30), else 0
        return node("Min", [node("Mul", [node("Relu", [x], name + ".relu"), big], name + ".big"), one], name)
    # Tagger: softmax(z) >= threshold  <=>  exp(z - max z) >= threshold * sum exp(z - max z).
    z = node("Add", [node("MatMul", [embedding, const("tagger.weight", w)], "tagger.matmul"), const("tagger.bias", b)], "tagger.logits")
    # Maxima and sums over an axis as max pooling and products: the CUDA runner has kernels for
    # those and none for reductions.
    labels = w.shape[1]
    z4 = node("Reshape", [z, const_i64(c, "tagger.as_row", [0, 1, 1, labels])], "tagger.row")
    z_max = node("Reshape", [node("MaxPool", [z4], "tagger.max4", kernel_shape=[1, labels], strides=[1, 1]),
                             const_i64(c, "tagger.as_column", [0, 1])], "tagger.max")
    ez = node("Exp", [node("Sub", [z, z_max], "tagger.centred")], "tagger.exp")
    total = node("MatMul", [ez, const("tagger.ones", np.ones((labels, 1)))], "tagger.sum")
    finite = np.where(np.isfinite(thresholds), thresholds, 2.0).astype(np.float32)  # 2: never reached by a probability
    below = gt0(node("Sub", [node("Mul", [total, const("tagger.thresholds", finite[None])], "tagger.needed"), ez], "tagger.short"), "tagger.below")
    heard_sound = node("Sub", [one, below], "tagger.heard")
    heard_class = node("Min", [node("MatMul", [heard_sound, const("tree.support", support)], "tree.count"), one], "tree.heard")
    # Per frame, the weights of two sums over the classes: row 0 the heard classes' (H), row 1
    # (1 + r) H - r E's; one batched product then makes both sums (channel reductions and a
    # broadcast product over the full-size map cost several times more on the CPU).
    heard3 = node("Unsqueeze", [heard_class, const_i64(c, "unsqueeze1", [1])], "tree.heard3")
    # Under the `silent` veto two more rows: E - H and E - 2 H (the unheard classes' sum, and
    # whether it is above the heard classes').
    scale, shift = [[1.0], [1.0 + silent_ratio]], [[0.0], [-silent_ratio]]
    if mode == "silent":
        scale, shift = scale + [[-1.0], [-2.0]], shift + [[1.0], [1.0]]
    if mode == "family":
        # Under the `family` veto the same two rows with the heard sounds' family classes (Fam)
        # in place of every class: Fam - H and Fam - 2 H (a heard class is in its own family).
        scale, shift = scale + [[-1.0], [-2.0]], shift + [[0.0], [0.0]]
    rows = node("Add", [node("Mul", [heard3, const("rows.scale", scale)], "rows.scaled"), const("rows.shift", shift)], "rows")
    if mode == "family":
        fam = node("Min", [node("MatMul", [heard_sound, const("tree.family", family)], "tree.family_count"), one], "tree.family_heard")
        fam3 = node("Unsqueeze", [fam, const_i64(c, "unsqueeze1f", [1])], "tree.family3")
        rows = node("Add", [rows, node("Mul", [fam3, const("rows.family", [[0.0], [0.0], [1.0], [1.0]])], "rows.family_scaled")],
                    "rows.with_family")
    # Heard mass.
    # The coarse map [N, K, hc, wc] viewed as [N, 1, K, hc wc]: a (K, 1) max pooling is the
    # maximum over the classes at each pixel.
    hc, wc = size[0] >> len(upsampling), size[1] >> len(upsampling)
    if (hc << len(upsampling), wc << len(upsampling)) != tuple(size):
        raise SystemExit(f"class map: {len(upsampling)} 2x upsamplings do not reach {size}")
    k_cls = support.shape[1]
    coarse = node("Reshape", [upsampling[0].input[0], const_i64(c, "coarse.as_plane", [0, 1, k_cls, hc * wc])], "cls.coarse_plane")
    m = node("Reshape", [node("MaxPool", [coarse], "cls.coarse_max_flat", kernel_shape=[k_cls, 1], strides=[1, 1]),
                         const_i64(c, "coarse.back", [0, 1, hc, wc])], "cls.coarse_max")
    for i, r in enumerate(upsampling):
        m = node("Resize", [m] + list(r.input[1:]), f"cls.max_up{i}", **{a.name: helper.get_attribute_value(a) for a in r.attribute})
    e = node("Exp", [node("Sub", [cls, m], "cls.centred")], "cls.exp")
    h, wd = size
    sums = node("MatMul", [rows, node("Reshape", [e, const_i64(c, "flat", [0, k_cls, h * wd])], "cls.exp_flat")], "cls.sums")
    plane = const_i64(c, "plane", [0, 1, h, wd])
    def row(i, name):
        pick = const(f"pick{i}", [[float(j == i) for j in range(len(scale))]])
        return node("Reshape", [node("MatMul", [pick, sums], name + ".flat"), plane], name)
    e_heard, over_rest = row(0, "cls.heard_sum"), row(1, "pix.over_rest")
    need = node("Exp", [node("Neg", [node("Add", [margin, m], "pix.margin_max")], "pix.neg")], "pix.need")
    keep1 = gt0(node("Sub", [e_heard, need], "pix.over_background"), "pix.keep1")
    keep2 = gt0(over_rest, "pix.keep2")
    kept = node("Mul", [keep1, keep2], "pix.kept")
    k = 2 * radius + 1
    def window(x, name):  # 1 where x is 1 within `radius` pixels (separable max pooling)
        rows_ = node("MaxPool", [x], name + ".rows", kernel_shape=[1, k], pads=[0, radius, 0, radius], strides=[1, 1])
        return node("MaxPool", [rows_], name, kernel_shape=[k, 1], pads=[radius, 0, radius, 0], strides=[1, 1])
    near = window(kept, "near")
    if mode in ("silent", "family"):
        # A silent object's pixel: the unheard (family) classes' probability is above the
        # background's (E - H > exp(-(margin + M)), as keep1) and above the heard classes'
        # (E - 2 H > 0); under `family`, Fam in place of E.
        unheard, over_heard = row(2, "pix.unheard_sum"), row(3, "pix.unheard_over_heard")
        silent = node("Mul", [gt0(node("Sub", [unheard, need], "pix.silent_over_background"), "pix.silent1"),
                              gt0(over_heard, "pix.silent2")], "pix.silent")
        # Survives unless a silent pixel is near and no kept one is: 1 - near_silent (1 - near).
        near = node("Sub", [one, node("Mul", [window(silent, "near_silent"), node("Sub", [one, near], "far")], "vetoed")], "survives")
    cap = node("Sub", [node("Mul", [near, const("veto", VETO)], "cap.scaled"), const("half", VETO / 2)], "cap")
    n.append(helper.make_node("Min", [logits, cap], [out], name="veto.out"))
    return n, c


def const_i64(c, name, value):
    full = "veto.const." + name
    c.append(numpy_helper.from_array(np.array(value, np.int64), full))
    return full


def build(default_seg: onnx.ModelProto, bavs_seg: onnx.ModelProto, w, b, support, thresholds,
          silent_ratio: float, radius: int, size: tuple, mode: str = "kept", family=None) -> tuple[onnx.ModelProto, dict]:
    d = default_seg.graph
    (out,) = [o.name for o in d.output]
    tpavi = "tpavi." + out
    nodes = []
    for nd in d.node:
        c = onnx.NodeProto()
        c.CopyFrom(nd)
        c.output[:] = [tpavi if o == out else o for o in nd.output]
        c.input[:] = [tpavi if i == out else i for i in nd.input]
        nodes.append(c)
    bg = head_without_slices(bavs_seg.graph)
    new_nodes, new_inits, names, counts = merge(d, bg)
    emb = [i.name for i in d.input if i.name != "frames"]
    if len(emb) != 1:
        raise SystemExit(f"default segmenter inputs {[i.name for i in d.input]}: frames and one audio embedding expected")
    # The Resize chain that makes the per-class logits from the coarse class map.
    made = {o: nd for nd in new_nodes for o in nd.output}
    chain, at = [], names["cls.up3"]
    while at in made and made[at].op_type == "Resize":
        chain.insert(0, made[at])
        at = made[at].input[0]
    if not chain:
        raise SystemExit("two-stage segmenter: cls.up3 is not made by Resize nodes")
    tail, tail_inits = veto_tail(tpavi, names["head.margin"], names["cls.up3"], chain, emb[0], w, b, support, thresholds,
                                 silent_ratio, radius, size, out, mode, family)
    g = helper.make_graph(nodes + new_nodes + tail, d.name, list(d.input), list(d.output),
                          list(d.initializer) + new_inits + tail_inits)
    m = helper.make_model(g, opset_imports=list(default_seg.opset_import), producer_name="avseg-train-veto")
    m.ir_version = default_seg.ir_version
    onnx.checker.check_model(m)
    return m, counts


def check(model: onnx.ModelProto, default: Path, dm: dict, two_stage: Path, bm: dict, w, b, support, thresholds,
          silent_ratio: float, radius: int, mode: str, family, cache: Path, clips: int) -> dict:
    """The built graph (ONNX Runtime) against the veto computed in numpy (float64) from the two
    packages' own graphs (ONNX Runtime), on `clips` clips of `cache`'s split, frames read again
    from disk. Disagreements can only come from pixels on a rule's boundary (float32 against
    float64), so the check counts them and requires them to be rare."""
    import onnxruntime as ort
    from train_default.data import clip_paths, list_clips, load_frames
    def sess(m):
        o = ort.SessionOptions()
        o.intra_op_num_threads = 2
        return ort.InferenceSession(m.SerializeToString() if isinstance(m, onnx.ModelProto) else str(m), o,
                                    providers=["CPUExecutionProvider"])
    s_new, s_tp = sess(model), sess(default / dm["graphs"]["segmenter"]["file"])
    s_aud, s_bv = sess(default / dm["graphs"]["audio_encoder"]["file"]), sess(two_stage / bm["graphs"]["segmenter"]["file"])
    logmel, _, meta = read_cache(cache)
    root = Path(meta["root"])
    recipes = {r["name"]: r for r in list_clips(root, "val")}
    if missing := [c["name"] for c in meta["clips"] if c["name"] not in recipes]:
        raise SystemExit(f"{cache / 'clips.json'}: clip {missing[0]} is not a val clip of {root} "
                         f"({len(missing)} of {len(meta['clips'])} missing): --val-cache must be a val split's cache")
    size = dm["vision"]["width"]
    worst, flips, pixels, vetoed = 0.0, 0, 0, 0
    for ci in np.linspace(0, len(meta["clips"]) - 1, clips).astype(int):
        name = meta["clips"][ci]["name"]
        frames = load_frames(clip_paths(root, recipes[name])["frames"], size)
        emb = s_aud.run(None, {"audio_logmel": np.ascontiguousarray(logmel[ci][:, None])})[0]
        got = s_new.run(None, {"frames": frames, "audio_embedding": emb})[0]
        lt = s_tp.run(None, {"frames": frames, "audio_embedding": emb})[0].astype(np.float64)
        cl = s_bv.run(None, {"frames": frames})[0].astype(np.float64)
        tags = softmax(emb.astype(np.float64) @ w + b)
        heard = np.minimum((tags >= thresholds[None]).astype(np.float64) @ support, 1)
        # class_logits = [background, objectness + cls_k]: the heard-mass rule on them directly.
        p = np.exp(cl - cl.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        bg, h = p[:, 0], (p[:, 1:] * heard[:, :, None, None]).sum(1)
        kept = (h > bg) & (h > silent_ratio * np.maximum(1 - bg - h, 0))
        near = window_reference(kept, radius)
        if mode in ("silent", "family"):
            if mode == "silent":
                u = 1 - bg - h
            else:
                fam = np.minimum((tags >= thresholds[None]).astype(np.float64) @ family, 1)
                u = (p[:, 1:] * (fam - heard)[:, :, None, None]).sum(1)
            near = near | ~window_reference((u > bg) & (u > h), radius)
        want = np.where(near[:, None], lt, np.minimum(lt, -VETO / 2))
        flips += int(((got > 0) != (want > 0)).sum())
        pixels += got.size
        vetoed += int(((lt > 0) & ~near[:, None]).sum())
        worst = max(worst, float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6)))
        print(f"check {name}: max|d|/max|logit| {worst:.2e}, mask pixels flipped {flips} of {pixels}")
    if flips > 1e-4 * pixels:
        raise SystemExit(f"the veto graph disagrees with the numpy veto on {flips} of {pixels} pixels")
    return {"clips": clips, "max_rel_diff": worst, "mask_pixels_flipped": flips, "pixels": pixels, "tpavi_pixels_vetoed": vetoed}


def strip(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph `build` started from: every node and tensor it added (named `veto.*`) removed and
    the TPAVI logits made the output again. Exact, since `build` renames nothing of the default's
    graph but its output, and what it shares with the two-stage head keeps the default's names."""
    g = model.graph
    (out,) = [o.name for o in g.output]
    tpavi = "tpavi." + out
    nodes = []
    for nd in g.node:
        if nd.name.startswith("veto."):
            continue
        c = onnx.NodeProto()
        c.CopyFrom(nd)
        c.output[:] = [out if o == tpavi else o for o in nd.output]
        c.input[:] = [out if i == tpavi else i for i in nd.input]
        nodes.append(c)
    if not any(out in nd.output for nd in nodes):
        raise SystemExit(f"graph {g.name!r}: no node makes {tpavi!r}: not a graph avseg-train-veto built")
    inits = [t for t in g.initializer if not t.name.startswith("veto.")]
    stripped = helper.make_graph(nodes, g.name, list(g.input), list(g.output), inits)
    m = helper.make_model(stripped, opset_imports=list(model.opset_import), producer_name=model.producer_name)
    m.ir_version = model.ir_version
    onnx.checker.check_model(m)
    return m


# --- the package ------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--default", type=Path, required=True, help="the TPAVI package (binary, audio embedding input)")
    ap.add_argument("--two-stage", type=Path, required=True, help="the bavs package whose segmenter shares the encoder")
    ap.add_argument("--cache", type=Path, required=True, help="train.py cache (train split): logmel.npy, sound_labels.npy")
    ap.add_argument("--val-cache", type=Path, required=True,
                    help="train.py cache (val split): the tagger's reported accuracy, and the clips the graph is checked on")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--radius", type=int, default=11)
    ap.add_argument("--veto", choices=["kept", "silent", "family"], default="kept",
                    help="kept: a mask pixel survives only near a kept pixel (the eleventh round's V); silent: it is "
                         "vetoed only near a silent object's pixel and far from any kept one (the twelfth round's W); "
                         "family: as silent, for objects of a heard sound's family only (the thirteenth round's F)")
    ap.add_argument("--family-depth", type=int, default=1,
                    help="with --veto family: a sound's family is the classes under its tree ancestor at this depth "
                         "(0: the top level), or under its parent where the sound's node is not that deep")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check-clips", type=int, default=6)
    ap.add_argument("--metrics", type=Path, action="append", default=[],
                    help="JSON files whose objects replace provenance.metrics (the default's are about the model "
                         "without the veto); without any, those are kept")
    ap.add_argument("--training", type=Path, help="JSON merged into provenance.training")
    args = ap.parse_args()

    t0 = time.time()
    dm, bm = read_manifest(args.default), read_manifest(args.two_stage)
    # Everything read before anything is written.
    record = read_json(args.default / "train_record.json", "the training record")
    metrics = [read_json(p, "--metrics") for p in args.metrics]
    training = read_json(args.training, "--training") if args.training else None
    if dm["family"] != "tpavi" or dm["output"]["kind"] != "binary":
        raise SystemExit(f"{args.default / 'avseg.json'}: a binary tpavi package expected")
    if bm["family"] != "bavs":
        raise SystemExit(f"{args.two_stage / 'avseg.json'}: a bavs package expected")
    if dm["vision"] != bm["vision"]:
        raise SystemExit(f"{args.two_stage / 'avseg.json'}: vision pre-processing differs from {args.default}'s: the encoder cannot be shared")
    if "label_tree" not in bm:
        raise SystemExit(f"{args.two_stage / 'avseg.json'}: no label_tree")
    ts = bm["label_tree"]
    rule = ts.get("pixel_rule", {})
    if rule.get("kind") != "heard_mass":
        raise SystemExit(f"{args.two_stage / 'avseg.json'}: label_tree.pixel_rule {rule!r}; the veto writes the heard_mass rule")
    try:
        audio_labels = (args.two_stage / ts["audio_labels"]).read_text().split()
    except OSError as e:
        raise SystemExit(f"{args.two_stage / ts['audio_labels']}: cannot read the tagger's labels ({e.strerror or e})")
    visual = bm["output"]["labels"]
    tree = read_json(args.two_stage / ts["file"], "the label tree")
    support, thresholds = support_matrix(tree, audio_labels, visual)
    family = family_matrix(tree, audio_labels, visual, args.family_depth) if args.veto == "family" else None

    # Tagger on the default's embedding.
    enc = args.default / dm["graphs"]["audio_encoder"]["file"]
    def split(cache):
        x, labels, _ = read_cache(cache)
        y = targets(labels)
        return embeddings(enc, np.asarray(x).reshape(-1, 96, 64), args.threads), y
    x, y = split(args.cache)
    if y.shape[1] != len(audio_labels):
        raise SystemExit(f"{args.cache}: {y.shape[1]} sound labels with silence, the tagger has {len(audio_labels)}")
    w, bias, loss = fit_tagger(x, y, steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed)
    report = {"train_seconds": int(len(x)), "final_loss": round(loss, 4)}
    report["train_top1_single"], _ = top1_single(x, y, w, bias)
    xv, yv = split(args.val_cache)
    report["val_top1_single"], report["val_single_seconds"] = top1_single(xv, yv, w, bias)
    print("tagger:", report)

    seg = onnx.load(args.default / dm["graphs"]["segmenter"]["file"])
    bseg = onnx.load(args.two_stage / bm["graphs"]["segmenter"]["file"])
    model, counts = build(seg, bseg, w, bias, support, thresholds, rule.get("silent_ratio", 0.0), args.radius,
                          (dm["vision"]["height"], dm["vision"]["width"]), args.veto, family)
    print("merge:", counts)
    checked = check(model, args.default, dm, args.two_stage, bm, w, bias, support, thresholds, rule.get("silent_ratio", 0.0),
                    args.radius, args.veto, family, args.val_cache, args.check_clips)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = json.loads(json.dumps(dm))
    data = model.SerializeToString()
    (args.out / meta["graphs"]["segmenter"]["file"]).write_bytes(data)
    record_file(meta["graphs"]["segmenter"], data)
    shutil.copyfile(enc, args.out / meta["graphs"]["audio_encoder"]["file"])
    judge = ("a linear tagger on this model's audio embedding, the AVS-Reg label tree and a semantic head (the "
             "two-stage package's, on the same frozen encoder)")
    meta["description"] = dm["description"].rstrip(".") + ". With a sound-source veto in the segmenter graph: " + {
        "kept": f"a mask pixel survives only near a pixel that {judge} keep.",
        "silent": f"a mask pixel is dropped when {judge} see a silent object within {args.radius} pixels and keep nothing there.",
        "family": (f"a mask pixel is dropped when {judge} see, within {args.radius} pixels, a silent object of a heard "
                   "sound's family and keep nothing there."),
    }[args.veto]
    prov = meta["provenance"]
    prov["created_by"] = prov["created_by"] + " + tools/train_default/veto.py"
    prov["source"] = (prov["source"] + f"; a sound-source veto (tools/train_default/veto.py --veto {args.veto}) with the "
                      f"semantic head of {args.two_stage.name} (tools/train_default/semantic.py, frozen-encoder features of "
                      "the same training data) and a linear tagger fitted on this model's audio embedding")
    if metrics:
        prov["metrics"] = {}
        for m in metrics:
            prov["metrics"].update(m)
    if training:
        prov.setdefault("training", {}).update(training)
    new_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer) - sum(int(np.prod(t.dims)) for t in seg.graph.initializer)
    prov["parameters"] = int(prov["parameters"]) + new_params
    (args.out / "avseg.json").write_text(dumps_manifest(meta))
    record["veto"] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "two_stage_segmenter_sha256": hashlib.sha256((args.two_stage / bm["graphs"]["segmenter"]["file"]).read_bytes()).hexdigest(),
        "default_segmenter_sha256": hashlib.sha256((args.default / dm["graphs"]["segmenter"]["file"]).read_bytes()).hexdigest(),
        "tagger": report, "merge": counts, "check": checked, "seconds": round(time.time() - t0, 1),
    }
    (args.out / "train_record.json").write_text(json.dumps(record, indent=1, default=str))
    print(f"wrote {args.out} ({len(data)} bytes segmenter, {new_params} new parameters) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
