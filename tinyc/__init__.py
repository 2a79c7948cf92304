"""tinyc: compile ONNX neural networks into plain C for microcontrollers."""

__version__ = "0.1.0"
