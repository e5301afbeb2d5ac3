"""Export tooling for avseg model packages (numpy + onnx, no torch)."""

from .graph import GraphBuilder, OPSET  # noqa: F401
from .weights import StateDict, read_safetensors, write_safetensors  # noqa: F401
