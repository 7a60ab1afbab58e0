"""The streaming graph ``model.step.onnx``: one time step with explicit state (DESIGN §4).

Inputs (all float32 but token ids):
    x            (batch, d_input) features, or int64 (batch,) token ids
    state_{i}    per layer i that has states: S5 (batch, P_i, 2), S4D (batch, H, N_i, 2)
                 (re, im on the last axis; the layout of ``StreamState.layers``)
    pooled_sum   (batch, H) running sum of the top-layer features
    steps        (1,) steps taken so far
Outputs: ``y`` and ``state_{i}_out``, ``pooled_sum_out``, ``steps_out``, the same quantities
after the step, so that feeding the outputs back streams the sequence (``SSMNetwork.step``):

    x'_i = λ̄ ⊙ x_i + B̄ u;   y = s·Re(C̃ x'_i) + D ⊙ u                      (per layer)
    pooled_sum' = pooled_sum + h;  steps' = steps + 1
    z = h (last pooling) or pooled_sum' / steps' (mean);  y = head(z)

Only for unidirectional models: a backward scan reads the future. λ̄ and the states stay
float32 at every precision.
"""

from __future__ import annotations

import numpy as np
import onnx

from aire_export.errors import InputError
from aire_export.graphs import ir, layers
from aire_export.graphs.builder import GraphBuilder
from aire_export.graphs.forms import input_matrix, output_matrix, siso_bank
from aire_export.graphs.recurrence import RECURRENCE_DTYPE, join_pair, scaled_pair, split_pair

F32 = RECURRENCE_DTYPE


def state_shape(system) -> list[int | str] | None:
    """The step graph's state layout of one layer, or None for a layer without states."""
    if system.P == 0:
        return None
    bank = siso_bank(system)
    if bank is not None:
        return ["batch", bank.H, bank.N, 2]
    return ["batch", system.P, 2]


def _decay(g: GraphBuilder, state: str, lam: np.ndarray, v: str, rank: int) -> str:
    """λ x + v for states (…, 2), elementwise, λ split hi + lo in float32 (as the Scan
    lowering does, so long streams do not drift with λ's rounding)."""
    re, im = scaled_pair(g, *split_pair(g, state, rank), lam)
    v_re, v_im = split_pair(g, v, rank)
    return join_pair(g, g.add(re, v_re), g.add(im, v_im), rank)


def _core_step(g: GraphBuilder, system, u: str, state: str, compute: str) -> tuple[str, str]:
    """(y (B, H) in compute, new state) for input u (B, H) and state (B, …, 2) float32."""
    feedthrough = g.mul(u, g.const(system.D, compute, "D"))
    bank = siso_bank(system)
    if bank is not None:
        # x' = x @ R(λ) + b u:  (B, H, N, 1, 2) @ (H, N, 2, 2), then y = Σ_n Re(c x')
        u32 = g.unsqueeze(g.cast_if(u, compute, F32), [2, 3])  # (B, H, 1, 1)
        b = np.stack([bank.b.real, bank.b.imag], -1)  # (H, N, 2)
        with g.scope("scan"):
            new = _decay(g, state, bank.lam, g.mul(u32, g.const(b, F32, "b")), 4)
        c = np.stack([bank.c[0].real, -bank.c[0].imag], -1)  # Re(c x) = c_re x_re − c_im x_im
        y = g.reduce("ReduceSum", g.mul(new, g.const(c, F32, "c")), [2, 3])
        return g.add(g.cast_if(y, F32, compute), feedthrough), new
    P = system.P
    v = g.matmul(u, g.const(input_matrix(system.dense_B()), compute, "B"))  # (B, 2P)
    v = g.reshape(g.cast_if(v, compute, F32), [0, P, 2])
    with g.scope("scan"):
        new = _decay(g, state, system.lam, v, 3)  # (B, P, 2)
    flat = g.cast_if(g.reshape(new, [0, 2 * P]), F32, compute)
    W_out = output_matrix(system.dense_C(0), system.output_scale)
    y = g.matmul(flat, g.const(W_out, compute, "C"))
    return g.add(y, feedthrough), new


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
    shapes = [state_shape(block.core) for block in net.blocks]
    states = {
        i: g.input(f"state_{i}", F32, shape) for i, shape in enumerate(shapes) if shape is not None
    }
    pooled_sum = g.input("pooled_sum", F32, ["batch", H])
    steps = g.input("steps", F32, [1])
    with g.scope("encoder"):
        h = layers.encode(g, net, x, compute)
    new_states: dict[int, str] = {}
    for i, block in enumerate(net.blocks):
        with g.scope(f"layers.{i}"):
            z = layers.norm(g, block.norm, h, compute) if block.prenorm else h
            with g.scope("ssm"):
                if i in states:
                    y, new_states[i] = _core_step(g, block.core, z, states[i], compute)
                else:  # dropped layer: the feedthrough only
                    y = g.mul(z, g.const(block.core.D, compute, "D"))
            h = g.add(h, layers.activate(g, block.activation, y, compute))
            h = h if block.prenorm else layers.norm(g, block.norm, h, compute)
    with g.scope("head"):
        h32 = g.cast_if(h, compute, F32)
        new_sum = g.add(pooled_sum, h32)
        new_steps = g.add(steps, g.const(np.ones(1), F32, "one"))
        z = h32 if net.pooling == "last" else g.div(new_sum, new_steps)
        y = layers.head(g, net, z)
    g.output("y", y, F32, ["batch", net.d_output])
    for i, name in new_states.items():
        g.output(f"state_{i}_out", name, F32, shapes[i])
    g.output("pooled_sum_out", new_sum, F32, ["batch", H])
    g.output("steps_out", new_steps, F32, [1])
    return g.model("aire-export", doc="step graph")
