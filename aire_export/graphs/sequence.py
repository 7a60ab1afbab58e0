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

import math
from collections.abc import Sequence

import onnx

from aire_export import ir
from aire_export.graphs import layers
from aire_export.graphs.builder import GraphBuilder
from aire_export.graphs.core import lower_core, lowering_for
from aire_export.graphs.lowering import LayerLowering
from aire_export.graphs.recurrence import pad_time

F32 = "float32"


def lower_block(
    g: GraphBuilder,
    block: ir.ResidualBlock,
    h: str,
    lowering: LayerLowering,
    compute: str,
    padded: bool,
) -> str:
    z = layers.norm(g, block.norm, h, compute) if block.prenorm else h
    with g.scope("ssm"):
        y = lower_core(g, block.core, z, lowering, compute, padded)
    out = g.add(h, layers.activate(g, block.activation, y, compute))
    return out if block.prenorm else layers.norm(g, block.norm, out, compute)


def pool(g: GraphBuilder, kind: str, h: str, length: str, lengths: str | None) -> str:
    """(B, L', H) float32 → (B, H) float32 over the first ``length`` (1,) steps (L' ≥ length
    when the network was padded), as one batched MatMul w @ h with weights w_t = [t < L]
    (mean; then ÷ L), [t < len] (masked mean; ÷ len) or [t = len − 1] (last).
    onnxruntime's ReduceMean over the time axis is ~15× slower at batch 1 (measured)."""
    if kind == "last" and lengths is None:
        last = g.slice(h, g.sub(length, g.ints([1])), length, [1])
        return g.squeeze(last, [1])
    steps = g.op("Range", g.ints(0), g.squeeze(g.shape(h, 1, 2), [0]), g.ints(1))  # (L',)
    if lengths is None:  # plain mean over the valid steps
        mask = g.unsqueeze(g.op("Less", steps, length), [0, 1])  # (1, 1, L')
        total = g.squeeze(g.matmul(g.cast(mask, F32), h), [1])
        return g.div(total, g.cast(length, F32))
    valid = g.unsqueeze(lengths, [1])  # (B, 1)
    if kind == "mean":
        mask = g.op("Less", g.unsqueeze(steps, [0]), valid)  # (B, L'): t < len
    else:
        mask = g.op("Equal", g.unsqueeze(steps, [0]), g.sub(valid, g.ints(1)))  # t = len − 1
    weights = g.unsqueeze(g.cast(mask, F32), [1])  # (B, 1, L')
    total = g.squeeze(g.matmul(weights, h), [1])
    return g.div(total, g.cast(valid, F32)) if kind == "mean" else total


def time_multiple(net: ir.Graphable, lowerings: Sequence[LayerLowering]) -> int:
    """The length multiple a unidirectional network pads its input to once, so that no layer
    pads or slices (1: none). Zero steps appended at the end change no earlier output of a
    causal layer; a backward scan would read them, so bidirectional networks pad per layer."""
    if net.bidirectional:
        return 1
    multiples = [
        lowering_for(b.core).time_multiple(b.core, lw)
        for b, lw in zip(net.blocks, lowerings, strict=True)
    ]
    return math.lcm(*multiples) if multiples else 1


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
    multiple = time_multiple(net, lowerings)
    with g.scope("encoder"):
        if multiple > 1:  # a causal network pads once: later steps never reach earlier ones
            x, length = pad_time(g, x, 2 if net.tokens else 3, 1, multiple)
        else:
            length = g.shape(x, 1, 2)
        h = layers.encode(g, net, x, compute)
    for i, (block, lowering) in enumerate(zip(net.blocks, lowerings, strict=True)):
        with g.scope(f"layers.{i}"):
            h = lower_block(g, block, h, lowering, compute, padded=multiple > 1)
    with g.scope("head"):
        pooled = pool(g, net.pooling, g.cast_if(h, compute, F32), length, lengths)
        y = layers.head(g, net, pooled)
    g.output("y", y, F32, ["batch", net.d_output])
    return g.model("aire-export", doc="sequence graph")
