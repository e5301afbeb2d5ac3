"""ONNX Runtime helpers shared by the scripts and tests."""

from __future__ import annotations

import onnxruntime as ort


def session(model_or_path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session pinned to `threads` threads, so results are repeatable: from a ModelProto, the
    bytes of an ONNX file, or its path."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if hasattr(model_or_path, "SerializeToString"):
        src = model_or_path.SerializeToString()
    elif isinstance(model_or_path, bytes):
        src = model_or_path
    else:
        src = str(model_or_path)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
