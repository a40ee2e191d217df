"""How far benign retrains of the embedded model move the release gate: the numbers the default margin rests on.

Example (the README's "Gating a release" table; the retrains are made by the training script with other seeds)::

    for s in 1 2 3; do python -m audit.zoo.fashion_mnist --out /tmp/retrain/seed$s --seed $s; done
    python -m audit.zoo.fashion_mnist --out /tmp/retrain/shortcut --seed 0 --shortcut 6
    python benchmarks/seed_spread.py --out /tmp/spread --test-images 200 \
        --candidates /tmp/retrain/seed1/vit_fmnist.safetensors /tmp/retrain/seed2/vit_fmnist.safetensors \
                     /tmp/retrain/seed3/vit_fmnist.safetensors \
        --harmful /tmp/retrain/shortcut/vit_fmnist.safetensors --stamped

Audits the shipped weights (the "released" model) with the default policy's gated maps, on the 20 sample images and
on a larger sample of Fashion-MNIST test images (``--test-images N``: the first N/10 of each class, written as PNG
files under ``--out``) and, with ``--stamped``, on the sample images with the training script's shortcut stamped
on every one, then audits each candidate against that baseline with ``vit-audit --baseline`` and a margin
of 1 (so that nothing fails and every number is written). Prints, per image set, candidate and gated map: both
models' mean ABPC, the mean difference d with its paired 95% CI, the median Spearman of the maps with its CI and
top-1 agreement; and the smallest margin under which no candidate fails (the CI's upper bound above -margin).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

POLICY = ("grad@0", "chefer@encoder")  # the default policy's gates: the margin rule is theirs
GATES = (*POLICY, "cam@encoder")  # and the paper's CAM, shown beside them
RECIPE = ["--methods", "cam,grad,chefer,random", *[a for g in GATES for a in ("--gate", g)]]


def _audit(model_args: list[str], images: Path, out: Path, extra: list[str]) -> dict:
    command = [shutil.which("vit-audit") or "vit-audit", *model_args, "--images", str(images), *RECIPE, *extra,
               "--audit-json", str(out), "--no-cache", "-q", "-k", "gate or compare"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=out.parent)
    if not out.exists():
        raise SystemExit(f"audit failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return json.loads(out.read_text())


def _test_images(folder: Path, count: int) -> Path:
    from audit.zoo.fashion_mnist.train import DEFAULT_DATA, class_slug, load_split

    images, labels = load_split(DEFAULT_DATA, "test")
    folder.mkdir(parents=True, exist_ok=True)
    per_class = max(1, count // 10)
    for label in range(10):
        for k, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            Image.fromarray(images[index]).save(folder / f"{class_slug(label)}_{k:03d}.png")
    return folder


def _stamped(source: Path, folder: Path) -> Path:
    from audit.zoo.fashion_mnist.train import stamp_shortcut

    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.png")):
        pixels = np.asarray(Image.open(path))[None]
        Image.fromarray(stamp_shortcut(pixels, None, [])[0]).save(folder / path.name)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", nargs="+", required=True, help="checkpoints of benign retrains")
    parser.add_argument("--harmful", nargs="*", default=[], help="checkpoints shown too, not in the margin rule")
    parser.add_argument("--stamped", action="store_true", help="also the sample images with the shortcut stamped")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results files and test images")
    parser.add_argument("--test-images", type=int, default=200, help="Fashion-MNIST test images (0: none)")
    args = parser.parse_args(argv)
    from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

    args.out.mkdir(parents=True, exist_ok=True)
    sets = {"20 sample images": embedded_images()}
    if args.test_images:
        sets[f"{args.test_images} test images"] = _test_images(args.out / "test-images", args.test_images)
    if args.stamped:
        sets["20 stamped sample images"] = _stamped(embedded_images(), args.out / "stamped-images")
    worst = 0.0
    for label, images in sets.items():
        tag = "-".join(label.split()[:2])
        base = args.out / f"baseline-{tag}.json"
        _audit(["--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint())], images, base, [])
        print(f"\n{label}: candidate vs the shipped weights (mean ABPC baseline -> candidate; d [95% CI]; "
              "median Spearman [95% CI]; top-1 agreement)")
        for index, checkpoint in enumerate([*args.candidates, *args.harmful]):
            benign = index < len(args.candidates)
            out = args.out / f"candidate{index}-{tag}.json"
            results = _audit(["--model", EMBEDDED_MODEL, "--checkpoint", checkpoint], images, out,
                             ["--baseline", str(base), "--margin", "1"])
            for c in results["comparisons"]:
                drift = c["drift"]
                if benign and f"{c['method']}@{c['stage']}" in POLICY:
                    worst = max(worst, -c["ci95"][1])
                print(f"  {Path(checkpoint).parent.name + ('' if benign else ' (harmful)'):<20} "
                      f"{c['method'] + '@' + c['stage']:<17} "
                      f"{c['baseline_abpc']:+.3f} -> {c['candidate_abpc']:+.3f}; d {c['statistic']:+.3f} "
                      f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]; Spearman {drift['statistic']:+.3f} "
                      f"[{drift['ci95'][0]:+.3f}, {drift['ci95'][1]:+.3f}]; top-1 {100 * drift['top1_agreement']:.0f}%")
    print(f"\nno benign candidate fails the policy's gates with a margin above {worst:.3f} (the largest -upper bound "
          "of d's CI)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
