"""The sequence-mode graph ``model.onnx``: the whole network over a (batch, length) input.

Inputs: ``x`` float32 (batch, length, d_input), or int64 (batch, length) token ids; with
``lengths_input``, ``lengths`` int64 (batch,) (valid steps per sequence, for masked pooling).
Output: ``y`` float32 (batch, d_output), log-probabilities when the model ends in log_softmax.
Batch and length are dynamic; each layer's lowering states the longest length it accepts.

Pooling (S5 `ClassificationModel`, S4D `S4Model`), on float32 features h (B, L, H):

    mean:              p = Σ_t h_t / L           (each as one MatMul over time)
    mean with lengths: p = Σ_t [t < len] h_t / len          (masked_meanpool)
    last:              p = h_{L−1};  with lengths: h_{len−1}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from aire_export.graphs import ir, layers
from aire_export.graphs.builder import INT64_MAX, GraphBuilder
from aire_export.graphs.core import LayerLowering, lower_core

F32 = "float32"


def lower_block(
    g: GraphBuilder, block: ir.ResidualBlock, h: str, lowering: LayerLowering, compute: str
) -> str:
    z = layers.norm(g, block.norm, h, compute) if block.prenorm else h
    with g.scope("ssm"):
        y = lower_core(g, block.core, z, lowering, compute)
    out = g.add(h, layers.activate(g, block.activation, y, compute))
    return out if block.prenorm else layers.norm(g, block.norm, out, compute)


def pool(g: GraphBuilder, kind: str, h: str, lengths: str | None) -> str:
    """(B, L, H) float32 → (B, H) float32, as one batched MatMul w (B, 1, L) @ h (B, L, H)
    with weights w_t = 1 (mean; then ÷ L or ÷ len), [t < len] (masked mean) or [t = len − 1]
    (last). onnxruntime's ReduceMean over the time axis is ~15× slower at batch 1 (measured)."""
    if kind == "last" and lengths is None:
        return g.squeeze(g.slice(h, [-1], [INT64_MAX], [1]), [1])
    length = g.shape(h, 1, 2)  # (1,)
    if lengths is None:  # plain mean
        ones = g.op("Expand", g.const(np.ones((1, 1, 1)), F32, "one"), _weights_shape(g, h))
        total = g.squeeze(g.matmul(ones, h), [1])
        return g.div(total, g.cast(length, F32))
    steps = g.op("Range", g.ints(0), g.squeeze(length, [0]), g.ints(1))  # (L,)
    valid = g.unsqueeze(lengths, [1])  # (B, 1)
    if kind == "mean":
        mask = g.op("Less", g.unsqueeze(steps, [0]), valid)  # (B, L): t < len
    else:
        mask = g.op("Equal", g.unsqueeze(steps, [0]), g.sub(valid, g.ints(1)))  # t = len − 1
    weights = g.unsqueeze(g.cast(mask, F32), [1])  # (B, 1, L)
    total = g.squeeze(g.matmul(weights, h), [1])
    return g.div(total, g.cast(valid, F32)) if kind == "mean" else total


def _weights_shape(g: GraphBuilder, h: str) -> str:
    """(3,) int64 [B, 1, L] for h (B, L, H)."""
    return g.concat([g.shape(h, 0, 1), g.ints([1]), g.shape(h, 1, 2)], axis=0)


def sequence_graph(
    net: ir.Network,
    lowerings: Sequence[LayerLowering],
    compute: str,
    opset: int,
    lengths_input: bool,
) -> onnx.ModelProto:
    g = GraphBuilder("aire_export_sequence", opset)
    if net.tokens:
        x = g.input("x", "int64", ["batch", "length"])
    else:
        x = g.input("x", F32, ["batch", "length", net.d_input])
    lengths = g.input("lengths", "int64", ["batch"]) if lengths_input else None
    with g.scope("encoder"):
        h = layers.encode(g, net, x, compute)
    for i, (block, lowering) in enumerate(zip(net.blocks, lowerings, strict=True)):
        with g.scope(f"layers.{i}"):
            h = lower_block(g, block, h, lowering, compute)
    with g.scope("head"):
        pooled = pool(g, net.pooling, g.cast_if(h, compute, F32), lengths)
        y = layers.head(g, net, pooled)
    g.output("y", y, F32, ["batch", net.d_output])
    return g.model("aire-export", doc="sequence graph")
