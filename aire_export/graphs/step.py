"""The streaming graph ``model.step.onnx``: one time step with explicit state (DESIGN §4).

Inputs (all float32 but token ids):
    x            (batch, d_input) features, or int64 (batch,) token ids
    state_{i}    per layer i that has states, in its core layout's shape: dense (S5)
                 (batch, P_i, 2), SISO bank (S4D) (batch, H, N_i, 2); (re, im) on the last
                 axis, the layout of the model's ``StreamState.layers``
    pooled_sum   (batch, H) running sum of the top-layer features
    steps        (1,) steps taken so far
Outputs: ``y`` and ``state_{i}_out``, ``pooled_sum_out``, ``steps_out``, the same quantities
after the step, so that feeding the outputs back streams the sequence (``SSMNetwork.step``):

    x'_i = λ̄ ⊙ x_i + B̄ u;   y = s·Re(C̃ x'_i) + D ⊙ u          (per layer, its layout's step)
    pooled_sum' = pooled_sum + h;  steps' = steps + 1
    z = h (last pooling) or pooled_sum' / steps' (mean);  y = head(z)

Only for unidirectional models: a backward scan reads the future. λ̄ and the states stay
float32 at every precision.
"""

from __future__ import annotations

import numpy as np
import onnx

from aire_export import ir
from aire_export.errors import InputError
from aire_export.graphs import layers
from aire_export.graphs.builder import GraphBuilder
from aire_export.graphs.core import lowering_for
from aire_export.graphs.recurrence import RECURRENCE_DTYPE

F32 = RECURRENCE_DTYPE


def step_graph(net: ir.Network, compute: str, opset: int) -> onnx.ModelProto:
    if net.bidirectional:
        raise InputError(
            "no step graph for a bidirectional model: its backward scan reads the future; "
            "export without --step (the sequence graph covers it)"
        )
    g = GraphBuilder("aire_export_step", opset)
    H = net.d_model
    x = (
        g.input("x", "int64", ["batch"])
        if net.tokens
        else g.input("x", F32, ["batch", net.d_input])
    )
    specs = [
        [
            (f"state_{i}{suffix}", shape)
            for suffix, shape in lowering_for(block.core).states(block.core)
        ]
        for i, block in enumerate(net.blocks)
    ]
    states = [[g.input(name, F32, shape) for name, shape in layer] for layer in specs]
    pooled_sum = g.input("pooled_sum", F32, ["batch", H])
    steps = g.input("steps", F32, [1])
    with g.scope("encoder"):
        h = layers.encode(g, net, x, compute)
    new_states: list[list[str]] = []
    for i, block in enumerate(net.blocks):
        with g.scope(f"layers.{i}"):
            z = layers.norm(g, block.norm, h, compute) if block.prenorm else h
            with g.scope("ssm"):
                core = block.core
                y, new = lowering_for(core).step(g, core, z, states[i], compute)
                new_states.append(new)
            h = g.add(h, layers.activate(g, block.activation, y, compute))
            h = h if block.prenorm else layers.norm(g, block.norm, h, compute)
    with g.scope("head"):
        h32 = g.cast_if(h, compute, F32)
        new_sum = g.add(pooled_sum, h32)
        new_steps = g.add(steps, g.const(np.ones(1), F32, "one"))
        z = h32 if net.pooling == "last" else g.div(new_sum, new_steps)
        y = layers.head(g, net, z)
    g.output("y", y, F32, ["batch", net.d_output])
    for layer, new in zip(specs, new_states, strict=True):
        for (name, shape), value in zip(layer, new, strict=True):
            g.output(f"{name}_out", value, F32, shape)
    g.output("pooled_sum_out", new_sum, F32, ["batch", H])
    g.output("steps_out", new_steps, F32, [1])
    return g.model("aire-export", doc="step graph")
