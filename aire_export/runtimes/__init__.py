"""Runtimes (DESIGN §2 step 7): runners behind one small interface (base.py) for onnxruntime,
TensorRT and PyTorch, the runtime registry (registry.py), shape ranges, the edge bundle."""
