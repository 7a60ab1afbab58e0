"""``report.md``: the report for a person, from the same typed report as ``report.json``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aire_export.json_values import finite_or_none
from aire_export.report.record import export_json

if TYPE_CHECKING:
    from aire_export.report.record import Report


def fmt(value: float | None, spec: str = ".3g") -> str:
    """A number for a table: "–" when it is missing or not finite."""
    value = finite_or_none(value)
    return "–" if value is None else format(value, spec)


def render_markdown(report: Report) -> str:
    r, v = report, report.validation
    name = Path(r.model.path).name if r.model else "model"
    verdict = r.verdict
    lines = [
        f"# aire-export report: {name}",
        "",
        f"**Verdict: {'PASSED' if verdict.passed else 'FAILED'}** (exit code {verdict.exit_code})"
        + ("" if not verdict.reasons else ": " + "; ".join(verdict.reasons)),
        "",
        f"Command: `{r.command}`",
    ]
    if r.model is not None:
        m = r.model
        lines += [
            "",
            "## Summary",
            "",
            "| | original | pruned |",
            "|---|---|---|",
            f"| states | {m.states_before} | {m.states_after} |",
            f"| stored state slots | {m.states_before} | {m.physical_states_after} |",
            f"| parameters | {m.parameters_before:,} | {m.parameters_after:,} |",
            f"| parameter bytes (fp32) | {m.parameter_bytes_before:,} | "
            f"{m.parameter_bytes_after:,} |",
        ]
        if r.export is not None:
            for graph in (r.export.sequence, r.export.step):
                if graph is not None:
                    lines.append(f"| {graph.path.name} bytes | | {graph.bytes:,} |")
    if v.accuracy:
        a = v.accuracy
        lines.append(
            f"| accuracy ({a.samples} samples) | {100 * a.original:.2f} % | "
            f"{100 * a.pruned:.2f} % ({-a.drop_pp:+.2f} pp) |"
        )
    for s in v.speedups:
        lines.append(f"| latency speedup, {s.runtime} | 1.00× | {s.ratio:.2f}× |")
    if r.plan is not None:
        plan = r.plan
        lines += [
            "",
            f"Method `{plan.method}`, ratio "
            + (
                f"chosen by the --max-drop search {fmt(r.search.ratio, '.4g')}"
                if r.search is not None
                else f"requested {plan.ratio_requested}"
            )
            + ", achieved "
            f"{fmt(plan.ratio_achieved, '.4f')}, threshold τ = {fmt(plan.threshold)}, "
            f"eps = {plan.eps}."
            + (
                " Unit: whole operators (channels, S4oP): a pruned channel's SSM is removed "
                "and its input passes through (y = u); the ratio counts channels, and no LTI "
                "certificate is given (the bypass changes D too)."
                if plan.unit == "channel"
                else ""
            ),
            "",
            "## Pruning plan",
            "",
        ]
        selective = any(layer.calib_distortion is not None for layer in plan.layers)
        if selective:
            lines += [
                "Selective layers: the LTI certificate (a bound on ‖G−G̃‖∞) does not apply to "
                "an input-dependent system; the relative change of each layer's scan output "
                "when its pruned states are removed, measured on the calibration data "
                "(--calib), is reported instead.",
                "",
                "| layer | states before | after | measured distortion on --calib |",
                "|---|---|---|---|",
            ]
        else:
            lines += [
                "| layer | states before | after | certificate bound ‖G−G̃‖∞ | measured H∞ "
                "| exact H2 |",
                "|---|---|---|---|---|---|",
            ]
        for layer in plan.layers:
            cert = layer.certificate
            bounds = (cert.bound, cert.measured_hinf, cert.h2) if cert else (None, None, None)
            lines.append(
                f"| {layer.index} | {layer.states_before} | "
                f"{layer.states_after}{' (dropped)' if layer.states_after == 0 else ''} | "
                + " | ".join(fmt(b) for b in ((layer.calib_distortion,) if selective else bounds))
                + " |"
            )
    if r.search is not None:
        s = r.search
        lines += [
            "",
            "## Accuracy budget search (--max-drop)",
            "",
            f"The largest ratio found (the grid, then bisection below the first grid ratio over "
            f"the budget) whose accuracy on the eval set drops at most {s.budget_pp:g} pp "
            f"from {100 * s.baseline_accuracy:.2f} %: {s.ratio:.4g} "
            f"({100 * s.accuracy:.2f} %, {-s.drop_pp:+.2f} pp)"
            + (
                ""
                if s.next_grid_ratio is None
                else f"; the next grid ratio, {s.next_grid_ratio:.4g}, loses "
                f"{s.next_grid_drop_pp:.2f} pp"
            )
            + ".",
            "",
            "| ratio | achieved | units kept | accuracy | drop (pp) |",
            "|---|---|---|---|---|",
            *(
                f"| {p.ratio:.4g}{' (chosen)' if p.ratio == s.ratio else ''} | "
                f"{p.ratio_achieved:.3f} | {p.states_kept} | {100 * p.accuracy:.2f} % | "
                f"{p.drop_pp:.2f} |"
                for p in sorted(
                    {p.ratio: p for p in reversed(s.curve)}.values(), key=lambda p: p.ratio
                )
            ),
        ]
    if r.latency_search is not None:
        b = r.latency_search
        lines += [
            "",
            "## Latency budget",
            "",
            f"The least pruning whose graph runs within {b['budget_ms']:g} ms on {b['runtime']} "
            f"(batch {b['batch']}, {b['length']} steps, {b['warmup']} warm-up runs, median of "
            f"the timed runs): ratio {b['ratio']:.2f}, {b['p50_ms']:.4g} ms.",
            "",
            "| ratio | achieved | median ms | fastest ms | p90 ms | runs | confirmed median ms |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {p['ratio']:.2f}{' (chosen)' if p['ratio'] == b['ratio'] else ''} | "
                f"{p['ratio_achieved']:.3f} | {p['p50_ms']:.4g} | {p['min_ms']:.4g} | "
                f"{p['p90_ms']:.4g} | {p['runs']} | {fmt(p['confirmed_ms'], '.4g')} |"
                for p in b["curve"]
            ),
        ]
    if r.finetune is not None:
        f = r.finetune
        lines += [
            "",
            "## Recovery fine-tuning",
            "",
            f"On `{f['train_data']}`, AdamW lr {f['lr']:g}, weight decay {f['weight_decay']:g}, "
            f"batch {f['batch_size']}, seed {f['seed']}, {f['device']}; the best epoch on "
            f"`{f['eval_data']}` was kept (patience {f['patience']}). Because that set chose "
            "the epoch, the pruned accuracy measured on it is optimistic.",
            "",
            "| epoch | train loss | eval accuracy |",
            "|---|---|---|",
            *(
                f"| {h['epoch']}{' (kept)' if h['epoch'] == f['best_epoch'] else ''} | "
                f"{fmt(h['train_loss'], '.4f')} | {100 * h['eval_accuracy']:.2f} % |"
                for h in f["history"]
            ),
        ]
    if v.distortion:
        d = v.distortion
        lines += [
            "",
            "## Pruning distortion (original vs pruned, both PyTorch float64)",
            "",
            f"Relative output error {fmt(d.normwise_rel)}, max abs {fmt(d.max_abs)}, top-1 "
            f"agreement {fmt(d.top1_agreement, '.4f')} over {d.samples} samples.",
        ]
    lines += ["", "## Lowering fidelity (pruned PyTorch float64 vs each runtime)", ""]
    if v.parity:
        lines += [
            "| graph | runtime | precision | inputs | output | max abs | max rel | cosine | top-1 "
            "| atol / rtol | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in v.parity:
            covered = f"{p.samples} × {p.length} steps of `{p.inputs}`" if p.inputs else ""
            for o in p.outputs:
                lines.append(
                    f"| {p.graph} | {p.runner} | {p.precision} | {covered} | {o.name} | "
                    f"{fmt(o.max_abs)} | "
                    f"{fmt(o.max_rel)} | {fmt(o.cosine, '.6f')} | {fmt(o.top1_agreement, '.4f')} | "
                    f"{o.atol:.3g} / {o.rtol:.3g} | "
                    f"{'PASSED' if o.passed else f'FAILED ({o.failing})'} |"
                )
        lines.append("")
        lines += [f"- {o.verdict()}" for p in v.parity for o in p.outputs]
    else:
        lines.append("No runtime was run.")
    if v.latency:
        lines += [
            "",
            "## Latency",
            "",
            "| runner | device | batch × length | p50 ms | p90 ms | p99 ms | mean ms | sequences/s "
            "| runs |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t in v.latency:
            lines.append(
                f"| {t.name} | {t.device} | {t.batch} × {t.length} | {t.p50_ms:.3f} | "
                f"{t.p90_ms:.3f} | {t.p99_ms:.3f} | {t.mean_ms:.3f} | {t.sequences_per_s:,.1f} | "
                f"{t.runs} |"
            )
        lines.append("")
        lines.append("Original and pruned were timed in the same process, interleaved in rounds.")
    if r.export is not None:
        exp = export_json(r.export, r.target)
        lines += ["", "## Export", ""]
        lines += [f"- {key}: {exp[key]}" for key in ("target", "scan", "precision", "opset")]
        lines += [f"- `{name}`: {_graph_line(info)}" for name, info in exp["graphs"].items()]
        if "tensorrt_check" in exp:
            lines.append(f"- TensorRT operator check: {exp['tensorrt_check']}")
    if r.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in r.warnings]
    if v.unverified:
        lines += ["", "## Not verified", ""] + [f"- {u}" for u in v.unverified]
    if r.plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in r.plots]
    env = r.environment
    if env:
        lines += [
            "",
            "## Environment",
            "",
            ", ".join(
                f"{k} {v}" for k, v in env.items() if v is not None and not isinstance(v, list)
            ),
        ]
    return "\n".join(lines) + "\n"


def _graph_line(info: dict) -> str:
    """A graph's export record as words: ``sequence graph, scan lowering, fp32, opset 17, 437
    nodes, 560,646 bytes`` (and its frame, its longest length when it has one)."""
    words = [f"{info.get('mode', '?')} graph", f"{info.get('scan', '?')} lowering"]
    words += [str(info.get("precision", "?")), f"opset {info.get('opset', '?')}"]
    if "nodes" in info:
        words.append(f"{info['nodes']:,} nodes")
    if "bytes" in info:
        words.append(f"{info['bytes']:,} bytes")
    if info.get("frame", 1) != 1:
        words.append(f"{info['frame']} steps per call")
    if info.get("max_length") is not None:
        words.append(f"at most {info['max_length']:,} steps")
    return ", ".join(words)
