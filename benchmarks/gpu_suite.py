"""GPU suite: onnxruntime CUDA (every lowering) vs PyTorch eager, torch.compile and JAX.

    python benchmarks/gpu_suite.py                      # all BENCHMARKS.md workloads, on a GPU
    OUT=out python benchmarks/gpu_suite.py --workloads pathx --keeps 1.0 0.3
    python benchmarks/gpu_suite.py --smoke              # tiny sizes on the CPU: checks the script

NOT RUN in this repository's sessions (no GPU): every figure it prints is for whoever runs it.

Two parts, per workload of BENCHMARKS.md and per kept fraction of states (1.0, 0.5, 0.3,
uniform per layer):

core      one SSM core of the workload's layer shape (B, T, H as in the workload), as in the
          lead's H100 prototype (DESIGN §4): onnxruntime CUDA on a core-only graph per lowering,
          PyTorch eager and torch.compile of the model's own core, and
          ``jax.lax.associative_scan`` over complex64 pairs (λ̄, B̄u) as the official S5 does
          (``apply_ssm``), jitted.
network   the whole model: onnxruntime CUDA on ``model.onnx`` (auto and each lowering),
          PyTorch eager, torch.compile; the ``stream`` workload times one step of
          ``model.step.onnx`` against ``SSMNetwork.step``.

onnxruntime runs with ``use_tf32=0`` (the fp32 gate), on PyTorch's current stream, with
device-resident inputs and outputs (IO binding). Times are CUDA events around each call after
warm-up: median and p90 over ``--repeats``. Ratios are against PyTorch eager (and
torch.compile) measured in the same process. The fp32 parity of each onnxruntime run against
the float64 PyTorch model (on the CPU) is reported next to its time. Results print as a table
and are written to ``$OUT/gpu_suite.json`` when OUT is set.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
from workloads import KEEPS, WORKLOADS, Workload, build, example_input  # noqa: E402

from aire_export.graphs.builder import GraphBuilder  # noqa: E402
from aire_export.graphs.core import lower_core  # noqa: E402
from aire_export.graphs.lowering import METHODS, LayerLowering  # noqa: E402
from aire_export.lower import export  # noqa: E402
from aire_export.models import export_ir, modal_systems  # noqa: E402

LOWERINGS = ("auto", *METHODS)


# ---- timing -------------------------------------------------------------------------------
class Timer:
    """CUDA events on the current stream (or perf_counter on the CPU smoke run)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda

    def times_ms(self, fn, repeats: int, warmup: int) -> list[float]:
        for _ in range(warmup):
            fn()
        self.sync()
        out = []
        for _ in range(repeats):
            if self.cuda:
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
                fn()
                end.record()
                end.synchronize()
                out.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                out.append(1e3 * (time.perf_counter() - t0))
        return out

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
    }


