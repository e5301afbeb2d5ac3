"""Minimal ONNX graph builder used by every exporter in this package.

Design constraints (see docs/spec/checkpoints.md §13 and docs/spec/runtime.md §2):
- opset 17 and only ops that tract 0.23 implements, so the Rust runtime can load
  the very files ONNX Runtime is checked against;
- every weight is a named initializer (the name records the checkpoint key it
  came from), so a reader of the graph can map it back to the state dict;
- construction is fully deterministic: the same calls in the same order give a
  byte-identical serialized model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# IR 8 is the IR that introduced nothing beyond opset 17 needs; older readers
# (tract, older ORT builds) accept it.
IR_VERSION = 8


def _elem_type(dtype) -> int:
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return TensorProto.FLOAT
    if dtype == np.int64:
        return TensorProto.INT64
    raise TypeError(f"unsupported initializer dtype {dtype}")


class GraphBuilder:
    def __init__(self, name: str):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._used: set[str] = set()
        self._shape_consts: dict[tuple, str] = {}

    # ---- naming -----------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A value name not used yet, derived from `base` (suffix only on clash)."""
        if base not in self._used:
            self._used.add(base)
            return base
        i = 1
        while f"{base}_{i}" in self._used:
            i += 1
        name = f"{base}_{i}"
        self._used.add(name)
        return name

    # ---- graph interface ----------------------------------------------------
    def input(self, name: str, shape, dtype=np.float32) -> str:
        self._used.add(name)
        self.inputs.append(helper.make_tensor_value_info(name, _elem_type(dtype), list(shape)))
        return name

    def output(self, value: str, shape, dtype=np.float32) -> str:
        self.outputs.append(helper.make_tensor_value_info(value, _elem_type(dtype), list(shape)))
        return value

    def const(self, name: str, array) -> str:
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.fresh(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def int_const(self, values) -> str:
        """Shared int64 constants for shapes/axes: one initializer per distinct value."""
        key = tuple(int(v) for v in values)
        if key not in self._shape_consts:
            label = "_".join(str(v).replace("-", "m") for v in key) or "empty"
            self._shape_consts[key] = self.const(f"const.i64.{label}", np.array(key, dtype=np.int64))
        return self._shape_consts[key]

    def op(self, op_type: str, inputs, name: str, out: str | None = None, **attrs) -> str:
        out_name = out if out is not None else self.fresh(name)
        if out is not None:
            self._used.add(out)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out_name], name=out_name, **attrs))
        return out_name

    # ---- layers ---------------------------------------------------------------
    def conv(self, x, weight, bias, name, stride=1, pad=0, dilation=1, group=1, out=None) -> str:
        """`pad` is one int, or ONNX-order (top, left, bottom, right) for asymmetric padding."""
        kh, kw = weight.shape[2], weight.shape[3]
        pads = list(pad) if isinstance(pad, (tuple, list)) else [pad, pad, pad, pad]
        ins = [x, self.const(name + ".weight", weight)]
        if bias is not None:
            ins.append(self.const(name + ".bias", bias))
        return self.op(
            "Conv", ins, name, out=out,
            kernel_shape=[kh, kw], strides=[stride, stride], pads=pads,
            dilations=[dilation, dilation], group=group,
        )

    def relu6(self, x, name, out=None) -> str:
        """min(max(x, 0), 6) as Clip with constant bounds (opset 11+ takes them as inputs)."""
        key = ("clip6",)
        if key not in self._shape_consts:
            lo = self.const("const.f32.zero", np.array(0.0, dtype=np.float32))
            hi = self.const("const.f32.six", np.array(6.0, dtype=np.float32))
            self._shape_consts[key] = (lo, hi)
        lo, hi = self._shape_consts[key]
        return self.op("Clip", [x, lo, hi], name, out=out)

    def relu(self, x, name, out=None) -> str:
        return self.op("Relu", [x], name, out=out)

    def add(self, a, b, name, out=None) -> str:
        return self.op("Add", [a, b], name, out=out)

    def mul(self, a, b, name, out=None) -> str:
        return self.op("Mul", [a, b], name, out=out)

    def matmul(self, a, b, name, out=None) -> str:
        return self.op("MatMul", [a, b], name, out=out)

    def linear(self, x, weight, bias, name, out=None) -> str:
        """PyTorch Linear on a 2-D input: y = x W^T + b, as one Gemm."""
        ins = [x, self.const(name + ".weight", weight)]
        if bias is not None:
            ins.append(self.const(name + ".bias", bias))
        return self.op("Gemm", ins, name, out=out, transB=1)

    def maxpool(self, x, name, kernel, stride, pad=0, out=None) -> str:
        return self.op("MaxPool", [x], name, out=out, kernel_shape=[kernel, kernel],
                       strides=[stride, stride], pads=[pad, pad, pad, pad])

    def transpose(self, x, perm, name, out=None) -> str:
        return self.op("Transpose", [x], name, out=out, perm=list(perm))

    def reshape(self, x, shape, name, out=None) -> str:
        return self.op("Reshape", [x, self.int_const(shape)], name, out=out)

    def reduce_sum(self, x, axes, name, keepdims=0, out=None) -> str:
        return self.op("ReduceSum", [x, self.int_const(axes)], name, out=out, keepdims=keepdims)

    def layer_norm_last(self, x, weight, bias, name, eps=1e-5, out=None) -> str:
        return self.op("LayerNormalization",
                       [x, self.const(name + ".weight", weight), self.const(name + ".bias", bias)],
                       name, out=out, axis=-1, epsilon=float(eps))

    def upsample2x(self, x, name, align_corners: bool, out=None) -> str:
        """Bilinear x2 on NCHW, matching F.interpolate(scale_factor=2, mode='bilinear').

        align_corners=False in PyTorch is ONNX `half_pixel` (negative source
        coordinates clamp to the edge in both); align_corners=True maps i to
        i*(in-1)/(out-1), which ONNX calls `align_corners`.
        """
        key = ("scales", 1, 1, 2, 2)
        if key not in self._shape_consts:
            self._shape_consts[key] = self.const("const.f32.scales_1_1_2_2",
                                                 np.array([1, 1, 2, 2], dtype=np.float32))
        scales = self._shape_consts[key]
        return self.op(
            "Resize", [x, "", scales], name, out=out,
            mode="linear",
            coordinate_transformation_mode="align_corners" if align_corners else "half_pixel",
        )

    # ---- finish ---------------------------------------------------------------
    def build(self, doc: str = "", check: bool = True) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs,
                                  initializer=self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="avseg_export",
            producer_version="1",
            ir_version=IR_VERSION,
        )
        if doc:
            model.doc_string = doc
        if check:
            onnx.checker.check_model(model, full_check=True)
        return model

    def parameter_count(self) -> int:
        """Weight elements held in initializers (shape/scale constants excluded)."""
        return int(sum(int(np.prod(t.dims)) for t in self.initializers
                       if t.data_type == TensorProto.FLOAT and not t.name.startswith("const.")))
