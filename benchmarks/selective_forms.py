"""CPU: the forms a selective scan could take in plain ONNX ops, side by side (the design
choices of aire_export/graphs/selective.py).

    python benchmarks/selective_forms.py [--threads 1] [--lengths 1024,4096] [--out FILE.json]

One scan core alone, y_t = C_t s_t with s_t = exp(δ_t ⊗ A) ⊙ s_{t−1} + B_t ⊗ u_t, inputs δ, u
(1, T, E) and B, C (1, T, N), E = 512, N = 16 (mamba-small's layer). Contenders, every one
checked against a float64 sequential scan:

    chunked        the ``chunked`` lowering's core (two sweeps of Q = 16 steps over all
                   chunks at once, chunked levels carry), states laid out (N, E)
    scan           the ``scan`` lowering's core (one Scan iteration per chunk of Q steps)
    chunked (E,N)  the chunked form with states laid out (E, N): the broadcasts δ ⊗ A and
                   u ⊗ B then run along N = 16 instead of E = 512
    hillis-steele  Hillis–Steele inside chunks of Q = 16 (log2 Q doubling steps over the
                   whole (T, N, E) tensor), the chunk ends carried by the same on chunk level

Ratios are medians of per-round ratios against ``chunked`` (timing.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
from timing import cpu_run_meta, interleaved_times, median_ms, paired_speedup  # noqa: E402

from aire_export import ir  # noqa: E402
from aire_export.graphs import selective  # noqa: E402
from aire_export.graphs.builder import GraphBuilder  # noqa: E402
from aire_export.graphs.lowering import LayerLowering  # noqa: E402
from aire_export.graphs.recurrence import pad_time  # noqa: E402

F32 = "float32"
E, N, Q = 512, 16, 16


def _core(A: np.ndarray) -> ir.SelectiveCore:
    """A SelectiveCore that only its A matters for (the scan functions read E, N and A)."""
    zeros = ir.Dense(np.zeros((1, 1)), np.zeros(1))
    return ir.SelectiveCore(
        zeros, np.zeros((E, 2)), np.zeros(E), zeros, zeros, A, np.zeros(E), zeros, 1
    )


def _inputs(g: GraphBuilder) -> list[str]:
    return [
        g.input("delta", F32, [1, "T", E]),
        g.input("u", F32, [1, "T", E]),
        g.input("B", F32, [1, "T", N]),
        g.input("C", F32, [1, "T", N]),
    ]


def ours(A: np.ndarray, method: str) -> bytes:
    """The lowering's own scan core (graphs/selective.py) on padded inputs."""
    g = GraphBuilder("core", 17)
    delta, u, B, C = _inputs(g)
    (delta, length), (u, _), (B, _), (C, _) = (pad_time(g, t, 3, 1, Q) for t in (delta, u, B, C))
    inputs = g.mul(delta, u)
    lowering = LayerLowering(method, chunk=Q)
    form = selective._stepped if method == "scan" else selective._chunked
    y = g.slice(form(g, _core(A), delta, inputs, B, C, lowering), [0], length, [1])
    g.output("y", y, F32, [1, "T", E])
    return g.model("bench").SerializeToString()


def _shift(g, x, d, axis, rank, fill=None):
    pads = [0] * (2 * rank)
    pads[axis] = d
    value = None if fill is None else g.const(np.array(fill), F32, "fill")
    return g.slice(g.pad(x, pads, value), [0], [-d], [axis])


def _hillis_steele(g, a, b, axis, rank, steps, need_a=True):
    for s in range(steps):
        d = 2**s
        b = g.add(b, g.mul(a, _shift(g, b, d, axis, rank)))
        if need_a or s < steps - 1:
            a = g.mul(a, _shift(g, a, d, axis, rank, 1.0))
    return a, b


def _pad_chunks(g, x, fill):
    length = g.shape(x, 1, 2)
    pad = g.op("Mod", g.sub(g.ints([Q]), g.op("Mod", length, g.ints([Q]))), g.ints([Q]))
    pads = g.concat([g.ints([0, 0, 0, 0, 0]), pad, g.ints([0, 0])], axis=0)
    value = None if fill is None else g.const(np.array(fill), F32, "fill")
    return g.pad(x, pads, value), length


def _hs_chunks(g, a, b, levels, width):
    """States (1, T, *width) of the scan by Hillis–Steele in chunks of Q, ends carried above."""
    a, length = _pad_chunks(g, a, 1.0)
    b, _ = _pad_chunks(g, b, None)
    a5, b5 = (g.reshape(t, [0, -1, Q, *width]) for t in (a, b))
    P, S = _hillis_steele(g, a5, b5, 2, 5, int(np.log2(Q)))
    ends = [g.squeeze(g.slice(t, [Q - 1], [Q], [2]), [2]) for t in (P, S)]
    if levels > 1:
        carried = _hs_chunks(g, *ends, levels - 1, width)
    else:
        carried = _hillis_steele(g, *ends, 1, 4, int(np.log2(Q)), need_a=False)[1]
    entering = g.unsqueeze(_shift(g, carried, 1, 1, 4), [2])
    states = g.add(S, g.mul(P, entering))
    return g.slice(g.reshape(states, [0, -1, *width]), [0], length, [1])


