"""The non-recurrent parts of a network as ONNX nodes: encoder, norms, GELU, gates, head.

They act on the last (feature) axis, so the sequence graph ((B, L, H) tensors) and the step
graph ((B, H) tensors) share them. Everything here runs in the compute dtype except the head
(pooling result, decoder and log_softmax), which runs in float32.

GELU forms (the models' own, DESIGN: S5 uses the tanh approximation, S4D the exact erf):

    tanh:  gelu(x) = 0.5·x·(1 + tanh(√(2/π)(x + 0.044715 x³))) = x·σ(x·(a + b x²)),
           a = 2√(2/π), b = 0.044715·a
    erf:   gelu(x) = x·(erf(x/√2) + 1)·0.5        (onnxruntime fuses this form into one kernel)

Only Mul/Add/Sigmoid/Erf/MatMul/LayerNormalization/Gather/LogSoftmax: every TensorRT ≥ 8.6
parses them (LayerNormalization needs opset ≥ 17).
"""

from __future__ import annotations

import numpy as np

from aire_export import ir
from aire_export.graphs.builder import GraphBuilder

F32 = "float32"
GELU_A = 2 * np.sqrt(2 / np.pi)
GELU_B = 0.044715 * GELU_A


def encode(g: GraphBuilder, net: ir.Network, x: str, compute: str) -> str:
    """x (…, d_input) float32 features, or (…) int64 token ids → (…, H) in ``compute``."""
    if net.tokens:  # one-hot @ W + b is the row lookup of (W + b)
        table = net.encoder.weight + net.encoder.bias
        return g.op("Gather", g.const(table, compute, "embedding"), x, axis=0)
    return dense(g, net.encoder, g.cast_if(x, F32, compute), compute)


def dense(g: GraphBuilder, layer: ir.Dense, x: str, dtype: str) -> str:
    y = g.matmul(x, g.const(layer.weight, dtype, "W"))
    return g.add(y, g.const(layer.bias, dtype, "b")) if np.any(layer.bias) else y


def silu(g: GraphBuilder, x: str) -> str:
    """x ⊙ σ(x)."""
    return g.mul(x, g.op("Sigmoid", x))


def softplus(g: GraphBuilder, x: str) -> str:
    """log(1 + eˣ) = relu(x) + log(1 + e^−|x|): never exp of a large positive number."""
    tail = g.op("Log", g.add(g.op("Exp", g.op("Neg", g.op("Abs", x))), g.const(1.0, F32, "one")))
    return g.add(g.op("Relu", x), tail)


def norm(g: GraphBuilder, layer: ir.Norm, x: str, dtype: str) -> str:
    if isinstance(layer, ir.Affine):  # BatchNorm at inference: one Mul, one Add
        return g.add(g.mul(x, g.const(layer.scale, dtype, "scale")), g.const(layer.shift, dtype))
    if isinstance(layer, ir.RMSNorm):  # x / √(mean(x²) + eps) ⊙ w, the statistic in float32
        x32 = g.cast_if(x, dtype, F32)
        mean = g.reduce("ReduceMean", g.mul(x32, x32), [-1], keepdims=True)
        scale = g.op("Reciprocal", g.op("Sqrt", g.add(mean, g.const(layer.eps, F32, "eps"))))
        normed = g.cast_if(g.mul(x32, scale), F32, dtype)
        return g.mul(normed, g.const(layer.weight, dtype, "rms_weight"))
    return g.op(
        "LayerNormalization",
        x,
        g.const(layer.weight, dtype, "ln_weight"),
        g.const(layer.bias, dtype, "ln_bias"),
        axis=-1,
        epsilon=float(layer.eps),
    )


def gelu(g: GraphBuilder, kind: str, x: str, dtype: str) -> str:
    if kind == "tanh":
        inner = g.mul(x, g.add(g.mul(g.mul(x, x), g.const(GELU_B, dtype)), g.const(GELU_A, dtype)))
        return g.mul(x, g.op("Sigmoid", inner))
    # the form onnxruntime fuses into one Gelu kernel: x · (erf(x / √2) + 1) · 0.5
    erf = g.op("Erf", g.div(x, g.const(np.sqrt(2), dtype)))
    return g.mul(g.mul(x, g.add(erf, g.const(1.0, dtype))), g.const(0.5, dtype))


def activate(g: GraphBuilder, act: ir.GatedActivation | None, y: str, dtype: str) -> str:
    """The gated activation on the SSM output y (pointwise in time); None: y as it is."""
    if act is None:
        return y
    z = gelu(g, act.gelu, y, dtype)
    if act.gate == "none":
        return z
    gate = g.op("Sigmoid", dense(g, act.out2, z, dtype))
    if act.gate == "full_glu":
        return g.mul(dense(g, act.out1, z, dtype), gate)
    return g.mul(z if act.gate == "half_glu1" else y, gate)


def head(g: GraphBuilder, net: ir.Network, pooled: str) -> str:
    """Decoder and log_softmax, in float32, on pooled features (B, H) float32."""
    logits = dense(g, net.decoder, pooled, F32)
    return g.op("LogSoftmax", logits, axis=-1) if net.log_softmax else logits
