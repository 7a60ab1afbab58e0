"""CPU streaming: per-step latency of the step graph at K = 1, 8, 32 steps per call (``--frame``)
vs the eager PyTorch ``SSMNetwork.step``, unpruned and pruned with AIRE to 50 % and 30 % of the
states (issue 14).

    python benchmarks/streaming.py --out benchmarks/streaming.json

The ``stream`` workload (benchmarks/workloads.py: S5, H = 128, 128 stored states, 6 layers,
unidirectional, batch 1), pruned by ``ax.prune(model, ratio)`` (the global Algorithm 1, so the
layers keep different counts). Every contender streams the same ``--steps`` steps per sample
with its state fed back, the graph in calls of K steps, PyTorch one ``step()`` at a time; all
contenders of all models run interleaved in rounds (one sample each per round), one thread
each (onnxruntime intra- and inter-op, torch). Per-step latency = median sample / steps; a
ratio = the median over rounds of the ratio of two samples of the same round.
``--workload text-s4d`` streams that workload's S4D model instead (H = 256, 32 modes per
channel, 6 layers, unidirectional, batch 1). Before timing, every graph streams a short
sequence against the float64 model's ``step()`` (max relative error recorded), so no figure
is for a wrong graph.

``--before`` adds the single-step graph as it was before the lean update (each state pair
split into re and im, updated and joined again: recurrence.py's split_pair, scaled_pair and
join_pair, 27 nodes per layer instead of 9), built by swapping that update in for the export.
``--chunked`` adds the S5 frame graphs as they were before the factored frame (every layer
by lti_dense._chunked_frame: per-state boundary and chunk MatMuls), built the same way.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import onnxruntime as ort
import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
from timing import (  # noqa: E402
    cpu_run_meta,
    interleaved_times,
    median_ms,
    p90_ms,
    paired_speedup,
)
from workloads import WORKLOADS, build  # noqa: E402

import aire_export as ax  # noqa: E402
from aire_export.graphs import lti_bank, lti_dense  # noqa: E402
from aire_export.graphs.recurrence import join_pair, scaled_pair, split_pair  # noqa: E402
from aire_export.lower import export  # noqa: E402

FRAMES = (1, 8, 32)
RATIOS = {"100%": 0.0, "50%": 0.5, "30%": 0.7}  # kept share of the states → pruning ratio


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class GraphStream:
    """A step graph streamed K steps per call from the zero state, its outputs fed back."""

    def __init__(self, path: Path, frame: int) -> None:
        self.session, self.frame = session(path), frame
        inputs = self.session.get_inputs()
        self.state_names = [i.name for i in inputs if i.name != "x"]
        self.zero = {
            i.name: np.zeros([1 if d == "batch" else d for d in i.shape], np.float32)
            for i in inputs
            if i.name != "x"
        }
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, x: np.ndarray) -> np.ndarray:
        """y after every step of x (1, T, d), T a multiple of the frame."""
        feeds, ys = dict(self.zero), []
        for t in range(0, x.shape[1], self.frame):
            feeds["x"] = x[:, t] if self.frame == 1 else x[:, t : t + self.frame]
            out = dict(zip(self.outputs, self.session.run(None, feeds), strict=True))
            feeds.update({name: out[f"{name}_out"] for name in self.state_names})
            ys.append(out["y"][:, None] if self.frame == 1 else out["y"])
        return np.concatenate(ys, 1)


def split_pair_update(g, state: str, lam: np.ndarray, v: str, rank: int) -> str:
    """The single-step update before the lean one: split (re, im), λ ⊙ x on the parts, join."""
    re, im = scaled_pair(g, *split_pair(g, state, rank), lam)
    v_re, v_im = split_pair(g, v, rank)
    return join_pair(g, g.add(re, v_re), g.add(im, v_im), rank)


def export_before(model, folder: Path):
    """The single-step graph with the split-pair update (``--before``)."""
    with (
        mock.patch.object(lti_dense, "step_states", split_pair_update),
        mock.patch.object(lti_bank, "step_states", split_pair_update),
    ):
        return export(model, folder).step


def export_chunked(model, folder: Path, frame: int):
    """The frame graph with every S5 layer's chunked frame (``--chunked``)."""
    with mock.patch.object(lti_dense, "factored_frame_fits", lambda lam, frame: False):
        return export(model, folder, frame=frame).step


def eager_stream(model, x: torch.Tensor) -> np.ndarray:
    """y after every step of x (1, T, d) by the model's own ``step()``."""
    state, ys = model.init_state(x.shape[0]), []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, state = model.step(x[:, t], state)
            ys.append(y.numpy())
    return np.stack(ys, 1)


