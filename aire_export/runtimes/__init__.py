"""Runtimes behind one Runner interface: onnxruntime (CPU, CUDA), PyTorch, TensorRT; the edge bundle."""
