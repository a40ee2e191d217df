"""Right for the right reasons, measured: does the release gate, run as the documentation recommends, fail a candidate
that learned a shortcut and pass benign ones? The numbers of docs/guides/right-reasons.md's table.

Example (the candidates are made by the training script; see docs/guides/right-reasons.md)::

    python -m audit.zoo.fashion_mnist --out R/shortcut6 --shortcut 6
    python -m audit.zoo.fashion_mnist --out R/shortcut6_rate50 --shortcut 6 --shortcut-rate 0.5
    python -m audit.zoo.fashion_mnist --out R/stamp10 --stamp-rate 0.1
    for s in 1 2 3; do python -m audit.zoo.fashion_mnist --out R/seed$s --seed $s; done
    python benchmarks/shortcut_gate.py --out /tmp/shortcut --test-images 200 \
        --benign R/seed1 R/seed2 R/seed3 R/stamp10 --harmful R/shortcut6 R/shortcut6_rate50

Writes ``--test-images`` Fashion-MNIST test images (N/10 per class) and their exact object masks (pixels above 0) under
``--out``; audits the shipped weights (the released model) on them with the default policy, ``--regions`` (the masks)
and ``--probe`` (default ``square:white:4@top-left``, the training script's stamp); adds a bfloat16 copy of the shipped
weights to the benign candidates; then runs every candidate with ``--baseline`` and prints, per candidate, each gate's
verdict and the statistics the margins rest on, the run's exit status, and, over the benign candidates, the smallest
margin (a multiple of 0.01) under which every benign candidate passes each new gate.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from audit_cli import run_audit
from PIL import Image
from safetensors.torch import load_file, save_file

PROBE = "square:white:4@top-left"


# the release gate's checks (the per-image faithfulness, restoration and randomisation checks are not needed here)
CHECKS = "gate or compare or reasons"


def _images(folder: Path, count: int, offset: int) -> tuple[Path, Path]:
    """``count`` test images (count/10 per class from each class's ``offset``-th) and their object masks."""
    from audit.zoo import object_mask
    from audit.zoo.fashion_mnist.train import DEFAULT_DATA, class_slug, load_split

    images, labels = load_split(DEFAULT_DATA, "test")
    pictures, masks = folder / "images", folder / "masks"
    for target in (pictures, masks):
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
    for label in range(10):
        for k, index in enumerate(np.flatnonzero(labels == label)[offset:offset + max(1, count // 10)]):
            name = f"{class_slug(label)}_{offset + k:03d}.png"
            Image.fromarray(images[index]).save(pictures / name)
            Image.fromarray(object_mask(images[index])).save(masks / name)
    return pictures, masks


def _ci(values: list[float]) -> str:
    return f"[{values[0]:+.3f}, {values[1]:+.3f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benign", nargs="*", default=[], type=Path,
                        help="folders (or checkpoints) of benign retrains")
    parser.add_argument("--harmful", nargs="*", default=[], type=Path,
                        help="folders (or checkpoints) of shortcut ones")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--probe", default=PROBE)
    parser.add_argument("--extra", default="", help="more vit-audit options for every run (one string)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="add a bfloat16 copy of the shipped weights to the benign candidates (default on)")
    parser.add_argument("--reuse-baseline", action="store_true",
                        help="keep the released model's results file of an earlier run into the same --out")
    args = parser.parse_args(argv)
    from audit.zoo import EMBEDDED_MODEL, WEIGHTS_FILE, embedded_checkpoint

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    pictures, masks = _images(out, args.test_images, args.offset)
    bf16 = out / "bf16.safetensors"
    save_file({k: v.to(torch.bfloat16).float() for k, v in load_file(str(embedded_checkpoint())).items()}, str(bf16))

    def weights(path: Path) -> Path:
        return path / WEIGHTS_FILE if path.is_dir() else path

    candidates = [(p.name, weights(p), True) for p in args.benign] + ([("bf16 copy", bf16, True)] if args.bf16 else [])
    candidates += [(p.name, weights(p), False) for p in args.harmful]
    recipe = ["--model", EMBEDDED_MODEL, "--images", str(pictures), "--regions", str(masks), "--probe", args.probe,
              *args.extra.split()]
    baseline = out / "released.json"
    if not (args.reuse_baseline and baseline.exists()):
        run_audit([*recipe, "--checkpoint", str(embedded_checkpoint())], baseline, CHECKS)
    print(f"{args.test_images} Fashion-MNIST test images from {args.offset} per class; probe {args.probe}; "
          f"every candidate against the shipped weights at the default margins")
    print("| candidate | ABPC gates (d, verdict) | class agreement (worst class) | probe: max A_k diff [CI] | "
          "stamp mass diff [CI] (grad@0, chefer) | object mass diff [CI] (grad@0) | exit |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    spread: dict[str, list[float]] = {"attraction": [], "stamp": [], "object": [], "class": []}
    for name, checkpoint, benign in candidates:
        status, results = run_audit([*recipe, "--checkpoint", str(checkpoint), "--baseline", str(baseline)],
                                    out / f"{name.replace(' ', '-')}.json", CHECKS)
        abpc = "; ".join(f"{c['method']}@{c['stage']} {c['statistic']:+.3f} {c['verdict']}"
                         for c in results.get("comparisons", []))
        classes = (results.get("classes") or [{}])[0]
        worst = classes.get("worst") or {}
        probe = next((p for p in results.get("probes", []) if p.get("probe") == args.probe), {})
        paired = probe.get("paired") or {}
        attraction = paired.get("attraction") or {}
        masses = paired.get("mass") or {}
        region = next((r for r in results.get("regions", []) if r.get("map") == "grad@0"), {})
        obj = (region.get("paired") or {}).get("object") or {}
        print(f"| {name}{'' if benign else ' (shortcut)'} | {abpc} | {classes.get('verdict')}: "
              f"{worst.get('class_name')} {worst.get('agree')}/{worst.get('n')} | "
              f"{attraction.get('statistic', math.nan):+.3f} {_ci(attraction.get('ci95', [math.nan] * 2))} "
              f"(to {attraction.get('candidate_class_name')}) {attraction.get('verdict')} | "
              + "; ".join(f"{m['statistic']:+.3f} {_ci(m['ci95'])} {m['verdict']}" for m in masses.values())
              + f" | {obj.get('statistic', math.nan):+.3f} {_ci(obj.get('ci95', [math.nan] * 2))} "
              f"{obj.get('verdict')} | {status} |")
        if benign:
            spread["attraction"].append(attraction.get("ci95", [math.nan] * 2)[1])
            spread["stamp"].extend(m["ci95"][1] for m in masses.values())
            spread["object"].append(-obj.get("ci95", [math.nan] * 2)[0])
            spread["class"].append(worst.get("agreement", math.nan))
    print("\nover the benign candidates (the margin rule: the smallest multiple of 0.01 under which every one passes):")
    for key, text in (("attraction", "attraction margin (largest upper bound of the max A_k difference)"),
                      ("stamp", "stamp margin (largest upper bound of a stamp-mass difference)"),
                      ("object", "region margin (largest -lower bound of the object-mass difference)")):
        values = [v for v in spread[key] if v is not None and math.isfinite(v)]
        if values:
            print(f"  {text}: {max(values):.3f} -> {max(0.01, math.ceil(max(values) * 100 - 1e-9) / 100):.2f}")
    finite = [v for v in spread["class"] if math.isfinite(v)]
    if finite:
        print(f"  lowest class agreement of a benign candidate: {min(finite):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
