"""CPU: Mamba-1 on onnxruntime vs transformers' PyTorch path vs our eager model, same weights.

    python benchmarks/mamba_cpu.py --threads 1,2 --memory --out benchmarks/mamba_cpu.json [--quick]

Workload ``mamba-small`` (random weights, transformers' initialization): d_model 256, 4 layers,
d_state 16, expand 2 (d_inner 512), d_conv 4, vocabulary 256, tied head; batch 1. One model is
made by ``transformers.MambaForCausalLM``, saved with ``save_pretrained`` and imported with
``aire-export import hf-mamba``, so every contender runs the same weights. The pruned models
keep 50 % and 25 % of d_state (``ax.prune`` with the aire score on 8 random calibration
sequences of 256 tokens: the real pipeline, per-layer counts as it chooses) and are physically
smaller.

Sequence mode (T = 1024, 4096; logits at every position), side by side in rounds:
    transformers   MambaForCausalLM.forward (its CPU path: mamba_ssm and causal_conv1d are not
                   installed, so the reference PyTorch scan, a Python loop over time)
    eager          our MambaLM.forward (the chunked PyTorch scan), float32
    onnx[-chunked] model.onnx on onnxruntime: ``scan="auto"`` (on the CPU: one Scan iteration
                   per chunk of 16 steps) and the chunked sweeps, unpruned, 50 % and 25 % of
                   d_state
Decode mode: 128 greedy tokens from a 1-token prompt, tokens/s:
    transformers   generate(do_sample=False, use_cache=True) (no end-of-sequence token)
    eager          our MambaLM.step in a Python loop
    onnx           model.step.onnx in a Python loop (states fed back), unpruned, 50 %, 25 %
Peak memory (``--memory``): each contender in a fresh process, its first run: the rise of the
peak RSS above the RSS before it, freed memory handed back first (Linux: malloc_trim, VmHWM
after clear_refs).
Size: model.onnx bytes vs the float32 parameter bytes.

Times are medians over rounds; ratios are medians of per-round ratios (timing.py), so load
drifting on a shared machine hits every contender alike. One intra-op thread by default for
PyTorch and onnxruntime alike (``--threads``; a list runs every contender at each count).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
from timing import cpu_run_meta, interleaved_times, median_ms, paired_speedup  # noqa: E402

import aire_export as ax  # noqa: E402
from aire_export.checkpoints.hf_mamba import import_hf_mamba  # noqa: E402

WORKLOAD = dict(vocab_size=256, hidden_size=256, state_size=16, num_hidden_layers=4, expand=2)
QUICK = dict(vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2)
KEEP = {"unpruned": 1.0, "50%": 0.5, "25%": 0.25}
DECODE_TOKENS = 128


def build_models(folder: Path, workload: dict, seed: int = 0):
    """(transformers model, {name: our model}) with identical weights."""
    import transformers

    torch.manual_seed(seed)
    # no end-of-sequence token: generate runs its full length and suppresses nothing
    config = transformers.MambaConfig(**workload, pad_token_id=0, bos_token_id=0, eos_token_id=None)
    hf = transformers.MambaForCausalLM(config).eval()
    hf.save_pretrained(folder / "hf")
    ours = import_hf_mamba(folder / "hf")
    calib = np.random.default_rng(seed).integers(0, workload["vocab_size"], (8, 256))
    models = {"unpruned": ours}
    for name, keep in KEEP.items():
        if keep < 1:
            models[name] = ax.prune(ours, 1 - keep, calib=calib)[0]
    return hf, models


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def greedy_onnx(step: ort.InferenceSession, tokens: int) -> list[int]:
    names = [o.name for o in step.get_outputs()]
    feeds = {
        i.name: np.zeros([1, *i.shape[1:]], np.float32) for i in step.get_inputs() if i.name != "x"
    }
    token, out = 0, []
    for _ in range(tokens):
        result = dict(zip(names, step.run(None, {**feeds, "x": np.array([token])}), strict=True))
        feeds = {name: result[f"{name}_out"] for name in feeds}
        token = int(result["y"][0].argmax())
        out.append(token)
    return out


def greedy_eager(model, tokens: int) -> list[int]:
    state, token, out = model.init_state(1), 0, []
    with torch.no_grad():
        for _ in range(tokens):
            logits, state = model.step(torch.tensor([token]), state)
            token = int(logits[0].argmax())
            out.append(token)
    return out


def greedy_hf(hf, tokens: int) -> list[int]:
    prompt = torch.zeros(1, 1, dtype=torch.long)
    with torch.no_grad():  # the mask says the prompt is text: token 0 is also the pad id
        ids = hf.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=tokens,
            do_sample=False,
            use_cache=True,
        )
    return ids[0, 1:].tolist()


def contenders(folder: Path, hf, models, threads: int, mode: str, length: int):
    """{name: zero-argument callable} for one mode and length."""
    out = {}
    x = np.random.default_rng(1).integers(0, hf.config.vocab_size, (1, length))
    tx = torch.from_numpy(x)
    if mode == "sequence":

        def hf_forward():
            with torch.no_grad():
                return hf(tx).logits

        def eager(model):
            def run():
                with torch.no_grad():
                    return model(tx)

            return run

        out["transformers"] = hf_forward
        out["eager"] = eager(models["unpruned"])
        for name, model in models.items():
            for scan in ("auto", "chunked"):
                path = folder / f"{name}-{scan}"
                result = ax.export(model, path, scan=scan, step=False)
                s = session(result.sequence.path, threads)
                label = f"onnx {name}" if scan == "auto" else f"onnx-chunked {name}"
                out[label] = lambda s=s: s.run(None, {"x": x})
    else:
        out["transformers"] = lambda: greedy_hf(hf, DECODE_TOKENS)
        out["eager"] = lambda: greedy_eager(models["unpruned"], DECODE_TOKENS)
        for name, model in models.items():
            result = ax.export(model, folder / f"{name}-step")
            s = session(result.step.path, threads)
            out[f"onnx {name}"] = lambda s=s: greedy_onnx(s, DECODE_TOKENS)
    return out


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def one(args) -> None:
    """Child process of ``--memory``: set up the contenders, hand freed memory back to the
    system (glibc ``malloc_trim``, so a run cannot reuse the setup's garbage unseen), reset the
    process's peak RSS (Linux: ``5`` into /proc/self/clear_refs), run the measured contender
    once, its first run, and print how far the peak rose above the RSS before it: the memory a
    run needs, its lazy allocations (onnxruntime's arena, torch's caches) included. (A second
    run after a warm-up reuses what the allocators kept and shows ~0 for PyTorch.)"""
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        hf, models = build_models(Path(tmp), QUICK if args.quick else WORKLOAD)
        runs = contenders(Path(tmp), hf, models, args.threads, args.mode, args.length)
        fn = runs[args.one]
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_mb("VmRSS")
        fn()
        print(json.dumps({"peak_growth_mb": _status_mb("VmHWM") - before}))


def memory(args, names: list[str]) -> dict[str, float]:
    out = {}
    for name in names:
        command = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--mode",
            args.mode_for_memory,
            "--length",
            str(args.memory_length),
            "--threads",
            str(args.threads),
        ] + (["--quick"] if args.quick else [])
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        out[name] = json.loads(done.stdout.strip().splitlines()[-1])["peak_growth_mb"]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", default="1", help="thread counts, e.g. 1,2 (each a run)")
    parser.add_argument("--lengths", default="1024,4096")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a tiny model (smoke test)")
    parser.add_argument("--memory", action="store_true", help="peak memory, process per run")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="sequence", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    counts = [int(t) for t in str(args.threads).split(",")]
    if args.one:
        args.threads = counts[0]
        return one(args)
    workload = QUICK if args.quick else WORKLOAD
    results = {"meta": cpu_run_meta() | {"threads": counts, "workload": workload}}
    results["meta"]["device"] = results["meta"]["device"].replace(", 1 thread", "")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        hf, models = build_models(folder, workload)
        params = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
        sizes = {}
        for name, model in models.items():
            result = ax.export(model, folder / f"{name}-size")
            sizes[name] = {
                "parameters": params[name],
                "d_state_per_layer": model.config.state_sizes,
                "parameter_bytes_fp32": 4 * params[name],
                "model_onnx_bytes": result.sequence.path.stat().st_size,
                "model_step_onnx_bytes": result.step.path.stat().st_size,
            }
        results["size"] = sizes
        print(json.dumps(sizes, indent=1), flush=True)
        # greedy decoding gives the same tokens in every implementation (a check, not a timing)
        want = greedy_hf(hf, 32)
        step = session(ax.export(models["unpruned"], folder / "check").step.path, 1)
        results["decode_tokens_agree"] = (
            greedy_onnx(step, 32) == want == greedy_eager(models["unpruned"], 32)
        )
        rows = []
        plans = [("sequence", int(t)) for t in args.lengths.split(",")] + [("decode", 1)]
        for threads, (mode, length) in ((t, p) for t in counts for p in plans):
            torch.set_num_threads(threads)
            runs = contenders(folder, hf, models, threads, mode, length)
            start = time.perf_counter()
            times = interleaved_times(runs, args.rounds)
            base = times["transformers"]
            for name, samples in times.items():
                row = {
                    "threads": threads,
                    "mode": mode,
                    "length": length if mode == "sequence" else None,
                    "contender": name,
                    "median_ms": median_ms(samples),
                    "vs_transformers": paired_speedup(base, samples),
                }
                if mode == "decode":
                    row["tokens_per_s"] = DECODE_TOKENS / (row["median_ms"] / 1e3)
                pruned_base = "onnx unpruned" if name.startswith("onnx ") else None
                if name.startswith("onnx-chunked"):
                    pruned_base = "onnx-chunked unpruned"
                if pruned_base and pruned_base in times:
                    row["vs_unpruned"] = paired_speedup(times[pruned_base], samples)
                rows.append(row)
                print(json.dumps(row), flush=True)
            print(f"{threads} thread(s), {mode} {length}: {time.perf_counter() - start:.0f} s")
        results["timings"] = rows
    if args.memory:
        args.threads = counts[0]
        for mode, length in (("sequence", 4096), ("decode", 1)):
            args.mode_for_memory, args.memory_length = mode, length
            names = ["transformers", "eager", "onnx unpruned", "onnx 50%", "onnx 25%"]
            results[f"peak_memory_mb_{mode}"] = memory(args, names)
            print(mode, results[f"peak_memory_mb_{mode}"], flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
