"""S4oP against AIRE-Prune on a shipped model: accuracy and measured latency at 10 … 90 % of
the pruning unit removed.

    python examples/compare_s4op.py [--model keywords|digits|charlm|listops] [--seeds 7,42] [--epochs 2]
                                    [--lr 1e-3] [--threads 1] [--train-count N]
                                    [--out examples/results/s4op_MODEL.json]

keywords (S4D, the closest of our models to S4oP's setting): training clips from the keyword
generator (data_keywords.py) KeywordStream(0).epoch(0) (3000), validation clips
KeywordStream(1).epoch(0) (the first 300: other voices and noise), and the shipped eval set
(300 clips, never used for a choice) as the test set. S4D channels all hold N modes, so
bypassing a fraction p of the channels removes p of the states.

digits (S5): the training images of the example's split (data_digits.py ``digit_splits``, the
ones the model was trained on) for fine-tuning, and the shipped eval set (360 images, the only
images it never saw) split in two: the first 180 validate (they choose epochs and seeds), the
last 180 test. An S5 channel's bypass removes its column of B̃, rows of C̃ and D,
but the states stay (shared by the other channels), so p of the channels is not p of the
states: the rows give both counts and the parameters.

charlm (Mamba): 2000 training windows of 128 characters (data_charlm.py ``windows`` of the
training modules, seed 5), and the shipped eval windows (128 × 256 characters of 5 modules
never trained on) split in two: the first 64 validate, the last 64 test; the scores of states
and channels are measured on the shipped calibration windows. A unit there is an inner
channel (of d_inner) or a state (of d_state).

listops (bidirectional S5): generated expressions (data_listops.py, the eval set's lengths
256–2048, none of the eval set's): ``--train-count`` (500) to fine-tune (seed 7), 200 to
validate (seed 8), the shipped eval set (256) to test.

Contenders, every one at the fraction p of its unit removed:

    s4op random        S4oP's loop (aire_export/s4op.py): its per-layer budget, random channels,
                       one candidate per seed, fine-tuned, the best on validation carried on
    channels energy    our channel scores (aire energy of what each bypass changes), Algorithm 1's
                       global threshold, the same incremental loop, one candidate per step
    channels energy, s4op budget
                       S4oP's per-layer budget, each layer's lowest-energy channels
    states aire        AIRE-Prune's states (Algorithm 1), no fine-tuning
    states aire + ft   the same, fine-tuned (from the unpruned model at each p)
    both + ft          channels (energy) then states (aire), each removing 1 − √(1 − p),
                       fine-tuned

Fine-tuning: AdamW at --lr for at most --epochs epochs, patience 2, the best validation epoch
kept (aire_export/finetune.py); S4oP's own budget is 5 epochs at 1e-4 for ListOps, so these
runs fine-tune less than S4oP does. Latency: onnxruntime CPU, batch 1, 100 steps, S4oP's
protocol (50 warm-up, 100 timed runs, median), pruned and unpruned interleaved in rounds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import aire_export as ax  # noqa: E402
from aire_export.data import SequenceData, random_data  # noqa: E402
from aire_export.finetune import FinetuneOptions, eval_accuracy, finetune  # noqa: E402
from aire_export.models import modal_systems  # noqa: E402
from aire_export.prune import PruneOptions, prune_with  # noqa: E402
from aire_export.runtimes.ort import OrtRunner, SessionLoader  # noqa: E402
from aire_export.s4op import candidate, s4op_trial  # noqa: E402
from aire_export.validate.latency import measure_latency  # noqa: E402

SCHEDULE = (0.1, 0.3, 0.5, 0.7, 0.9)


def _as_data(s, name: str, rows: slice = slice(None)) -> SequenceData:
    x = s.x[rows].astype(np.int64 if s.x.dtype.kind in "iu" else np.float32)
    lengths = None if s.lengths is None else s.lengths[rows]
    return SequenceData(x, lengths, s.y[rows], name)


def keyword_sets(count: int | None) -> tuple[SequenceData, SequenceData, SequenceData]:
    from data_keywords import KeywordStream
    from sequence_set import SequenceSet

    train = KeywordStream(0).epoch(0)
    val = KeywordStream(1).epoch(0)
    test = SequenceSet.load(HERE / "data" / "keywords_eval.npz")
    return (
        _as_data(train, "train", slice(count)),
        _as_data(val, "val", slice(300)),
        _as_data(test, "test"),
    )


def digit_sets(count: int | None) -> tuple[SequenceData, SequenceData, SequenceData]:
    from data_digits import digit_splits
    from sequence_set import SequenceSet

    train, _ = digit_splits()
    held_out = SequenceSet.load(HERE / "data" / "digits_eval.npz")
    return (
        _as_data(train, "train", slice(count)),
        _as_data(held_out, "val", slice(180)),
        _as_data(held_out, "test", slice(180, None)),
    )


def charlm_sets(count: int | None) -> tuple[SequenceData, SequenceData, SequenceData]:
    from data_charlm import TRAIN_MODULES, corpus, eval_set, windows

    train = windows(corpus(TRAIN_MODULES), count or 2000, 128, seed=5)
    held_out = eval_set()
    return (
        _as_data(train, "train"),
        _as_data(held_out, "val", slice(64)),
        _as_data(held_out, "test", slice(64, None)),
    )


def listops_sets(count: int | None) -> tuple[SequenceData, SequenceData, SequenceData]:
    from data_listops import generate_listops, token_keys
    from sequence_set import SequenceSet

    test = SequenceSet.load(HERE / "data" / "listops_eval.npz")
    val = generate_listops(200, seed=8, exclude=token_keys(test))
    train = generate_listops(count or 500, seed=7, exclude=token_keys(test) | token_keys(val))
    return _as_data(train, "train"), _as_data(val, "val"), _as_data(test, "test")


MODELS = {  # checkpoint, data sets, calibration data (selective models)
    "keywords": ("checkpoints/s4d_keywords.pt", keyword_sets, None),
    "digits": ("checkpoints/s5_digits.pt", digit_sets, None),
    "charlm": ("checkpoints/mamba_charlm.pt", charlm_sets, "data/charlm_calib.npz"),
    "listops": ("checkpoints/s5_listops.pt", listops_sets, None),
}


def latency(model, unpruned_path: Path, tmp: Path, tag: str, length: int) -> dict:
    """Median ms of the pruned and the unpruned graph, interleaved, and the reduction."""
    feeds = random_data(model, 1, length).feeds()
    path = ax.export(model, tmp / tag, step=False).sequence.path
    runners = {
        n: OrtRunner(SessionLoader(p, "cpu", threads=1))
        for n, p in (("pruned", path), ("unpruned", unpruned_path))
    }
    timed = measure_latency(
        {n: (r.bind(feeds), "cpu") for n, r in runners.items()},
        batch=1, length=length, warmup=50, runs=100, budget_s=1e9, rounds=5,
    )  # fmt: skip
    for r in runners.values():
        r.close()
    p, u = timed["pruned"].p50_ms, timed["unpruned"].p50_ms
    return {"pruned_ms": p, "unpruned_ms": u, "reduction": 1 - p / u}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="keywords")
    parser.add_argument("--seeds", default="7,42")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default=None, help="comma list of contenders")
    parser.add_argument("--schedule", default=",".join(map(str, SCHEDULE)))
    parser.add_argument("--train-count", type=int, default=None, help="training clips used")
    parser.add_argument("--out", type=Path, default=None, help="results/s4op_MODEL.json")
    args = parser.parse_args(argv)
    out = args.out or HERE / "results" / f"s4op_{args.model}.json"
    torch.set_num_threads(args.threads)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    tuning = FinetuneOptions(epochs=args.epochs, lr=args.lr, weight_decay=1e-5, patience=2)

    checkpoint, sets, calib = MODELS[args.model]
    calib = None if calib is None else HERE / calib
    model = ax.load(HERE / checkpoint)
    train, val, test = sets(args.train_count)
    length = int(test.x.shape[1])
    schedule = tuple(float(p) for p in args.schedule.split(","))
    rows: list[dict] = []
    started = time.perf_counter()

    def record(name, p, pruned, val_acc, extra=None):
        rows.append(
            {
                "contender": name,
                "ratio": p,
                "states_kept": int(sum(s.P for s in modal_systems(pruned))),
                "parameters": int(sum(t.numel() for t in pruned.parameters())),
                "val_accuracy": val_acc,
                "test_accuracy": eval_accuracy(pruned, test, 64, "cpu"),
                "latency": latency(
                    pruned, unpruned, tmp, f"{name}-{p}".replace(" ", "_").replace(",", ""), length
                ),
                "elapsed_s": round(time.perf_counter() - started, 1),
                **(extra or {}),
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    chosen = set(args.only.split(",")) if args.only else None
    wanted = lambda name: chosen is None or name in chosen  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        unpruned = ax.export(model, tmp / "unpruned", step=False).sequence.path
        base = {
            "val": eval_accuracy(model, val, 64, "cpu"),
            "test": eval_accuracy(model, test, 64, "cpu"),
        }
        print(json.dumps({"unpruned": base}), flush=True)
        loops = (
            ("s4op random", "random", seeds),
            ("channels energy", "energy", (None,)),
            ("channels energy, s4op budget", "budget", (None,)),
        )
        for name, select, seed_list in loops:
            if not wanted(name):
                continue
            current = model
            for step, p in enumerate(schedule, 1):
                trials = [
                    s4op_trial((current, train, val, step, p, select, tuning), s) for s in seed_list
                ]
                trial, tuned = max(trials, key=lambda t: t[0].accuracy_after)
                current = tuned.model
                record(name, p, current, trial.accuracy_after, {
                    "seed": trial.seed, "before_finetune_val": trial.accuracy_before,
                    "candidates": [{"seed": t.seed, "val": t.accuracy_after} for t, _ in trials],
                })  # fmt: skip
        for p in schedule:
            states, _ = prune_with(model, PruneOptions(ratio=p, certificates=False), calib)
            if wanted("states aire"):
                record("states aire", p, states, eval_accuracy(states, val, 64, "cpu"))
            if wanted("states aire + ft"):
                tuned = finetune(states, train, val, tuning)
                record(
                    "states aire + ft",
                    p,
                    tuned.model,
                    tuned.after,
                    {"before_finetune_val": tuned.before},
                )
            if wanted("both + ft"):
                each = 1 - math.sqrt(1 - p)
                channels = candidate(model, each, "energy", None, calib)
                both, _ = prune_with(channels, PruneOptions(ratio=each, certificates=False), calib)
                tuned = finetune(both, train, val, tuning)
                record(
                    "both + ft", p, tuned.model, tuned.after, {"before_finetune_val": tuned.before}
                )
    result = {
        "model": f"examples/{checkpoint}",
        "latency_length": length,
        "command": " ".join(["python", *sys.argv]),
        "schedule": list(schedule),
        "seeds": list(seeds),
        "finetune": {"epochs": args.epochs, "lr": args.lr, "weight_decay": 1e-5, "patience": 2},
        "threads": args.threads,
        "unpruned": base,
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
