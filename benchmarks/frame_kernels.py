"""Where a frame of the `stream` model spends its time (issue 14, the frame target): the single
nodes of one S5 layer's K = 32 frame, and the alternatives tried for its recurrence, each in
a session of its own, timed interleaved, one thread.

    python benchmarks/frame_kernels.py [--rounds 2000] [--out benchmarks/frame_kernels.json]

The layer: P = 128 stored states, H = 128 channels, K = 32 steps in chunks of Q = 8
(recurrence.frame_recurrence). Contenders (µs per call, median; the session's own call
overhead is in every figure, so read differences):

- ``bounds``: the chunk-boundary states, one (1 × 2K+4) @ (2K+4 × 2n) GEMM per state;
- ``bounds, operator left``: the same product as (2n × 2K+4) @ (2K+4 × 1) per state;
- ``chunks``: the states inside the chunks, one (n × 2Q+2) @ (2Q+2 × 2Q) GEMM per state;
- ``one GEMM per state``: every state of the frame at once, (1 × 2K+4) @ (2K+4 × 2K);
- ``grouped Conv``: the causal sums Σ_j λ^(k−j) v_j as an ONNX Conv over time, one group
  (re, im → re, im) per state, kernel K;
- ``input map``: the dense (K × H) @ (H × 2P) MatMul of the same layer, for scale;
- ``empty``: an Identity on the (1, K, H) frame input (the call overhead alone).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).resolve().parents[1])]
from timing import cpu_run_meta, interleaved_times, median_ms  # noqa: E402

from aire_export.graphs.recurrence import FRAME_CHUNK  # noqa: E402

P, H, K = 128, 128, 32


def single_node(op: str, shape: list[int], weight: np.ndarray | None, left: bool = False, **attrs):
    """A session running one node on input ``a`` of ``shape`` (and the initializer ``w``)."""
    inputs = ["a"] if weight is None else (["w", "a"] if left else ["a", "w"])
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"], **attrs)],
        op,
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[] if weight is None else [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def contenders(rng: np.random.Generator) -> dict[str, tuple]:
    q = FRAME_CHUNK
    n = K // q
    w = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    rows = 2 * K + 4
    return {
        "bounds": ("MatMul", [1, P, 1, rows], w(P, rows, 2 * n), False, {}),
        "bounds, operator left": ("MatMul", [1, P, rows, 1], w(P, 2 * n, rows), True, {}),
        "chunks": ("MatMul", [1, P, n, 2 * q + 2], w(P, 2 * q + 2, 2 * q), False, {}),
        "one GEMM per state": ("MatMul", [1, P, 1, rows], w(P, rows, 2 * K), False, {}),
        "grouped Conv": (
            "Conv",
            [1, 2 * P, K],
            w(2 * P, 2, K),
            False,
            dict(group=P, pads=[K - 1, 0], kernel_shape=[K]),
        ),
        "input map": ("MatMul", [1, K, H], w(H, 2 * P), False, {}),
        "empty": ("Identity", [1, K, H], None, False, {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("frame_kernels.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    calls = {}
    for name, (op, shape, weight, left, attrs) in contenders(rng).items():
        session = single_node(op, shape, weight, left, **attrs)
        a = rng.standard_normal(shape).astype(np.float32)
        calls[name] = lambda s=session, a=a: s.run(None, {"a": a})
    times = interleaved_times(calls, args.rounds, warmup=50)
    rows = [{"contender": name, "us": 1e3 * median_ms(t)} for name, t in times.items()]
    for row in rows:
        print(f"{row['contender']:24s} {row['us']:8.1f} us", flush=True)
    result = {**cpu_run_meta(), "rounds": args.rounds, "P": P, "H": H, "K": K, "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