def hillis_steele(A: np.ndarray) -> bytes:
    g = GraphBuilder("core", 17)
    delta, u, B, C = _inputs(g)
    a = g.op("Exp", g.mul(g.unsqueeze(delta, [2]), g.const(A.T, F32, "A")))  # (1, T, N, E)
    b = g.mul(g.unsqueeze(B, [3]), g.unsqueeze(g.mul(delta, u), [2]))
    states = _hs_chunks(g, a, b, 4, [N, E])
    y = g.squeeze(g.matmul(g.unsqueeze(C, [2]), states), [2])
    g.output("y", y, F32, [1, "T", E])
    return g.model("bench").SerializeToString()


def chunked_en(A: np.ndarray, levels: int = 4) -> bytes:
    """The two-sweep chunked form with states (…, E, N): broadcasts along N."""
    g = GraphBuilder("core", 17)
    delta, u, B, C = _inputs(g)
    (delta, length), (u, _), (B, _), (C, _) = (pad_time(g, t, 3, 1, Q) for t in (delta, u, B, C))
    A_c = g.const(A, F32, "A")  # (E, N)

    def states(d, drive, carries):
        chunks = g.reshape(d, [0, -1, Q, E])
        decays = [
            g.op("Exp", g.mul(g.unsqueeze(g.slice(chunks, [k], [k + 1], [2]), [4]), A_c))
            for k in range(Q)
        ]
        drives = [drive(k) for k in range(Q)]
        local = selective._sweep(g, decays, drives, None)
        if carries == 0:
            return local
        ends = g.squeeze(local[-1], [2])
        spans, count = pad_time(g, g.reduce("ReduceSum", chunks, [2]), 3, 1, Q)
        blocks = g.reshape(pad_time(g, ends, 4, 1, Q)[0], [0, -1, Q, E, N])
        inner = states(spans, lambda k: g.slice(blocks, [k], [k + 1], [2]), carries - 1)
        carried = g.slice(g.reshape(g.concat(inner, 2), [0, -1, E, N]), [0], count, [1])
        entering = g.slice(g.pad(carried, [0, 1, 0, 0, 0, 0, 0, 0]), [0], [-1], [1])
        return selective._sweep(g, decays, drives, g.unsqueeze(entering, [2]))

    du = g.reshape(g.mul(delta, u), [0, -1, Q, E])
    Bc, Cc = (g.reshape(t, [0, -1, Q, N]) for t in (B, C))

    def drive(k):
        return g.mul(
            g.unsqueeze(g.slice(du, [k], [k + 1], [2]), [4]),
            g.unsqueeze(g.slice(Bc, [k], [k + 1], [2]), [3]),
        )

    ys = [
        g.matmul(s, g.unsqueeze(g.slice(Cc, [k], [k + 1], [2]), [4]))
        for k, s in enumerate(states(delta, drive, levels - 1))
    ]
    y = g.slice(g.reshape(g.concat(ys, 2), [0, -1, E]), [0], length, [1])
    g.output("y", y, F32, [1, "T", E])
    return g.model("bench").SerializeToString()


def reference(feeds: dict, A: np.ndarray) -> np.ndarray:
    delta, u, B, C = (feeds[k].astype(np.float64)[0] for k in ("delta", "u", "B", "C"))
    s, out = np.zeros((E, N)), np.zeros_like(delta)
    for t in range(delta.shape[0]):
        s = np.exp(delta[t][:, None] * A) * s + (delta[t] * u[t])[:, None] * B[t][None, :]
        out[t] = s @ C[t]
    return out[None]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lengths", default="1024,4096")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    A = -np.exp(rng.uniform(0, np.log(16), (E, N)))  # −(1..16)-like, per channel
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    graphs = {
        "chunked": ours(A, "chunked"),
        "scan": ours(A, "scan"),
        "chunked (E,N)": chunked_en(A),
        "hillis-steele": hillis_steele(A),
    }
    sessions = {
        name: ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        for name, model in graphs.items()
    }
    results = {"meta": cpu_run_meta() | {"threads": args.threads, "E": E, "N": N, "Q": Q}}
    rows = []
    for length in (int(t) for t in args.lengths.split(",")):
        feeds = {
            "delta": np.log1p(np.exp(rng.normal(-3, 1, (1, length, E)))).astype(np.float32),
            "u": rng.standard_normal((1, length, E)).astype(np.float32),
            "B": rng.standard_normal((1, length, N)).astype(np.float32),
            "C": rng.standard_normal((1, length, N)).astype(np.float32),
        }
        want = reference(feeds, A)
        runs = {name: (lambda s=s, f=feeds: s.run(None, f)) for name, s in sessions.items()}
        times = interleaved_times(runs, args.rounds)
        for name, s in sessions.items():
            (y,) = s.run(None, feeds)
            row = {
                "length": length,
                "form": name,
                "median_ms": median_ms(times[name]),
                "vs_chunked": paired_speedup(times["chunked"], times[name]),
                "max_rel_error": float(np.abs(y - want).max() / np.abs(want).max()),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    results["rows"] = rows
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
