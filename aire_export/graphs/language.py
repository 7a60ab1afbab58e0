"""The graphs of a causal language model, :class:`ir.TokenLM` (Mamba): sequence and decode.

Sequence graph ``model.onnx``:
    x  int64 (batch, length) token ids  →  y  float32 (batch, length, vocab) next-token logits
Decode graph ``model.step.onnx`` (one token with explicit state, fed back by the caller):
    x  int64 (batch,), state_{i}_conv (batch, E, K−1), state_{i}_ssm (batch, E, N)
    →  y  float32 (batch, vocab), state_{i}_conv_out, state_{i}_ssm_out

    h = embedding[x];  per block: h = h + core(rmsnorm(h));  logits = rmsnorm_f(h) @ lm_head

The residual stream h stays float32 when the model says ``residual_in_fp32`` (mamba_ssm's
default) at every precision; the norms compute their statistic in float32. The model is
causal, so the sequence graph pads its input once at the end to the layers' common chunk
multiple (padding never reaches an earlier position) and slices the logits back. No
``lengths`` input: a shorter sequence's logits are the first ones of the padded one.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from aire_export import ir
from aire_export.graphs import layers
from aire_export.graphs.builder import GraphBuilder
from aire_export.graphs.core import lowering_for
from aire_export.graphs.lowering import LayerLowering
from aire_export.graphs.recurrence import RECURRENCE_DTYPE, pad_time
from aire_export.graphs.sequence import time_multiple

F32 = RECURRENCE_DTYPE


def _residual_dtype(net: ir.TokenLM, compute: str) -> str:
    return F32 if net.residual_in_fp32 else compute


def _block(g: GraphBuilder, block: ir.ResidualBlock, h: str, residual: str, compute: str, core):
    """h + core(rmsnorm(h)) with h in the ``residual`` dtype; ``core(z)`` lowers the mixer."""
    z = g.cast_if(layers.norm(g, block.norm, h, residual), residual, compute)
    with g.scope("mixer"):
        out = core(z)
    return g.add(h, g.cast_if(out, compute, residual))


def _logits(
    g: GraphBuilder, net: ir.TokenLM, h: str, residual: str, compute: str, table: str
) -> str:
    """rmsnorm_f(h) @ lm_head in ``compute``, logits float32. A head tied to the embedding
    reuses its initializer ``table`` (V, H) through Gemm(transB): the file holds it once."""
    z = g.cast_if(layers.norm(g, net.norm_f, h, residual), residual, compute)
    if not (net.tied and residual == compute):
        return g.cast_if(g.matmul(z, g.const(net.lm_head, compute, "lm_head")), compute, F32)
    rows = g.reshape(z, [-1, net.d_model])  # Gemm takes 2-D operands
    logits = g.op("Gemm", rows, table, transB=1)
    shape = g.concat([g.shape(z, 0, -1), g.ints([net.d_output])], axis=0)
    return g.cast_if(g.reshape(logits, shape), compute, F32)


def sequence_graph(
    net: ir.TokenLM, lowerings: Sequence[LayerLowering], compute: str, opset: int
) -> onnx.ModelProto:
    g = GraphBuilder("aire_export_sequence", opset)
    x = g.input("x", "int64", ["batch", "length"])
    residual = _residual_dtype(net, compute)
    multiple = time_multiple(net, lowerings)
    with g.scope("embedding"):
        if multiple > 1:
            x, length = pad_time(g, x, 2, 1, multiple)
        table = g.const(net.embedding, residual, "embedding")
        h = g.op("Gather", table, x, axis=0)
    for i, (block, lowering) in enumerate(zip(net.blocks, lowerings, strict=True)):
        layout = lowering_for(block.core)
        with g.scope(f"layers.{i}"):
            h = _block(
                g,
                block,
                h,
                residual,
                compute,
                lambda z, block=block, lowering=lowering, layout=layout: layout.sequence(
                    g, block.core, z, lowering, compute, multiple > 1
                ),
            )
    with g.scope("head"):
        y = _logits(g, net, h, residual, compute, table)
        if multiple > 1:
            y = g.slice(y, [0], length, [1])
    g.output("y", y, F32, ["batch", "length", net.d_output])
    return g.model("aire-export", doc="sequence graph")


def step_graph(net: ir.TokenLM, compute: str, opset: int) -> onnx.ModelProto:
    g = GraphBuilder("aire_export_step", opset)
    x = g.input("x", "int64", ["batch"])
    residual = _residual_dtype(net, compute)
    specs = [
        [(f"state_{i}{suffix}", shape) for suffix, shape in lowering_for(b.core).states(b.core)]
        for i, b in enumerate(net.blocks)
    ]
    states = [[g.input(name, F32, shape) for name, shape in layer] for layer in specs]
    new_states: list[list[str]] = []
    with g.scope("embedding"):
        table = g.const(net.embedding, residual, "embedding")
        h = g.op("Gather", table, x, axis=0)
    for i, block in enumerate(net.blocks):
        layout = lowering_for(block.core)

        def core(z, block=block, layout=layout, i=i):
            out, new = layout.step(g, block.core, z, states[i], compute)
            new_states.append(new)
            return out

        with g.scope(f"layers.{i}"):
            h = _block(g, block, h, residual, compute, core)
    with g.scope("head"):
        y = _logits(g, net, h, residual, compute, table)
    g.output("y", y, F32, ["batch", net.d_output])
    for layer, new in zip(specs, new_states, strict=True):
        for (name, shape), value in zip(layer, new, strict=True):
            g.output(f"{name}_out", value, F32, shape)
    return g.model("aire-export", doc="step graph")
