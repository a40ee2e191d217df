"""The release gate on real candidates of the ViT-Ti: one that must fail, one that must pass, gating each map.

Example (docs/guides/gate-a-release.md, "Real comparisons")::

    python benchmarks/release_candidates.py --out /tmp/candidates \
        --checkpoint ../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors \
        --images ../shared/images/imagenet-diverse-200 --count 27

Makes two candidates of the released checkpoint, under ``--out``:

- ``reinit-8-11``: blocks 8-11 re-initialised the way timm initialises a new ViT (seeded: truncated normal weights of
  std 0.02, zero biases, unit LayerNorms); its predictions are ruined. It must fail, whichever map is gated.
- ``bf16``: every tensor stored in bfloat16 and read back into the float32 model. It must pass.

Audits the released checkpoint once on ``--count`` photos (every k-th of the sorted folder, k = files // count, from
the ``--start``-th) with ``--gate`` for every map of ``--maps``, then each candidate against it with ``vit-audit
--baseline`` and the run's defaults otherwise (margins, minimum images, the non-inferiority rule), and prints per
candidate and map: d [95% CI], the margin and where it came from, the verdict, and the run's exit status.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from audit_cli import run_audit
from safetensors.torch import load_file, save_file

MODEL = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
MAPS = "grad@0,chefer@encoder,cam@encoder,grad_cls@encoder"


def reinitialised(state: dict[str, torch.Tensor], blocks: range, seed: int) -> dict[str, torch.Tensor]:
    """The state dict with ``blocks`` re-initialised as timm initialises a new ViT (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(state)
    for name, tensor in state.items():
        parts = name.split(".")
        if parts[0] != "blocks" or int(parts[1]) not in blocks:
            continue
        if "norm" in parts[2]:
            out[name] = torch.ones_like(tensor) if parts[-1] == "weight" else torch.zeros_like(tensor)
        elif parts[-1] == "bias":
            out[name] = torch.zeros_like(tensor)
        else:
            values = torch.empty_like(tensor, dtype=torch.float32)
            values.normal_(0.0, 0.02, generator=generator).clamp_(-0.04, 0.04)  # truncated at 2 std, as timm
            out[name] = values.to(tensor.dtype)
    return out


def _photos(folder: Path, count: int, start: int, out: Path) -> Path:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    step = max(1, len(files) // count)
    chosen = files[start::step][:count]
    target = out / f"photos-{count}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in chosen:
        (target / path.name).symlink_to(path.resolve())
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help=f"the released {MODEL} (safetensors)")
    parser.add_argument("--images", type=Path, required=True, help="folder of photos")
    parser.add_argument("--count", type=int, default=27)
    parser.add_argument("--start", type=int, default=3, help="index of the first photo taken")
    parser.add_argument("--maps", default=MAPS, help="comma list of the gated maps (each compared)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the re-initialisation")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.checkpoint, args.images, args.out = args.checkpoint.resolve(), args.images.resolve(), args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    state = load_file(str(args.checkpoint))
    candidates = {"reinit-8-11": args.out / "reinit-8-11.safetensors", "bf16": args.out / "bf16.safetensors"}
    save_file(reinitialised(state, range(8, 12), args.seed), str(candidates["reinit-8-11"]))
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(candidates["bf16"]))
    photos = _photos(args.images, args.count, args.start, args.out)
    maps = [m for m in args.maps.split(",") if m]
    methods = ",".join(dict.fromkeys([m.split("@")[0] for m in maps] + ["random"]))
    recipe = ["--model", MODEL, "--images", str(photos), "--methods", methods,
              *[a for m in maps for a in ("--gate", m)]]
    run_audit([*recipe, "--checkpoint", str(args.checkpoint)], args.out / "released.json", "test_gate")
    print(f"{args.count} photos of {args.images} (every {max(1, len(list(args.images.iterdir())) // args.count)}-th "
          f"from {args.start}); candidate vs the released checkpoint, the run's default margins")
    print("| candidate | map | d [95% CI] | margin | verdict | exit status (comparisons only) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, checkpoint in candidates.items():
        status, results = run_audit([*recipe, "--checkpoint", str(checkpoint), "--baseline",
                                  str(args.out / "released.json")], args.out / f"{name}.json", "test_no_regression")
        for c in results.get("comparisons", []):
            print(f"| {name} | `{c['method']}@{c['stage']}` | {c['statistic']:+.3f} [{c['ci95'][0]:+.3f}, "
                  f"{c['ci95'][1]:+.3f}] | {c['margin']:.3f} ({c['margin_rule']}, {c['margin_source']}) | "
                  f"**{c['verdict']}** | {status} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
