"""How far benign retrains of the embedded model move the release gate: the numbers the default margins rest on.

Example (docs/evidence/margins.md; the retrains are made by the training script with other seeds)::

    for s in 1 2 3 4 5; do python -m audit.zoo.fashion_mnist --out /tmp/retrain/seed$s --seed $s; done
    python benchmarks/seed_spread.py --out /tmp/spread --test-images 200 \
        --candidates /tmp/retrain/seed{1,2,3,4,5}/vit_fmnist.safetensors
    python benchmarks/seed_spread.py --out /tmp/spread --test-images 200 --offset 20 --no-samples --margin 0.05 \
        --candidates /tmp/retrain/seed{1,2,3,4,5}/vit_fmnist.safetensors     # held-out images, one margin

Audits the shipped weights (the "released" model) with the default policy's gated maps, on the 20 sample images and on a
larger sample of Fashion-MNIST test images (``--test-images N``: N/10 of each class from the class's ``--offset``-th
test image on, written as PNG files under ``--out``) and, with ``--stamped``, on the sample images with the training
script's shortcut stamped on every one, then audits each candidate against that baseline with ``vit-audit --baseline``
and ``--margin`` (1 by default, so that nothing fails and every number is written). Prints, per image set, candidate and
gated map: both models' mean ABPC, the mean difference d with its paired 95% CI, the sd of d, the verdict, the median
Spearman of the maps with its CI and top-1 agreement; then, per gated map, the margin rule: the smallest relative margin
(a multiple of 5% of the baseline's mean ABPC) under which every benign candidate's lower bound is above -margin, and
how many benign comparisons pass at ``--margin``.
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
RECIPE = ["--methods", "cam,grad,chefer,random", *[a for g in GATES for a in ("--gate", g)], "--min-images", "5"]


def _audit(model_args: list[str], images: Path, out: Path, extra: list[str]) -> dict:
    command = [shutil.which("vit-audit") or "vit-audit", *model_args, "--images", str(images), *RECIPE, *extra,
               "--audit-json", str(out), "--no-cache", "-q", "-k", "gate or compare"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=out.parent)
    if not out.exists():
        raise SystemExit(f"audit failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return json.loads(out.read_text())


def _test_images(folder: Path, count: int, offset: int = 0) -> Path:
    """``count`` Fashion-MNIST test images, count/10 of each class from the class's ``offset``-th on, as PNG files."""
    from audit.zoo.fashion_mnist.train import DEFAULT_DATA, class_slug, load_split

    images, labels = load_split(DEFAULT_DATA, "test")
    folder.mkdir(parents=True, exist_ok=True)
    per_class = max(1, count // 10)
    for label in range(10):
        for k, index in enumerate(np.flatnonzero(labels == label)[offset:offset + per_class]):
            Image.fromarray(images[index]).save(folder / f"{class_slug(label)}_{offset + k:03d}.png")
    return folder


def _stamped(source: Path, folder: Path) -> Path:
    from audit.zoo.fashion_mnist.train import stamp_shortcut

    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.png")):
        pixels = np.asarray(Image.open(path))[None]
        Image.fromarray(stamp_shortcut(pixels, None, [])[0]).save(folder / path.name)
    return folder


def _margin_rule(rows: list[dict]) -> dict[str, str]:
    """Per gated map: the smallest relative margin, a multiple of 5%, under which every benign candidate's CI lower
    bound of d is above -margin (every benign retrain passes), and the numbers it rests on."""
    out = {}
    for key in dict.fromkeys(r["map"] for r in rows):
        mine = [r for r in rows if r["map"] == key]
        need = max(-r["ci95"][0] / r["baseline_abpc"] for r in mine if r["baseline_abpc"] > 0)
        percent = max(5, 5 * int(np.ceil(need * 100 / 5 - 1e-9)))
        out[key] = f"{percent}%"
        print(f"  {key:<17} baseline mean ABPC {np.mean([r['baseline_abpc'] for r in mine]):+.3f}; "
              f"largest -lower bound / baseline {need:.1%} -> margin {percent}%; sd of d "
              f"{min(r['sd'] for r in mine):.3f}-{max(r['sd'] for r in mine):.3f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", nargs="+", required=True, help="checkpoints of benign retrains")
    parser.add_argument("--harmful", nargs="*", default=[], help="checkpoints shown too, not in the margin rule")
    parser.add_argument("--stamped", action="store_true", help="also the sample images with the shortcut stamped")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results files and test images")
    parser.add_argument("--test-images", type=int, default=200, help="Fashion-MNIST test images (0: none)")
    parser.add_argument("--offset", type=int, default=0,
                        help="take each class's test images from this index on (a held-out set: --offset 20)")
    parser.add_argument("--margin", default="1",
                        help="the comparisons' margin (default 1: nothing fails, every number is written; 'default': "
                             "the built-in margins of each map); the rule's margins are derived from the lower "
                             "bounds, whatever it is")
    parser.add_argument("--samples", action=argparse.BooleanOptionalAction, default=True,
                        help="also the 20 sample images")
    args = parser.parse_args(argv)
    from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

    args.out.mkdir(parents=True, exist_ok=True)
    sets = {"20 sample images": embedded_images()} if args.samples else {}
    if args.test_images:
        name = f"{args.test_images} test images" + (f" from {args.offset}" if args.offset else "")
        sets[name] = _test_images(args.out / f"test-images-{args.offset}", args.test_images, args.offset)
    if args.stamped:
        sets["20 stamped sample images"] = _stamped(embedded_images(), args.out / "stamped-images")
    rows: list[dict] = []
    for label, images in sets.items():
        tag = "-".join(label.split()[:2]) + (f"-{args.offset}" if args.offset and "test" in label else "")
        base = args.out / f"baseline-{tag}.json"
        _audit(["--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint())], images, base, [])
        print(f"\n{label}: candidate vs the shipped weights (mean ABPC baseline -> candidate; d [95% CI]; sd of d; "
              f"verdict at margin {args.margin}; median Spearman [95% CI]; top-1 agreement)")
        for index, checkpoint in enumerate([*args.candidates, *args.harmful]):
            benign = index < len(args.candidates)
            out = args.out / f"candidate{index}-{tag}.json"
            results = _audit(["--model", EMBEDDED_MODEL, "--checkpoint", checkpoint], images, out,
                             ["--baseline", str(base), *(["--margin", args.margin] if args.margin != "default"
                                                         else [])])
            for c in results["comparisons"]:
                drift, key = c["drift"], f"{c['method']}@{c['stage']}"
                if benign and key in POLICY:
                    rows.append({"set": label, "map": key, "ci95": c["ci95"], "baseline_abpc": c["baseline_abpc"],
                                 "sd": c["power"]["sd"], "verdict": c["verdict"]})
                print(f"  {Path(checkpoint).parent.name + ('' if benign else ' (harmful)'):<20} {key:<17} "
                      f"{c['baseline_abpc']:+.3f} -> {c['candidate_abpc']:+.3f}; d {c['statistic']:+.3f} "
                      f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]; sd {c['power']['sd']:.3f}; {c['verdict']} "
                      f"(margin {c['margin']:.3f}); Spearman {drift['statistic']:+.3f} "
                      f"[{drift['ci95'][0]:+.3f}, {drift['ci95'][1]:+.3f}]; top-1 {100 * drift['top1_agreement']:.0f}%")
    for label in sets:
        mine = [r for r in rows if r["set"] == label]
        if mine:
            print(f"\nthe margin rule on {label} (benign candidates, the policy's gates):")
            _margin_rule(mine)
            passed = sum(r["verdict"] == "pass" for r in mine)
            print(f"  at margin {args.margin}: {passed} of {len(mine)} benign comparisons pass, "
                  f"{sum(r['verdict'] == 'inconclusive' for r in mine)} inconclusive, "
                  f"{sum(r['verdict'] == 'fail' for r in mine)} fail")
    return 0


if __name__ == "__main__":
    sys.exit(main())
