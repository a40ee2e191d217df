"""Faithfulness of every map at every stage over an image set: the numbers a gating policy is chosen from.

Example (docs/evidence/calibrations.md's table)::

    python benchmarks/calibrate.py --model vit_tiny_patch16_224.augreg_in21k_ft_in1k \
        --checkpoint ../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors \
        --images ../shared/images/imagenet-persian-cat --out calibration.json

Prints one row per (method, stage): mean MoRF AUC, LeRF AUC and ABPC over the images with seeded 95% bootstrap CIs, and
writes them (with the per-image AUCs and how they were made) as JSON. ``--fill``, ``--score top1`` with ``--labels`` and
``--steps`` set the recipe as the audit's options do; ``--markdown`` prints the documentation's tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict

import timm
import torch

from audit import PerturbationConfig, find_images, load_model, summarize_audits
from audit.errors import AuditError
from audit.maps import DEFAULT_METHODS
from audit.measure.image_audit import ImageAudit, audit_image
from audit.model.restore import PatchInverse
from audit.run.inputs import read_labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--stages", default="all", help="comma list of block indices and/or 'encoder', or 'all'")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--amp", default=None, choices=[None, "bfloat16", "float16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fill", default="grey", help="grey, black, mean, blur, road, or a pixel value")
    parser.add_argument("--score", default="prob", choices=["prob", "top1"])
    parser.add_argument("--labels", default=None, help="CSV with columns file and class_index (for --score top1)")
    parser.add_argument("--maps", default=None, help="comma list of method@stage: only these get curves (their "
                        "stages must be in --stages)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (mean ABPC, 95%% CI)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 on CUDA too
    torch.backends.cudnn.allow_tf32 = False
    loaded = load_model(args.model, args.checkpoint)
    paths = find_images(args.images)
    stages = None if args.stages == "all" else args.stages.split(",")
    fill = args.fill
    try:
        fill = float(fill)
    except ValueError:
        pass
    config = PerturbationConfig(steps=args.steps, fill=fill, batch_size=args.batch_size, amp=args.amp,
                                score=args.score)
    labels = read_labels(args.labels) if args.labels else None
    start = time.perf_counter()

    def report(index: int, result) -> None:
        status = result.error or f"class {result.target} ({loaded.class_name(result.target)}) p={result.prob:.3f}"
        print(f"[{index + 1}/{len(paths)}] {result.source}: {status}  ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr, flush=True)

    inverse = PatchInverse(loaded.model)
    results = []
    for index, path in enumerate(paths):
        try:
            result = audit_image(loaded, path, methods=args.methods.split(","), stages=stages, config=config,
                                 seed=args.seed, device=args.device, inverse=inverse,
                                 label=labels.of(str(path)) if labels else None,
                                 curves_for=args.maps.split(",") if args.maps else None)
        except AuditError as err:
            result = ImageAudit(image=None, source=str(path), error=str(err))
        results.append(result)
        report(index, result)
        if args.out and (index + 1) % 10 == 0:  # a long run killed part-way keeps what it measured
            write(args, loaded, config, labels, results, time.perf_counter() - start)
    elapsed = time.perf_counter() - start
    summaries = summarize_audits(results, seed=args.seed)
    print(f"{'method@stage':<18} {'n':>3} {'MoRF AUC':>22} {'LeRF AUC':>22} {'ABPC':>24}")
    for s in summaries:
        print(f"{s.method + '@' + s.stage:<18} {s.n_images:>3} "
              f"{s.morf_auc:6.3f} [{s.morf_auc_ci[0]:6.3f},{s.morf_auc_ci[1]:6.3f}] "
              f"{s.lerf_auc:6.3f} [{s.lerf_auc_ci[0]:6.3f},{s.lerf_auc_ci[1]:6.3f}] "
              f"{s.abpc:+7.3f} [{s.abpc_ci[0]:+7.3f},{s.abpc_ci[1]:+7.3f}]")
    if args.markdown:
        print(markdown_table(summaries))
    degenerate = sorted({f"{k}: {m.reason}" for r in results for k, m in r.maps.items() if m.degenerate})
    print(f"{len(results)} images in {elapsed:.1f} s on {args.device}; degenerate maps: {degenerate}")
    if args.out:
        write(args, loaded, config, labels, results, elapsed)
    return 0


def write(args, loaded, config, labels, results, elapsed: float) -> None:
    """The per-image AUCs and the summaries so far, with how they were made, as JSON at ``args.out``."""
    payload = {
        "model": args.model, "checkpoint": args.checkpoint, "device": args.device,
        "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
        "seed": args.seed, "perturbation": config.describe(), "seconds": elapsed,
        "labels": labels.path if labels else None,
        "images": [{"source": r.source, "class": r.target, "label": r.label, "prob": r.prob, "error": r.error,
                    "auc": {k: [c.morf_auc, c.lerf_auc] for k, c in r.curves.items()}} for r in results],
        "summaries": [asdict(s) for s in summarize_audits(results, seed=args.seed)],
    }
    with open(args.out, "w") as handle:
        json.dump(payload, handle, indent=1)


def markdown_table(summaries) -> str:
    """Mean ABPC [95% CI] of every (method, stage), methods as rows and stages as columns."""
    stages = list(dict.fromkeys(s.stage for s in summaries))
    stages.sort(key=lambda st: (st == "encoder", st != "input", int(st) if st.isdigit() else 0))
    methods = list(dict.fromkeys(s.method for s in summaries))
    cells = {(s.method, s.stage): f"{s.abpc:+.3f} [{s.abpc_ci[0]:+.2f}, {s.abpc_ci[1]:+.2f}]" for s in summaries}
    lines = ["| map | " + " | ".join(stages) + " |", "| --- |" + " --- |" * len(stages)]
    lines += [f"| {m} | " + " | ".join(cells.get((m, st), "") for st in stages) + " |" for m in methods]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
