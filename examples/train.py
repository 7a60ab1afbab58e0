"""Train one of the example models, evaluate it on its held-out set, and save both.

    python examples/train.py digits|listops|keywords|charlm [--epochs N] [--seed S]
                             [--device cpu|cuda] [--threads T] [--out DIR]

writes DIR/checkpoints/<model>.pt (``aire_export.save``), DIR/data/<task>_eval.npz (and
<task>_calib.npz, the calibration set of a selective model) and the model's entry in
DIR/models.json (DIR defaults to this folder). Progress is printed per epoch.

Recipe (S5 reference ``train_helpers.py``; S4D reference ``example.py``; Mamba reference
``mamba_simple.py``), AdamW with two groups:

    SSM group:  Λ (Lambda_re, Lambda_im), B̃, log Δ (S5); log Δ, log A_re, A_im (S4D); A_log, D
                (Mamba); and the norms: lr = ssm_lr, no weight decay
    the rest:   lr = lr, weight decay = weight_decay
    schedule:   both lrs × s(t): linear warm-up over the first warmup_epochs, then cosine to 0
    loss:       cross-entropy per sequence (classifiers) or per position (the language model),
                gradients clipped to norm ``clip`` where the task sets one

The saved model is the one after the last epoch (no selection on the eval set).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sequence_set import SequenceSet, accuracy

import aire_export
from aire_export.models import S4DConfig, S4DModel, S5Config, S5Model, SSMNetwork
from aire_export.models.mamba import MambaConfig, MambaLM, init_mamba
from aire_export.models.s4d import init_s4d
from aire_export.models.s5_init import init_s5

HERE = Path(__file__).resolve().parent
SSM_PARAMETERS = {"Lambda_re", "Lambda_im", "B", "log_step", "log_dt", "log_A_real", "A_imag"}
MAMBA_PARAMETERS = {"A_log", "D"}  # mamba_simple.py: no weight decay on these


@dataclass(frozen=True)
class TrainingData:
    """What a task trains and evaluates on.

    epoch(i): the training set of epoch i (fixed, or freshly drawn from a seed).
    epoch_size: sequences per epoch.
    held_out: the eval set, as stored in the npz (its measured accuracy is the one reported).
    calibration: inputs x for ``--calib`` (selective models), drawn apart from both, or None.
    """

    epoch: Callable[[int], SequenceSet]
    epoch_size: int
    held_out: SequenceSet
    calibration: np.ndarray | None = None


@dataclass(frozen=True)
class Task:
    model_name: str
    dataset: str
    build: Callable[[int], SSMNetwork]
    data: Callable[[int], TrainingData]
    epochs: int
    batch_size: int
    lr: float
    ssm_lr: float
    weight_decay: float
    warmup_epochs: float = 1.0
    eval_every: int = 1  # epochs between progress evaluations on the held-out set
    ssm_parameters: frozenset[str] = frozenset(SSM_PARAMETERS)
    clip: float | None = None  # gradient norm clipping


# ---- the three tasks ------------------------------------------------------------------------
def build_s5_digits(seed: int) -> SSMNetwork:
    config = S5Config(
        d_input=1,
        d_model=64,
        d_output=10,
        state_sizes=[32] * 4,
        activation="half_glu1",
        clip_eigs=True,
        dropout=0.1,
    )
    return init_s5(S5Model(config), blocks=4, C_init="lecun_normal", seed=seed)


def digits_data(seed: int) -> TrainingData:
    from data_digits import digit_splits

    train, held_out = digit_splits()  # the split is fixed (seed 0); the training seed varies
    return TrainingData(epoch=lambda i: train, epoch_size=len(train), held_out=held_out)


def build_s5_listops(seed: int) -> SSMNetwork:
    from data_listops import VOCAB

    config = S5Config(
        d_input=len(VOCAB),
        d_model=64,
        d_output=10,
        state_sizes=[32] * 4,
        input_kind="tokens",
        bidirectional=True,
        activation="half_glu2",
        dropout=0.0,
    )
    return init_s5(S5Model(config), blocks=8, C_init="lecun_normal", seed=seed)


LISTOPS_PER_EPOCH = 2000
# Expression lengths per epoch: short expressions first (the four operators are learnt within
# minutes on them), then longer ones up to the LRA range of the eval set; epochs past the list
# repeat its last range. Every batch is padded to the range's maximum, as the eval set is
# padded to 2048: the backward scan of a bidirectional layer reads the padding, so a model
# trained without padding fails on padded inputs.
LISTOPS_CURRICULUM = ((16, 128),) * 6 + ((64, 512),) * 3 + ((128, 1024),) * 2 + ((256, 2048),)


def listops_data(seed: int) -> TrainingData:
    from data_listops import eval_set, generate_listops, token_keys

    held_out = eval_set()
    exclude = token_keys(held_out)

    def epoch(i: int) -> SequenceSet:
        low, high = LISTOPS_CURRICULUM[min(i, len(LISTOPS_CURRICULUM) - 1)]
        return generate_listops(
            LISTOPS_PER_EPOCH,
            seed=seed * 100_003 + i,
            min_length=low,
            max_length=high,
            exclude=exclude,
        )

    return TrainingData(epoch=epoch, epoch_size=LISTOPS_PER_EPOCH, held_out=held_out)


def build_s4d_keywords(seed: int) -> SSMNetwork:
    from data_keywords import FRAME, WORDS

    config = S4DConfig(
        d_input=FRAME, d_model=64, d_output=len(WORDS), state_sizes=[32] * 4, dropout=0.1
    )
    return init_s4d(S4DModel(config), seed=seed)


def keywords_data(seed: int) -> TrainingData:
    from data_keywords import KeywordStream, eval_set

    stream = KeywordStream(seed)
    return TrainingData(epoch=stream.epoch, epoch_size=len(stream.labels), held_out=eval_set())


def build_mamba_charlm(seed: int) -> MambaLM:
    from data_charlm import VOCAB

    config = MambaConfig(d_model=64, state_sizes=[16, 16], vocab_size=VOCAB, d_inner=128, dt_rank=4)
    return init_mamba(MambaLM(config), seed=seed)


CHARLM_PER_EPOCH, CHARLM_WINDOW = 16_000, 128


def charlm_data(seed: int) -> TrainingData:
    from data_charlm import TRAIN_MODULES, calibration_set, corpus, eval_set, windows

    text = corpus(TRAIN_MODULES)

    def epoch(i: int) -> SequenceSet:  # fresh random windows of the training text
        return windows(text, CHARLM_PER_EPOCH, CHARLM_WINDOW, seed * 100_003 + i)

    return TrainingData(epoch, CHARLM_PER_EPOCH, eval_set(), calibration_set())


TASKS = {
    "digits": Task(
        model_name="s5_digits",
        dataset="sklearn load_digits, 8×8 → 32×32 bilinear, pixel by pixel (L=1024, d_input=1)",
        build=build_s5_digits,
        data=digits_data,
        epochs=12,
        batch_size=32,
        lr=0.008,
        ssm_lr=0.004,
        weight_decay=0.01,
    ),
    "listops": Task(
        model_name="s5_listops",
        dataset="ListOps (LRA rules), lengths 256–2048, tokens (vocabulary 16, pad 0)",
        build=build_s5_listops,
        data=listops_data,
        epochs=15,
        batch_size=32,
        lr=0.004,
        ssm_lr=0.002,
        weight_decay=0.04,
        eval_every=5,
    ),
    "keywords": Task(
        model_name="s4d_keywords",
        dataset="espeak-ng keywords (10 words), 1 s at 16 kHz → 8 kHz, 10 ms frames (L=100, d_input=80)",
        build=build_s4d_keywords,
        data=keywords_data,
        epochs=30,
        batch_size=32,
        lr=0.01,
        ssm_lr=0.001,
        weight_decay=0.01,
    ),
    "charlm": Task(
        model_name="mamba_charlm",
        dataset="Python standard library source, bytes (vocabulary 128); eval: 128 windows of "
        "256 characters from 5 modules never trained on",
        build=build_mamba_charlm,
        data=charlm_data,
        epochs=8,
        batch_size=32,
        lr=0.003,
        ssm_lr=0.003,
        weight_decay=0.01,
        warmup_epochs=0.2,
        eval_every=2,
        ssm_parameters=frozenset(MAMBA_PARAMETERS),
        clip=1.0,
    ),
}


# ---- training ---------------------------------------------------------------------------------
def parameter_groups(model: SSMNetwork, task: Task) -> list[dict]:
    """The two AdamW groups of the module docstring."""
    ssm, rest = [], []
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        is_norm = ".norm." in f".{name}"
        (ssm if leaf in task.ssm_parameters or is_norm else rest).append(p)
    return [
        {"params": ssm, "lr": task.ssm_lr, "weight_decay": 0.0},
        {"params": rest, "lr": task.lr, "weight_decay": task.weight_decay},
    ]


def lr_scale(step: int, warmup: int, total: int) -> float:
    """s(t): linear warm-up to 1 over ``warmup`` steps, then cosine from 1 to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def batches(
    data: SequenceSet, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """The set in shuffled batches of (x, y, lengths)."""
    order = rng.permutation(len(data))
    for start in range(0, len(order), batch_size):
        yield data.batch(order[start : start + batch_size])


def train(task: Task, epochs: int, seed: int, device: str) -> tuple[SSMNetwork, SequenceSet]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = task.data(seed)
    model = task.build(seed).to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, task))
    steps_per_epoch = math.ceil(data.epoch_size / task.batch_size)
    total = epochs * steps_per_epoch
    warmup = round(task.warmup_epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_scale(step, warmup, total)
    )
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        seen = correct = 0
        loss_sum = 0.0
        for x, y, lengths in batches(data.epoch(epoch), task.batch_size, rng):
            x, y = x.to(device), y.to(device)
            lengths = None if lengths is None else lengths.to(device)
            out = model(x, lengths)
            # per sequence (B, C) or per position (B, L, V); on log_softmax outputs too
            loss = F.cross_entropy(out.flatten(0, -2), y.flatten(), ignore_index=-100)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if task.clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), task.clip)
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * y.numel()
            correct += int((out.argmax(-1) == y).sum())
            seen += y.numel()
        report = f"epoch {epoch + 1}/{epochs}  loss {loss_sum / seen:.4f}  train acc {correct / seen:.4f}"
        if (epoch + 1) % task.eval_every == 0 and epoch + 1 < epochs:  # main() measures the last
            report += f"  eval acc {accuracy(model, data.held_out):.4f}"
        print(f"{report}  ({time.perf_counter() - start:.0f} s)", flush=True)
    return model.cpu().eval(), data


