"""Lowering of :class:`ir.Bypassed`: a SISO bank on its active channels, every other channel
passing its input through (S4oP's pruned operators, DESIGN §3.6).

    u_a = Gather(u, active, axis = −1)                     (…, |active|)
    y_a = core(u_a)                                        the inner core's own lowering
    y   = Gather(Concat([y_a, Gather(u, bypassed)], −1), order, axis = −1)

with order[h] the position of channel h in [active…, bypassed…], so y_h = u_h on a bypassed
channel and the scan, its states and its constants hold the active channels only. The same
three nodes wrap the step graph's update (one step or a frame); the step state is the inner
core's.

A dense core (S5) never reaches here: ``ir.with_bypass`` widens it (zero B̄ columns and C̃
rows on the bypassed channels, D_h = 1), since gathering its channels saves no scan work.
"""

from __future__ import annotations

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


def bypassing(inner: CoreLowering) -> CoreLowering:
    """The CoreLowering of a Bypassed core whose inner core lowers by ``inner``."""

    def sequence(g, core: ir.Bypassed, u, lowering: LayerLowering, compute, padded=False):
        y = inner.sequence(g, core.core, _gather(g, u, core.active), lowering, compute, padded)
        return _place(g, core, u, y)

    def step(g, core: ir.Bypassed, u, states, compute):
        y, new = inner.step(g, core.core, _gather(g, u, core.active), states, compute)
        return _place(g, core, u, y), new

    def frame(g, core: ir.Bypassed, u, states, compute, steps):
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