def run(args) -> dict:
    torch.set_num_threads(1)
    workload = WORKLOADS[args.workload].scaled(bidirectional=False, batch=1)
    if args.smoke:
        workload = workload.scaled(d_model=16, stored_states=8, n_layers=2)
    base = build(workload)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, args.steps, workload.d_input)).astype(np.float32)
    check = rng.standard_normal((1, args.check_steps, workload.d_input)).astype(np.float32)
    x_torch = torch.from_numpy(x)
    contenders, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for kept, ratio in RATIOS.items():
            model = base if ratio == 0 else ax.prune(base, ratio=ratio, certificates=False)[0]
            want = eager_stream(copy.deepcopy(model).double(), torch.from_numpy(check).double())
            states = sum(model.config.state_sizes)
            eager = f"{kept} eager step()"
            contenders[eager] = lambda m=model: eager_stream(m, x_torch)
            rows.append(dict(name=eager, kept=kept, states=states, contender="eager", frame=1))
            graphs = [("onnx", frame) for frame in FRAMES]
            graphs += [("before", 1)] if args.before else []
            graphs += [("chunked", frame) for frame in FRAMES[1:]] if args.chunked else []
            for contender, frame in graphs:
                folder = Path(tmp) / f"{kept}-{contender}-{frame}"
                if contender == "before":
                    step = export_before(model, folder)
                elif contender == "chunked":
                    step = export_chunked(model, folder, frame)
                else:
                    step = export(model, folder, frame=frame).step
                graph = GraphStream(step.path, frame)
                error = float(np.abs(graph.run(check) - want).max() / np.abs(want).max())
                name = f"{kept} {contender} K={frame}"
                contenders[name] = lambda g=graph: g.run(x)
                rows.append(
                    dict(
                        name=name,
                        kept=kept,
                        states=states,
                        contender=contender,
                        frame=frame,
                        nodes=step.node_count,
                        max_rel_error=error,
                    )
                )
        times = interleaved_times(contenders, args.rounds, warmup=2)
    for row in rows:
        row["us_per_step"] = 1e3 * median_ms(times[row["name"]]) / args.steps
        row["p90_us_per_step"] = 1e3 * p90_ms(times[row["name"]]) / args.steps
    at = {(r["kept"], r["contender"], r["frame"]): times[r["name"]] for r in rows}
    return {"rows": rows, "ratios": ratios(at), "steps": args.steps, "rounds": args.rounds}


def ratios(times: dict[tuple, list[float]]) -> dict:
    """Per-step latency ratios, each the median over rounds of the ratio of two samples taken
    back to back (``paired_speedup``): K = 1 over K, unpruned over pruned at the same K, eager
    over the graph at the same kept share. ``times`` by (kept, contender, frame)."""

    def at(*base_key):
        return lambda *other_key: paired_speedup(times[base_key], times[other_key])

    out = {}
    for kept in RATIOS:
        for frame in FRAMES[1:]:
            out[f"{kept}: K=1 / K={frame}"] = at(kept, "onnx", 1)(kept, "onnx", frame)
        for frame in FRAMES:
            out[f"{kept}: eager / K={frame}"] = at(kept, "eager", 1)(kept, "onnx", frame)
    for kept in list(RATIOS)[1:]:
        for frame in FRAMES:
            out[f"100% / {kept} at K={frame}"] = at("100%", "onnx", frame)(kept, "onnx", frame)
        out[f"100% / {kept} eager"] = at("100%", "eager", 1)(kept, "eager", 1)
    if ("100%", "before", 1) in times:
        for kept in RATIOS:
            out[f"{kept}: K=1 before / lean"] = at(kept, "before", 1)(kept, "onnx", 1)
    for kept in RATIOS:
        for frame in FRAMES[1:]:
            if (kept, "chunked", frame) in times:
                key = f"{kept}: K={frame} chunked / factored"
                out[key] = at(kept, "chunked", frame)(kept, "onnx", frame)
                out[f"{kept}: K=1 / K={frame} chunked"] = at(kept, "onnx", 1)(
                    kept, "chunked", frame
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=64, help="Streamed steps per sample.")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--check-steps", type=int, default=64)
    parser.add_argument(
        "--workload",
        default="stream",
        choices=["stream", "text-s4d"],
        help="stream (S5, the issue's), or text-s4d's S4D layers streamed (batch 1).",
    )
    parser.add_argument("--smoke", action="store_true", help="A tiny model (tests).")
    parser.add_argument("--before", action="store_true", help="Time the pre-lean step graph too.")
    parser.add_argument(
        "--chunked", action="store_true", help="Time the frames before the factored form too."
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.steps % max(FRAMES) or args.check_steps % max(FRAMES):
        parser.error(f"--steps and --check-steps must be multiples of {max(FRAMES)}")
    result = run(args)
    for row in result["rows"]:
        extra = (
            f", {row['nodes']} nodes, error {row['max_rel_error']:.1e}" if "nodes" in row else ""
        )
        print(
            f"{row['name']:22s} {row['states']:4d} states  {row['us_per_step']:9.1f} µs/step "
            f"(p90 {row['p90_us_per_step']:.1f}){extra}"
        )
    for name, value in result["ratios"].items():
        print(f"{name:32s} x{value:.2f}")
    if args.out:
        meta = {**cpu_run_meta(), "device": "2-core CPU, shared; 1 thread per contender"}
        args.out.write_text(json.dumps({"meta": meta, **result}, indent=1))


if __name__ == "__main__":
    main()