def summary(model: SSMNetwork) -> str:
    c = model.config
    if isinstance(model, MambaLM):
        return (
            f"Mamba-1 language model, {c.n_layers} layers, d_model={c.d_model}, "
            f"d_inner={c.d_inner}, d_state {c.state_sizes}, vocabulary {c.vocab_size}, tied head"
        )
    kind = "bidirectional" if model.bidirectional else "unidirectional"
    return (
        f"{model.arch.upper()} {kind}, {c.n_layers} layers, H={c.d_model}, "
        f"states {c.state_sizes}, {c.input_kind} input d_input={c.d_input}, "
        f"{c.norm}norm, pooling {c.pooling}, {c.d_output} classes"
    )


def update_registry(path: Path, name: str, entry: dict) -> None:
    registry = json.loads(path.read_text()) if path.exists() else {}
    registry[name] = entry
    path.write_text(json.dumps(dict(sorted(registry.items())), indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--epochs", type=int, help="default: the task's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = TASKS[args.task]
    epochs = args.epochs or task.epochs

    start, cpu_start = time.perf_counter(), time.process_time()
    model, data = train(task, epochs, args.seed, args.device)
    held_out = data.held_out
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    eval_accuracy = accuracy(model, held_out)
    majority = held_out.majority_accuracy()
    command = "python examples/train.py " + " ".join(argv)

    checkpoint = args.out / "checkpoints" / f"{task.model_name}.pt"
    eval_path = args.out / "data" / f"{args.task}_eval.npz"
    for folder in (checkpoint.parent, eval_path.parent):
        folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "dataset": task.dataset,
        "seed": args.seed,
        "epochs": epochs,
        "eval_accuracy": eval_accuracy,
        "majority_accuracy": majority,
        "eval_data": f"data/{eval_path.name}",
        "train_command": command,
        "train_wall_time_s": round(wall, 1),
    }
    aire_export.save(model, checkpoint, meta=meta)
    held_out.save(eval_path)
    calib_path = None
    if data.calibration is not None:
        calib_path = args.out / "data" / f"{args.task}_calib.npz"
        np.savez_compressed(calib_path, x=data.calibration)
    entry = {
        "checkpoint": f"checkpoints/{checkpoint.name}",
        "eval_data": f"data/{eval_path.name}",
        "task": args.task,
        "dataset": task.dataset,
        "architecture": summary(model),
        "config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "checkpoint_bytes": checkpoint.stat().st_size,
        "eval_data_bytes": eval_path.stat().st_size,
        "eval_count": len(held_out),
        "eval_accuracy": round(eval_accuracy, 4),
        "majority_accuracy": round(majority, 4),
        "train_command": command,
        "train_wall_time_s": round(wall, 1),
        "train_cpu_time_s": round(cpu, 1),
        "train_device": f"{args.device}, {args.threads} torch thread(s)",
        "trained_on": date.today().isoformat(),
        "torch": torch.__version__,
    }
    if calib_path is not None:
        entry["calib_data"] = f"data/{calib_path.name}"
        entry["python"] = sys.version.split()[0]  # the training text is its stdlib
    update_registry(args.out / "models.json", task.model_name, entry)
    print(
        f"{task.model_name}: eval accuracy {eval_accuracy:.4f} (majority class {majority:.4f}) "
        f"on {len(held_out)} held-out sequences; {wall:.0f} s wall, {cpu:.0f} s CPU; saved {checkpoint}"
    )


if __name__ == "__main__":
    main()
