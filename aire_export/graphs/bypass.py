"""Lowering of :class:`ir.Bypassed`: an LTI core on its active channels, every other channel
passing its input through (S4oP's pruned operators, DESIGN §3.6).

    u_a = Gather(u, active, axis = −1)                     (…, |active|)
    y_a = core(u_a)                                        the inner core's own lowering
    y   = Gather(Concat([y_a, Gather(u, bypassed)], −1), order, axis = −1)

with order[h] the position of channel h in [active…, bypassed…], so y_h = u_h on a bypassed
channel and the scan, its states and its constants hold the active channels only. The same
three nodes wrap the step graph's update (one step or a frame); the step state is the inner
core's.

A dense core (S5) keeps every state whatever its channels, so the Gathers save no scan work:
it is lowered widened instead, B̄ with zero columns and C̃ with zero rows on the bypassed
channels and D_h = 1 there, which gives the same y_h = u_h with the unpruned graph's nodes
(measured on the digits model at half its channels, onnxruntime CPU, 1 thread, 1024 steps:
the gathered graph 1.56× slower than the unpruned one, the widened graph 1.00×).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aire_export import ir
from aire_export.graphs.builder import GraphBuilder
from aire_export.graphs.lowering import CoreLowering, LayerLowering


def _gather(g: GraphBuilder, u: str, channels: np.ndarray) -> str:
    return g.op("Gather", u, g.ints([int(h) for h in channels]), axis=-1)


def _place(g: GraphBuilder, core: ir.Bypassed, u: str, y_active: str) -> str:
    """y (…, H): the active channels from ``y_active``, the bypassed ones from ``u``."""
    order = np.argsort(np.concatenate([core.active, core.bypassed]), kind="stable")
    joined = g.concat([y_active, _gather(g, u, core.bypassed)], axis=-1)
    return _gather(g, joined, order)


def widened(core: ir.Bypassed) -> ir.DenseLTI:
    """A dense core over all channels that passes the bypassed ones through: B̄ (P, H) with
    zero columns and each C̃ (H, P) with zero rows there, D_h = 1 (see the module docstring)."""
    dense, active = core.core, np.asarray(core.active)
    B = np.zeros((dense.B.shape[0], core.width), dtype=dense.B.dtype)
    B[:, active] = dense.B
    C = []
    for c in dense.C:
        full = np.zeros((core.width, c.shape[1]), dtype=c.dtype)
        full[active] = c
        C.append(full)
    D = np.ones(core.width)
    D[active] = dense.D
    return dataclasses.replace(dense, B=B, C=tuple(C), D=D)


def bypassing(inner: CoreLowering) -> CoreLowering:
    """The CoreLowering of a Bypassed core whose inner core lowers by ``inner``."""

    def sequence(g, core: ir.Bypassed, u, lowering: LayerLowering, compute, padded=False):
        if isinstance(core.core, ir.DenseLTI):
            return inner.sequence(g, widened(core), u, lowering, compute, padded)
        y = inner.sequence(g, core.core, _gather(g, u, core.active), lowering, compute, padded)
        return _place(g, core, u, y)

    def step(g, core: ir.Bypassed, u, states, compute):
        if isinstance(core.core, ir.DenseLTI):
            return inner.step(g, widened(core), u, states, compute)
        y, new = inner.step(g, core.core, _gather(g, u, core.active), states, compute)
        return _place(g, core, u, y), new

    def frame(g, core: ir.Bypassed, u, states, compute, steps):
        if isinstance(core.core, ir.DenseLTI):
            return inner.frame(g, widened(core), u, states, compute, steps)
        y, new = inner.frame(g, core.core, _gather(g, u, core.active), states, compute, steps)
        return _place(g, core, u, y), new

    return CoreLowering(
        sequence=sequence,
        step=step,
        states=lambda core: inner.states(core.core),
        time_multiple=lambda core, lowering: inner.time_multiple(core.core, lowering),
        modes=lambda core: inner.modes(core.core),
        recurrent=inner.recurrent,
        per_state_constants=inner.per_state_constants,
        frame=None if inner.frame is None else frame,
    )
