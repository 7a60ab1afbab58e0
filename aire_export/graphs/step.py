"""The streaming graph ``model.step.onnx``: one time step, or a frame of K steps, with explicit
state (DESIGN §4).

Inputs (all float32 but token ids), for a frame of K = 1 (``--frame 1``, the default):
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

A frame of K > 1 steps per call (``--frame K``) pays the per-call and per-node overhead once
per K steps: x is (batch, K, d_input) (tokens (batch, K)), y (batch, K, d_output) holds the
output after every step of the frame, and the states, pooled_sum and steps are those after
the K steps; the same inputs as K single steps give the same outputs. Inside the frame each
layer runs its layout's ``frame`` form from the entering state (a small sequence computation
with constants of the powers of λ̄; no per-step nodes, no Loop), and

    sums_k = pooled_sum + Σ_{j ≤ k} h_j   (one MatMul by a K×K lower-triangular ones matrix)
    z_k = h_k (last) or sums_k / (steps + k + 1) (mean);  y_k = head(z_k)

K is at most MAX_FRAME = 128: an S5 frame holds 8K + 8 floats per state and one shared
K × (K + 2) matrix (its factored form), but the forms that take any λ̄ grow like K² per state
or channel (S5's chunked frame: its (2K + 4) × 2⌈K/8⌉ boundary map per state; S4D: a K × K
Toeplitz matrix per channel).

A frame graph takes whole frames only: a stream whose length is not a multiple of K leaves a
partial frame for the caller to hold until it fills (or to finish with a ``--frame 1`` graph);
zero padding would move the states and the running mean, so the graph never pads.

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


def step_graph(net: ir.Network, compute: str, opset: int, frame: int = 1) -> onnx.ModelProto:
    """The step graph of ``net``: one step per call, or ``frame`` steps (see the module doc)."""
    if net.bidirectional:
        raise InputError(
            "no step graph for a bidirectional model: its backward scan reads the future; "
            "export without --step (the sequence graph covers it)"
        )
    g = GraphBuilder("aire_export_step", opset)
    H = net.d_model
    time = [] if frame == 1 else [frame]
    x = (
        g.input("x", "int64", ["batch", *time])
        if net.tokens
        else g.input("x", F32, ["batch", *time, net.d_input])
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
                core, layout = block.core, lowering_for(block.core)
                if frame == 1:
                    y, new = layout.step(g, core, z, states[i], compute)
                else:
                    y, new = layout.frame(g, core, z, states[i], compute, frame)
                new_states.append(new)
            h = g.add(h, layers.activate(g, block.activation, y, compute))
            h = h if block.prenorm else layers.norm(g, block.norm, h, compute)
    with g.scope("head"):
        h32 = g.cast_if(h, compute, F32)
        if frame == 1:
            new_sum = g.add(pooled_sum, h32)
            new_steps = g.add(steps, g.const(np.ones(1), F32, "one"))
            z = h32 if net.pooling == "last" else g.div(new_sum, new_steps)
        else:
            z, new_sum, new_steps = _frame_pooling(g, net, h32, pooled_sum, steps, frame)
        y = layers.head(g, net, z)
    g.output("y", y, F32, ["batch", *time, net.d_output])
    for layer, new in zip(specs, new_states, strict=True):
        for (name, shape), value in zip(layer, new, strict=True):
            g.output(f"{name}_out", value, F32, shape)
    g.output("pooled_sum_out", new_sum, F32, ["batch", H])
    g.output("steps_out", new_steps, F32, [1])
    return g.model("aire-export", doc="step graph" if frame == 1 else f"frame graph, {frame} steps")


def _frame_pooling(
    g: GraphBuilder, net: ir.Network, h: str, pooled_sum: str, steps: str, frame: int
) -> tuple[str, str, str]:
    """(z (B, K, H), pooled_sum', steps') after every step k of a frame of top features h
    (B, K, H): sums_k = pooled_sum + Σ_{j ≤ k} h_j, z_k = h_k (last) or sums_k / (steps + k + 1)."""
    running = np.tril(np.ones((frame, frame)))  # [k, j] = 1 for j ≤ k
    sums = g.add(g.unsqueeze(pooled_sum, [1]), g.matmul(g.const(running, F32, "running"), h))
    new_sum = g.squeeze(g.slice(sums, [frame - 1], [frame], [1]), [1])
    new_steps = g.add(steps, g.const(np.array([frame]), F32, "frame"))
    if net.pooling == "last":
        return h, new_sum, new_steps
    counts = g.add(steps, g.const(np.arange(1, frame + 1)[:, None], F32, "counts"))  # (K, 1)
    return g.div(sums, counts), new_sum, new_steps


MAX_FRAME = 128  # steps per call at most: the chunked frames' constants grow like K²


def frame_problem(net: ir.Graphable, frame: int) -> str | None:
    """Why ``net`` can have no step graph of ``frame`` steps per call (None: it can)."""
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 1:
        return f"--frame must be a whole number of steps ≥ 1, got {frame!r}"
    if frame == 1:
        return None
    if frame > MAX_FRAME:
        return (
            f"--frame {frame}: a frame graph can hold constants that grow like K² per state "
            f"(S5's chunked frame: the chunk-boundary map; S4D: a K × K Toeplitz matrix per "
            f"channel): use at most {MAX_FRAME} steps per call (model.onnx takes whole "
            "sequences)"
        )
    if net.bidirectional:
        return (
            f"no frame graph (--frame {frame}) for a bidirectional model: its backward scan "
            "reads the future; drop --frame (the sequence graph covers it)"
        )
    if isinstance(net, ir.TokenLM) or any(
        lowering_for(block.core).frame is None for block in net.blocks
    ):
        return (
            f"--frame {frame}: a selective (Mamba) model decodes one token per call; frame "
            "graphs are for LTI layers (S5, S4D): use --frame 1"
        )
    return None
