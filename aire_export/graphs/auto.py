"""``scan="auto"``: which lowering each layer gets, per device, from measurements.

Every row names the benchmark it comes from. Rows are tried in order (a family's own rules
first, ``Family.lowering_rules``); the first whose device, core type and state bound match
wins. Only the CPU rows were measured in this repository; the GPU rows cite the lead's H100
prototype figures in DESIGN §4 (a single SSM core, onnxruntime CUDA) or are reasoned, as
labelled: re-run ``benchmarks/gpu_suite.py`` on the device and update them.
"""

from __future__ import annotations

from collections.abc import Sequence

from aire_export.ir import Core, DenseLTI, LoweringRule, SelectiveCore, SisoBankLTI

CPU_SOURCE = (
    "benchmarks/auto_choice.py --rounds 3, 2026-12-01, re-run on the time-last chunked graphs "
    "(benchmarks/RESULTS.md, 'CPU: is auto the fastest lowering', re-run): whole pathx, "
    "pathfinder and listops models, unpruned and at 30 %, batch 1 and the workload's batch, 1 "
    "and 2 threads: chunked within 1.00-1.04x of the fastest of chunked, scan and "
    "block-Toeplitz in 24 of 24 cells; block-Toeplitz 1.2-4.6x slower everywhere (on pathx "
    "with 2 threads 340 vs 272 ms; before the time-last layout it was 1.54-1.75x faster "
    "there), so no Toeplitz rule. Earlier: benchmarks/cpu_lowerings.py, 2026-11-23, single "
    "layers, chunked fastest or within noise"
)
CPU_SISO_SOURCE = (
    "benchmarks/auto_choice.py, 2026-12-01: text-s4d unpruned and at 30 %, 1 and 2 threads: "
    "scan (Toeplitz chunks, Scan carry) within 1.00-1.02x of the toeplitz lowering in every "
    "cell; "
    "benchmarks/cpu_lowerings.py --models s4d s4d-10 and the keywords example, 2026-11-23 "
    "(benchmarks/RESULTS.md, 'CPU: S4D carry'): block-Toeplitz chunks (Q=32) with the carry "
    "across chunks in one Scan. A bank small enough for chunked-level carries (H·N ≤ 1024, "
    "e.g. a pruned S4D) ran 2.5-4x slower with them at T=100 (keywords, B=8) and only "
    "1.0-1.2x faster at T=4k-16k, so the Scan carry is the robust choice"
)
CPU_SELECTIVE_SOURCE = (
    "benchmarks/mamba_cpu.py, 2026-12-01 (benchmarks/RESULTS.md, 'CPU: Mamba'): mamba-small "
    "(E=512), 1 thread, Q=16: one Scan iteration per chunk 1.85x (T=1024) and 1.96x (T=4096) "
    "faster than the chunked sweeps at d_state 16 (E·N = 8192), 1.26x/1.48x at d_state 8; "
    "a tie at d_state 4 (E·N = 2048: chunked 1.07x at T=1024, 0.92x at T=4096): the Scan's "
    "cost is per-node dispatch, the sweeps' is arithmetic"
)
AUTO_TABLE: tuple[LoweringRule, ...] = (
    LoweringRule("cpu", SelectiveCore, None, "scan", 16, 16, CPU_SELECTIVE_SOURCE),
    LoweringRule(
        "gpu",
        SelectiveCore,
        None,
        "chunked",
        16,
        16,
        "not measured: no Scan node (TensorRT loops and CUDA graphs), every step parallel",
    ),
    LoweringRule("cpu", DenseLTI, None, "chunked", 16, 16, CPU_SOURCE),
    LoweringRule("cpu", SisoBankLTI, None, "scan", 16, 32, CPU_SISO_SOURCE),
    LoweringRule(
        "gpu",
        DenseLTI,
        64,
        "chunked",
        16,
        16,
        "DESIGN §4, lead's H100 prototype: P=38 chunked 0.93 ms vs block-Toeplitz 1.09 ms",
    ),
    LoweringRule(
        "gpu",
        DenseLTI,
        None,
        "toeplitz",
        16,
        16,
        "DESIGN §4, lead's H100 prototype: P=128 block-Toeplitz 1.26 ms vs chunked 2.05 ms",
    ),
    LoweringRule(
        "gpu",
        SisoBankLTI,
        None,
        "toeplitz",
        64,
        64,
        "not measured: DESIGN §4 (materializing (B, L, H, N) states is prohibitive for S4D)",
    ),
)


def auto_rule(core: Core, device: str, rules: Sequence[LoweringRule] = AUTO_TABLE) -> LoweringRule:
    """The rule ``auto`` applies to one core on ``device`` ("cpu" or "gpu")."""
    for rule in rules:
        if rule.matches(core, device):
            return rule
    raise LookupError(f"no auto rule for {type(core).__name__} cores on {device}")
