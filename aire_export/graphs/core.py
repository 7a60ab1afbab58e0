"""One SSM core in a graph: dispatch on the core's IR type to its layout's lowering.

    DenseLTI     graphs/lti_dense.py     MIMO diagonal system (S5)
    SisoBankLTI  graphs/lti_bank.py      H SISO systems of N modes (S4D)
    Feedthrough  (here)                  y = D ⊙ u: a layer pruned to nothing emits no recurrence
    SelectiveCore graphs/selective.py    Mamba-1 mixer: input-dependent scan, conv, projections
    Bypassed     graphs/bypass.py        a SISO bank on some channels, the others pass through

A new core type (a selective scan) brings its own module with a :class:`CoreLowering` and
one entry in :data:`CORE_LOWERINGS`; nothing else in graphs/ changes.
"""

from __future__ import annotations

from aire_export import ir
from aire_export.graphs import bypass, lti_bank, lti_dense, selective
from aire_export.graphs.builder import GraphBuilder
from aire_export.graphs.lowering import CoreLowering, LayerLowering


def _feedthrough_sequence(g, core: ir.Feedthrough, u, lowering, compute, padded=False) -> str:
    return g.mul(u, g.const(core.D, compute, "D"))


def _feedthrough_step(g, core: ir.Feedthrough, u, states, compute) -> tuple[str, list[str]]:
    return g.mul(u, g.const(core.D, compute, "D")), []


def _feedthrough_frame(g, core: ir.Feedthrough, u, states, compute, steps) -> tuple[str, list[str]]:
    return _feedthrough_step(g, core, u, states, compute)


FEEDTHROUGH = CoreLowering(
    sequence=_feedthrough_sequence,
    step=_feedthrough_step,
    states=lambda core: [],
    time_multiple=lambda core, lowering: 1,
    recurrent=False,
    frame=_feedthrough_frame,
)

CORE_LOWERINGS: dict[type, CoreLowering] = {
    ir.DenseLTI: lti_dense.LOWERING,
    ir.SisoBankLTI: lti_bank.LOWERING,
    ir.Feedthrough: FEEDTHROUGH,
    ir.SelectiveCore: selective.LOWERING,
}


def lowering_for(core: ir.Core) -> CoreLowering:
    """The lowering module of ``core``'s type (a Bypassed core's wraps its inner core's)."""
    if isinstance(core, ir.Bypassed):
        return bypass.bypassing(lowering_for(core.core))
    try:
        return CORE_LOWERINGS[type(core)]
    except KeyError:
        raise TypeError(
            f"no lowering for core type {type(core).__name__}; known: "
            + ", ".join(t.__name__ for t in CORE_LOWERINGS)
        ) from None


def lower_core(
    g: GraphBuilder,
    core: ir.Core,
    u: str,
    lowering: LayerLowering,
    compute: str,
    padded: bool = False,
) -> str:
    """y (B, L, H) in ``compute`` dtype for u (B, L, H) in ``compute`` dtype.

    ``padded``: L is a multiple of the layout's ``time_multiple`` already (a causal network
    pads its input once and slices once instead of in every layer).
    """
    return lowering_for(core).sequence(g, core, u, lowering, compute, padded)