# ---- onnxruntime CUDA with device-resident I/O ----------------------------------------------
def ort_runner(path: Path, feeds: dict[str, torch.Tensor], output: str, cuda: bool):
    """A zero-argument callable running the graph on device tensors, and its output tensor."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if cuda:
        stream = torch.cuda.current_stream().cuda_stream
        providers = [
            ("CUDAExecutionProvider", {"use_tf32": "0", "user_compute_stream": str(stream)}),
            "CPUExecutionProvider",
        ]
    else:
        providers = ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), options, providers=providers)
    if cuda and "CUDAExecutionProvider" not in session.get_providers():
        raise RuntimeError("onnxruntime has no CUDA provider here: pip install onnxruntime-gpu")
    binding = session.io_binding()
    device = "cuda" if cuda else "cpu"
    for name, tensor in feeds.items():
        tensor = tensor.contiguous()
        binding.bind_input(
            name, device, 0, _np_dtype(tensor), list(tensor.shape), tensor.data_ptr()
        )
    binding.bind_output(output, device)

    def run():
        session.run_with_iobinding(binding)

    def result() -> np.ndarray:
        return binding.copy_outputs_to_cpu()[0]

    return run, result


def _np_dtype(tensor: torch.Tensor):
    return {torch.float32: np.float32, torch.int64: np.int64}[tensor.dtype]


# ---- the core benchmark ---------------------------------------------------------------------
def core_graph(core, lowering: LayerLowering, out: Path) -> Path:
    """A graph of one SSM core (its export IR) only: u (B, T, H) float32 → y (B, T, H)."""
    g = GraphBuilder("core", 17)
    u = g.input("u", "float32", ["batch", "length", core.H])
    g.output(
        "y", lower_core(g, core, u, lowering, "float32"), "float32", ["batch", "length", core.H]
    )
    path = out / f"core-{lowering.method}.onnx"
    path.write_bytes(g.model("aire-export gpu_suite").SerializeToString())
    return path


def jax_core(system, u: np.ndarray):
    """The official S5 core in JAX: associative scan over (λ̄, B̄u) complex64 pairs, jitted."""
    import jax
    import jax.numpy as jnp

    lam = jnp.asarray(system.lam, jnp.complex64)
    B = jnp.asarray(system.dense_B(), jnp.complex64)
    Cs = [jnp.asarray(system.dense_C(d), jnp.complex64) for d in range(len(system.C))]
    D = jnp.asarray(system.D, jnp.float32)
    scale = system.output_scale

    def binary(a, b):
        a_lam, a_x = a
        b_lam, b_x = b
        return a_lam * b_lam, b_lam * a_x + b_x

    def one(u1):  # (T, H), as the official code vmaps over the batch
        Bu = u1.astype(jnp.complex64) @ B.T  # (T, P)
        lams = jnp.broadcast_to(lam, Bu.shape)
        _, xs = jax.lax.associative_scan(binary, (lams, Bu))
        y = (xs @ Cs[0].T).real
        if len(Cs) == 2:
            _, xb = jax.lax.associative_scan(binary, (lams, Bu), reverse=True)
            y = y + (xb @ Cs[1].T).real
        return scale * y + D * u1

    fn = jax.jit(jax.vmap(one))
    x = jnp.asarray(u)

    def run():
        fn(x).block_until_ready()

    return run


def bench_core(workload: Workload, keep: float, args, timer: Timer, tmp: Path) -> list[dict]:
    model = build(workload, keep)
    block = model.layers[0]
    core = block.seq if hasattr(block, "seq") else block.ssm
    system = modal_systems(model)[0]  # the modal view, for the JAX contender
    ir_core = export_ir(model).blocks[0].core  # what the lowerings see
    device = "cuda" if timer.cuda else "cpu"
    u = torch.randn(workload.batch, workload.length, workload.d_model, device=device)
    rows = []
    torch_core = copy.deepcopy(core).to(device)

    def eager():
        with torch.no_grad():
            torch_core(u) if hasattr(block, "seq") else torch_core.ssm(u)

    results = {"torch eager": timer.times_ms(eager, args.repeats, args.warmup)}
    results.update(
        _compiled(
            lambda v: torch_core(v) if hasattr(block, "seq") else torch_core.ssm(v), u, timer, args
        )
    )
    ref = None
    with torch.no_grad():
        ref64 = copy.deepcopy(core).double()
        u64 = u.double().cpu()
        ref = (ref64(u64) if hasattr(block, "seq") else ref64.ssm(u64)).numpy()
    for method in args.methods:
        if method == "auto":
            from aire_export.graphs.auto import auto_rule

            rule = auto_rule(ir_core, "gpu")
            lowering = LayerLowering(
                rule.method, rule.chunk, rule.toeplitz_chunk, states=ir_core.states
            )
            label = f"ort auto={rule.method}"
        else:
            lowering = LayerLowering(
                method, max_length=max(workload.length, 2), states=ir_core.states
            )
            label = f"ort {method}"
        try:
            run, result = ort_runner(core_graph(ir_core, lowering, tmp), {"u": u}, "y", timer.cuda)
            results[label] = timer.times_ms(run, args.repeats, args.warmup)
            rows.append({"label": label, "parity": _rel(result(), ref)})
        except Exception as e:  # a lowering that fails on a runtime is a finding, not a crash
            rows.append({"label": label, "error": f"{e.__class__.__name__}: {e}"[:300]})
    if args.jax:
        try:
            results["jax associative_scan"] = timer.times_ms(
                jax_core(system, u.cpu().numpy()), args.repeats, args.warmup
            )
        except Exception as e:
            rows.append(
                {"label": "jax associative_scan", "error": f"{e.__class__.__name__}: {e}"[:300]}
            )
    return _rows("core", workload, keep, results, rows)


# ---- the network benchmark ------------------------------------------------------------------
def bench_network(workload: Workload, keep: float, args, timer: Timer, tmp: Path) -> list[dict]:
    model = build(workload, keep)
    device = "cuda" if timer.cuda else "cpu"
    net = copy.deepcopy(model).to(device)
    extra = []
    if workload.step:
        return bench_stream(workload, keep, model, net, args, timer, tmp)
    x = example_input(workload, workload.batch, workload.length).to(device)

    def eager():
        with torch.no_grad():
            net(x)

    results = {"torch eager": timer.times_ms(eager, args.repeats, args.warmup)}
    results.update(_compiled(net, x, timer, args))
    with torch.no_grad():
        ref = (
            copy.deepcopy(model).double()(x.cpu() if workload.tokens else x.double().cpu()).numpy()
        )
    for method in args.methods:
        out = tmp / f"net-{method}"
        try:
            exported = export(model, out, target="ort-cuda", scan=method, step=False).sequence
            label = f"ort {method}" if method != "auto" else f"ort auto={exported.scan}"
            run, result = ort_runner(exported.path, {"x": x}, "y", timer.cuda)
            results[label] = timer.times_ms(run, args.repeats, args.warmup)
            extra.append(
                {"label": label, "parity": _rel(result(), ref), "nodes": exported.node_count}
            )
        except Exception as e:
            extra.append({"label": f"ort {method}", "error": f"{e.__class__.__name__}: {e}"[:300]})
    return _rows("network", workload, keep, results, extra)


def bench_stream(workload, keep, model, net, args, timer, tmp) -> list[dict]:
    device = "cuda" if timer.cuda else "cpu"
    state = net.init_state(1)
    x = example_input(workload, 1, 1).to(device)[:, 0]

    def eager():
        with torch.no_grad():
            net.step(x, state)

    results = {"torch eager step": timer.times_ms(eager, args.repeats, args.warmup)}
    step = export(model, tmp / "stream", target="ort-cuda").step
    feeds = {"x": x}
    for spec in step.inputs[1:]:
        shape = [1 if d == "batch" else d for d in spec.shape]
        feeds[spec.name] = torch.zeros(shape, device=device)
    extra = []
    try:
        run, _ = ort_runner(step.path, feeds, "y", timer.cuda)
        results["ort step"] = timer.times_ms(run, args.repeats, args.warmup)
    except Exception as e:
        extra.append({"label": "ort step", "error": f"{e.__class__.__name__}: {e}"[:300]})
    return _rows("stream", workload, keep, results, extra)


# ---- helpers ----------------------------------------------------------------------------------
def _compiled(fn, x, timer: Timer, args) -> dict[str, list[float]]:
    if not args.compile:
        return {}
    try:
        compiled = torch.compile(fn)

        def run():
            with torch.no_grad():
                compiled(x)

        return {"torch.compile": timer.times_ms(run, args.repeats, max(args.warmup, 3))}
    except Exception as e:  # complex ops may not compile: report, do not stop
        print(f"  torch.compile failed: {e.__class__.__name__}: {str(e)[:200]}", flush=True)
        return {}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _rows(part, workload, keep, results, extra) -> list[dict]:
    base = statistics.median(next(iter(results.values())))
    compiled = statistics.median(results["torch.compile"]) if "torch.compile" in results else None
    by_label = {e["label"]: e for e in extra}
    rows = []
    for label, samples in results.items():
        row = {
            "part": part,
            "workload": workload.name,
            "keep": keep,
            "label": label,
            **summary(samples),
        }
        row["vs_torch_eager"] = base / row["median_ms"]
        if compiled is not None:
            row["vs_torch_compile"] = compiled / row["median_ms"]
        row.update({k: v for k, v in by_label.pop(label, {}).items() if k != "label"})
        rows.append(row)
    rows += [
        {"part": part, "workload": workload.name, "keep": keep, **e} for e in by_label.values()
    ]
    for row in rows:
        if "median_ms" in row:
            ratios = f"x{row['vs_torch_eager']:.2f} eager" + (
                f", x{row['vs_torch_compile']:.2f} compile" if "vs_torch_compile" in row else ""
            )
            parity = f", parity {row['parity']:.1e}" if "parity" in row else ""
            print(
                f"{part:7s} {workload.name:10s} keep {keep:.1f} {row['label']:24s} "
                f"{row['median_ms']:9.3f} ms (p90 {row['p90_ms']:.3f}) {ratios}{parity}",
                flush=True,
            )
        else:
            print(
                f"{part:7s} {workload.name:10s} keep {keep:.1f} {row['label']:24s} {row['error']}"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--keeps", nargs="+", type=float, default=list(KEEPS))
    parser.add_argument("--methods", nargs="+", default=list(LOWERINGS), choices=list(LOWERINGS))
    parser.add_argument(
        "--parts", nargs="+", default=["core", "network"], choices=["core", "network"]
    )
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-jax", dest="jax", action="store_false")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (no GPU)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        sys.exit("no CUDA GPU here: run on the device, or pass --smoke to check the script")
    if args.smoke:
        args.repeats, args.warmup, args.compile = min(args.repeats, 2), 1, False
    timer = Timer(cuda)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads:
            workload = WORKLOADS[name]
            if args.smoke:
                workload = workload.scaled(
                    d_model=16,
                    stored_states=8,
                    n_layers=2,
                    batch=2,
                    length=min(workload.length, 64),
                )
            for keep in args.keeps:
                parts = [p for p in args.parts if not (workload.step and p == "core")]
                for part in parts:
                    bench = bench_core if part == "core" else bench_network
                    rows += bench(workload, keep, args, timer, Path(tmp))
    meta = {
        "device": torch.cuda.get_device_name() if cuda else "cpu (smoke run)",
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
        "torch": torch.__version__,
    }
    try:
        import onnxruntime

        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "gpu_suite.json"
        path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
