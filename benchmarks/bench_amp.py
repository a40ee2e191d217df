"""What ``--amp bfloat16`` changes against float32: AUC differences, gate verdicts and speed, in one process.

Example (docs/guides/speed-and-cache.md's bound on the AMP error and its speed-up)::

    python benchmarks/bench_amp.py --checkpoint ../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors \
        --images ../shared/images/imagenet-diverse-200 --out amp.json --markdown

Audits every image twice with the same model, maps, stages, recipe and seed: once with the MoRF/LeRF forwards in float32
and once under ``--amp`` autocast (bfloat16 by default), timing each ``audit_image`` call (even images float32 first,
odd images AMP first; ``--warmup`` untimed rounds on the first image before any timing). AMP only changes the
perturbation forwards: the capture (forward + backward), the maps and the restorations are float32 in both runs, so the
two runs rank pixels identically and every difference comes from the scoring of perturbed images. The speed-up is that
of the whole ``audit_image`` call, so the perturbation alone speeds up by more.

Prints, for every measured map (method@stage), the largest |delta| over the images of its MoRF AUC, LeRF AUC and ABPC
and the 99th percentile of |delta AUC| (MoRF and LeRF pooled), the same over all maps, the total seconds of each run and
their ratio; and for every gated map (``--gate``) the mean ABPC with its 95% bootstrap CI and the gate verdict of each
run, decided by :func:`audit.verdicts.gates.evaluate_gate` as the audit decides it, and whether it flips. ``--amp
float32`` runs float32 twice (a control: every delta must be 0). ``--out`` writes the per-image AUCs and the report as
JSON, also every 10 images; ``--markdown`` prints the gated maps and the overall bound as a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import timm
import torch

from audit import PerturbationConfig, find_images, load_model
from audit.errors import AuditError
from audit.measure.curves import Curves
from audit.measure.image_audit import ImageAudit, audit_image
from audit.model.restore import PatchInverse
from audit.verdicts.gates import MIN_IMAGES, evaluate_gate, gate_inputs

DEFAULT_MODEL = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
DEFAULT_METHODS = "cam,cam_hidden,grad,grad_cls,chefer,random,center"
DEFAULT_GATES = "grad@0,chefer@encoder"
REFERENCE = "float32"
CONTROL = "control"  # the compared run's name when --amp float32 makes it float32 too
PERCENTILE = 99.0


@dataclass
class Run:
    """One arm of the comparison: its name, its recipe and its total seconds."""

    name: str
    config: PerturbationConfig
    seconds: float = 0.0


@dataclass
class ImagePair:
    """The two audits of one image (both None when it could not be audited) and their times."""

    source: str
    reference: ImageAudit | None = None
    amp: ImageAudit | None = None
    seconds: tuple[float, float] = (float("nan"), float("nan"))
    error: str | None = None

    def shared_keys(self) -> list[str]:
        """The maps with curves in both runs, in the float32 run's order."""
        if self.reference is None or self.amp is None:
            return []
        return [key for key in self.reference.curves if key in self.amp.curves]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--stages", default="0,encoder", help="comma list of block indices and/or 'encoder'")
    parser.add_argument("--gate", default=DEFAULT_GATES, help="comma list of method@stage whose verdicts are compared")
    parser.add_argument("--amp", default="bfloat16", choices=["bfloat16", "float16", REFERENCE],
                        help="the dtype compared with float32 ('float32': a control run, every delta must be 0)")
    parser.add_argument("--threshold", type=float, default=0.0, help="mean-ABPC threshold of the gates (default 0)")
    parser.add_argument("--min-images", type=int, default=MIN_IMAGES,
                        help=f"fewer images make a gate inconclusive (default {MIN_IMAGES})")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    parser.add_argument("--warmup", type=int, default=1, metavar="N",
                        help="untimed rounds of both runs on the first image before timing (default 1)")
    parser.add_argument("--markdown", action="store_true", help="print the gated maps and the bound as Markdown")
    parser.add_argument("--out", default=None, help="JSON file of the per-image AUCs and the report")
    args = parser.parse_args(argv)

    methods = args.methods.split(",")
    stages = args.stages.split(",")
    gates = [g.strip() for g in args.gate.split(",") if g.strip()]
    for gate in gates:
        method, _, stage = gate.partition("@")
        if method not in methods or (stage not in stages and not (method == "ig" and stage == "input")):
            parser.error(f"--gate {gate}: expected method@stage with the method in --methods and the stage in "
                         "--stages")

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 on CUDA too
    torch.backends.cudnn.allow_tf32 = False
    loaded = load_model(args.model, args.checkpoint)
    paths = find_images(args.images)[:args.limit]
    amp = None if args.amp == REFERENCE else args.amp
    reference = Run(REFERENCE, PerturbationConfig(steps=args.steps, batch_size=args.batch_size))
    candidate = Run(amp or CONTROL, PerturbationConfig(steps=args.steps, batch_size=args.batch_size, amp=amp))
    inverse = PatchInverse(loaded.model)

    def audit(path: Any, run: Run) -> tuple[ImageAudit, float]:
        begin = time.perf_counter()
        result = audit_image(loaded, path, methods=methods, stages=stages, config=run.config, seed=args.seed,
                             device=args.device, inverse=inverse)
        if torch.device(args.device).type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - begin
        result.image, result.restorations = None, {}  # only the curves and maps are read: keep memory flat
        return result, seconds

    if paths and args.warmup > 0:
        print(f"warm-up: {args.warmup} round(s) of both runs on {paths[0]}", file=sys.stderr, flush=True)
        for _ in range(args.warmup):
            try:
                audit(paths[0], reference)
                audit(paths[0], candidate)
            except AuditError:
                break

    start = time.perf_counter()
    pairs: list[ImagePair] = []
    for index, path in enumerate(paths):
        pair = ImagePair(source=str(path))
        order = (reference, candidate) if index % 2 == 0 else (candidate, reference)
        try:
            done = {run.name: audit(path, run) for run in order}
        except AuditError as err:
            pair.error = str(err)
            pairs.append(pair)
            print(f"[{index + 1}/{len(paths)}] {path}: skipped: {err}", file=sys.stderr, flush=True)
            continue
        (pair.reference, ref_seconds), (pair.amp, amp_seconds) = done[reference.name], done[candidate.name]
        pair.seconds = (ref_seconds, amp_seconds)
        reference.seconds += ref_seconds
        candidate.seconds += amp_seconds
        pairs.append(pair)
        worst = max((abs(d) for key in pair.shared_keys() for d in _deltas(pair, key)[:2]), default=0.0)
        print(f"[{index + 1}/{len(paths)}] {path}: class {pair.reference.target} "
              f"({loaded.class_name(pair.reference.target)}) p={pair.reference.prob:.3f}; {REFERENCE} "
              f"{ref_seconds:.2f} s, {candidate.name} {amp_seconds:.2f} s, max |delta AUC| {worst:.2e}  "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
        if args.out and (index + 1) % 10 == 0:  # a long run killed part-way keeps what it measured
            write(args.out, payload(args, pairs, reference, candidate, gates))

    report = payload(args, pairs, reference, candidate, gates)
    print_report(report)
    if args.markdown:
        print(markdown_table(report))
    if args.out:
        write(args.out, report)
    return 0


def _deltas(pair: ImagePair, key: str) -> tuple[float, float, float]:
    """(delta MoRF AUC, delta LeRF AUC, delta ABPC) of one map on one image, compared run minus float32."""
    ref: Curves = pair.reference.curves[key]
    amp: Curves = pair.amp.curves[key]
    morf, lerf = amp.morf_auc - ref.morf_auc, amp.lerf_auc - ref.lerf_auc
    return morf, lerf, lerf - morf


def _runs(audits: list[tuple[str, ImageAudit]]) -> list[dict[str, Any]]:
    """The audits in the shape of the results file's runs, as far as the gate reads them: every map with curves,
    and every degenerate map with its reason."""
    runs = []
    for source, result in audits:
        maps = {key: {"morf_auc": c.morf_auc, "lerf_auc": c.lerf_auc, "morf": list(c.morf), "lerf": list(c.lerf)}
                for key, c in result.curves.items()}
        maps.update({key: {"morf_auc": None, "reason": m.reason} for key, m in result.maps.items()
                     if m.degenerate and key not in maps})
        runs.append({"image_id": source, "maps": maps})
    return runs


def gate_records(model: str, audits: list[tuple[str, ImageAudit]], gates: list[str], threshold: float, seed: int,
                 min_images: int) -> dict[str, dict[str, Any]]:
    """The gate record of every gated map over one run's audits (:func:`audit.verdicts.gates.gate_inputs`, as the audit
    reads its records), with the random map of its stage beside it."""
    records, runs = {}, _runs(audits)
    for gate in gates:
        method, _, stage = gate.partition("@")
        data, baseline, _ = gate_inputs(runs, method, stage)
        records[gate] = evaluate_gate(model, method, stage, data, threshold=threshold, seed=seed,
                                      min_images=min_images,
                                      baseline=baseline if method != "random" and baseline.images else None)
    return records


def _bound(values: list[float]) -> dict[str, float]:
    data = np.abs(np.asarray(values, dtype=np.float64))
    if data.size == 0:
        return {"max": float("nan"), f"p{PERCENTILE:g}": float("nan")}
    return {"max": float(data.max()), f"p{PERCENTILE:g}": float(np.percentile(data, PERCENTILE))}


def payload(args: argparse.Namespace, pairs: list[ImagePair], reference: Run, candidate: Run,
            gates: list[str]) -> dict[str, Any]:
    """The per-image AUCs and the report so far, with how they were made."""
    measured = [p for p in pairs if p.error is None]
    per_map: dict[str, dict[str, list[float]]] = {}
    for pair in measured:
        for key in pair.shared_keys():
            morf, lerf, abpc = _deltas(pair, key)
            entry = per_map.setdefault(key, {"morf": [], "lerf": [], "abpc": []})
            entry["morf"].append(morf)
            entry["lerf"].append(lerf)
            entry["abpc"].append(abpc)
    maps = {key: {"n_images": len(d["morf"]), "max_abs_delta_morf_auc": _bound(d["morf"])["max"],
                  "max_abs_delta_lerf_auc": _bound(d["lerf"])["max"], "max_abs_delta_abpc": _bound(d["abpc"])["max"],
                  f"p{PERCENTILE:g}_abs_delta_auc": _bound(d["morf"] + d["lerf"])[f"p{PERCENTILE:g}"]}
            for key, d in per_map.items()}
    pooled_auc = [v for d in per_map.values() for v in d["morf"] + d["lerf"]]
    pooled_abpc = [v for d in per_map.values() for v in d["abpc"]]
    auc_bound, abpc_bound = _bound(pooled_auc), _bound(pooled_abpc)

    name = candidate.name
    runs = {REFERENCE: [(p.source, p.reference) for p in measured], name: [(p.source, p.amp) for p in measured]}
    records = {arm: gate_records(args.model, audits, gates, args.threshold, args.seed, args.min_images)
               for arm, audits in runs.items()}
    gated = {}
    for gate in gates:
        ref, amp = records[REFERENCE][gate], records[name][gate]
        gated[gate] = {
            "n_images": ref["n_images"],
            f"abpc_{REFERENCE}": ref["statistic"], f"abpc_{REFERENCE}_ci95": ref["ci95"],
            f"abpc_{name}": amp["statistic"], f"abpc_{name}_ci95": amp["ci95"],
            "delta_abpc": amp["statistic"] - ref["statistic"],
            f"verdict_{REFERENCE}": ref["verdict"], f"verdict_{name}": amp["verdict"],
            "verdict_flips": ref["verdict"] != amp["verdict"],
            f"reason_{REFERENCE}": ref["reason"], f"reason_{name}": amp["reason"],
        }
    ratios = [a / b for a, b in (p.seconds for p in measured) if b > 0]
    return {
        "model": args.model, "checkpoint": args.checkpoint, "device": args.device, "torch": torch.__version__,
        "timm": timm.__version__, "python": platform.python_version(), "seed": args.seed,
        "methods": args.methods.split(","), "stages": args.stages.split(","), "gates": gates,
        "threshold": args.threshold, "min_images": args.min_images, "warmup": args.warmup,
        "reference": REFERENCE, "amp": candidate.config.amp or REFERENCE, "compared": name,
        "perturbation": candidate.config.describe(),
        "n_images": len(measured), "skipped": {p.source: p.error for p in pairs if p.error is not None},
        f"seconds_{REFERENCE}": reference.seconds, f"seconds_{name}": candidate.seconds,
        "speedup": reference.seconds / candidate.seconds if candidate.seconds > 0 else float("nan"),
        "median_image_speedup": float(np.median(ratios)) if ratios else float("nan"),
        "n_maps": len(maps), "n_deltas": len(pooled_auc),
        "max_abs_delta_auc": auc_bound["max"], f"p{PERCENTILE:g}_abs_delta_auc": auc_bound[f"p{PERCENTILE:g}"],
        "max_abs_delta_abpc": abpc_bound["max"],
        "maps": maps, "gated": gated,
        "images": [{"source": p.source, "error": p.error, f"seconds_{REFERENCE}": p.seconds[0],
                    f"seconds_{name}": p.seconds[1],
                    "auc": {key: {REFERENCE: [p.reference.curves[key].morf_auc, p.reference.curves[key].lerf_auc],
                                  name: [p.amp.curves[key].morf_auc, p.amp.curves[key].lerf_auc]}
                            for key in p.shared_keys()}} for p in pairs],
    }


def print_report(report: dict[str, Any]) -> None:
    """The per-map bounds, the gated maps and the timing, as plain text."""
    name, p = report["compared"], f"p{PERCENTILE:g}"
    print(f"{'method@stage':<18} {'n':>3} {'max|dMoRF|':>11} {'max|dLeRF|':>11} {'max|dABPC|':>11} "
          f"{p + '|dAUC|':>11}")
    for key, m in report["maps"].items():
        print(f"{key:<18} {m['n_images']:>3} {m['max_abs_delta_morf_auc']:11.2e} {m['max_abs_delta_lerf_auc']:11.2e} "
              f"{m['max_abs_delta_abpc']:11.2e} {m[p + '_abs_delta_auc']:11.2e}")
    print(f"all {report['n_maps']} maps: max |delta AUC| {report['max_abs_delta_auc']:.2e}, {p} "
          f"{report[p + '_abs_delta_auc']:.2e} over {report['n_deltas']} AUCs; max |delta ABPC| "
          f"{report['max_abs_delta_abpc']:.2e}")
    for gate, g in report["gated"].items():
        ref_ci, amp_ci = g[f"abpc_{REFERENCE}_ci95"], g[f"abpc_{name}_ci95"]
        print(f"gate {gate} (n={g['n_images']}): {REFERENCE} {g[f'abpc_{REFERENCE}']:+.4f} "
              f"[{ref_ci[0]:+.4f}, {ref_ci[1]:+.4f}] {g[f'verdict_{REFERENCE}']}; {name} {g[f'abpc_{name}']:+.4f} "
              f"[{amp_ci[0]:+.4f}, {amp_ci[1]:+.4f}] {g[f'verdict_{name}']}; delta {g['delta_abpc']:+.2e}; "
              f"verdict {'FLIPS' if g['verdict_flips'] else 'unchanged'}")
    for source, error in report["skipped"].items():
        print(f"skipped {source}: {error}")
    print(f"{report['n_images']} images on {report['device']}: {REFERENCE} {report[f'seconds_{REFERENCE}']:.1f} s, "
          f"{name} {report[f'seconds_{name}']:.1f} s, speed-up x{report['speedup']:.2f} "
          f"(median per image x{report['median_image_speedup']:.2f})")


def markdown_table(report: dict[str, Any]) -> str:
    """One row per gated map (mean ABPC [95% CI] and verdict of each run, the change) and a line with the bound."""
    name, p = report["compared"], f"p{PERCENTILE:g}"
    lines = [f"| map | n | {REFERENCE} ABPC [95% CI] | {name} ABPC [95% CI] | delta ABPC | verdict {REFERENCE} | "
             f"verdict {name} | max abs delta AUC |", "| --- |" + " --- |" * 7]
    for gate, g in report["gated"].items():
        ref_ci, amp_ci = g[f"abpc_{REFERENCE}_ci95"], g[f"abpc_{name}_ci95"]
        worst = report["maps"].get(gate)
        bound = max(worst["max_abs_delta_morf_auc"], worst["max_abs_delta_lerf_auc"]) if worst else float("nan")
        lines.append(f"| {gate} | {g['n_images']} | {g[f'abpc_{REFERENCE}']:+.3f} [{ref_ci[0]:+.2f}, {ref_ci[1]:+.2f}] "
                     f"| {g[f'abpc_{name}']:+.3f} [{amp_ci[0]:+.2f}, {amp_ci[1]:+.2f}] | {g['delta_abpc']:+.1e} | "
                     f"{g[f'verdict_{REFERENCE}']} | {g[f'verdict_{name}']} | {bound:.1e} |")
    lines.append(f"\nOver {report['n_images']} images and {report['n_maps']} maps: max |delta AUC| "
                 f"{report['max_abs_delta_auc']:.1e} ({p} {report[p + '_abs_delta_auc']:.1e}), max |delta ABPC| "
                 f"{report['max_abs_delta_abpc']:.1e}; {REFERENCE} {report[f'seconds_{REFERENCE}']:.1f} s, {name} "
                 f"{report[f'seconds_{name}']:.1f} s on {report['device']}, speed-up x{report['speedup']:.2f}.")
    return "\n".join(lines)


def write(path: str, report: dict[str, Any]) -> None:
    with open(path, "w") as handle:
        json.dump(report, handle, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
