"""Peak memory and wall time of a whole audit of a large ViT on a CPU: the ``vit-audit`` command, run as a child.

Example (docs/evidence/benchmarks.md's figures: a ViT-B/16 with random weights, every map at the gated stages, batch
size auto)::

    python benchmarks/bench_scale.py --images ../shared/images/imagenet-diverse-200 --count 50
    python benchmarks/bench_scale.py --images ../shared/images/imagenet-diverse-200 --count 4 \\
        --model vit_base_patch16_384

Builds the model with timm's random initialisation (seeded; speed and memory do not depend on the weights), saves it as
a safetensors checkpoint in a temporary folder, and runs ``vit-audit`` on the first ``--count`` photos (sorted) with the
project's policy (``pyproject.toml``: its methods and gates) and ``--layers`` (default: the gated stages, so every map
there gets curves). Prints the child's peak resident memory (``ru_maxrss``), its wall time, seconds per image, the batch
sizes the records used, and the gates' verdicts. Nothing is written outside the temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_base_patch16_224", help="timm architecture (random weights)")
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--layers", default="0,encoder", help="--layers of the audit (default: the gated stages)")
    parser.add_argument("--amp", default=None, choices=[None, "bfloat16"])
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--extra", default="", help="more vit-audit options, one string")
    args = parser.parse_args(argv)

    from audit import find_images

    photos = sorted(find_images(args.images))[: args.count]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as folder:
        checkpoint = save_random_model(args.model, Path(folder) / "model.safetensors")
        results = Path(folder) / "results.json"
        command = [sys.executable, "-m", "audit.cli", "-q", "--model", args.model, "--checkpoint", str(checkpoint),
                   *[part for photo in photos for part in ("--images", str(photo))], "--layers", args.layers,
                   "--batch-size", args.batch_size, "--no-cache", "--audit-json", str(results),
                   "--report", str(Path(folder) / "report.html"), *(["--amp", args.amp] if args.amp else []),
                   *args.extra.split()]
        start = time.perf_counter()
        child = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: kilobytes
        data = json.loads(results.read_text()) if results.exists() else {}
    runs = data.get("runs", [])
    batches = sorted({run.get("batch_size") for run in runs if run.get("batch_size")})
    errors = [run["error"] for run in runs if run.get("error")]
    print(f"{args.model} (random weights), {len(photos)} photos, --layers {args.layers}, --batch-size "
          f"{args.batch_size}{', --amp ' + args.amp if args.amp else ''}; {os.cpu_count()} CPUs")
    print(f"exit {child.returncode}; wall {seconds:.0f} s ({seconds / max(len(photos), 1):.1f} s/image); peak RSS "
          f"{peak_mb:,.0f} MB; batch sizes used: {batches or 'none'}; {len(errors)} image error(s)")
    for gate in data.get("gates", []):
        print(f"  {gate['verdict']}: {gate['method']}@{gate['stage']} mean ABPC {gate.get('statistic')}")
    if child.returncode not in (0, 1):
        print(child.stdout[-3000:])
    return 0 if child.returncode in (0, 1) else child.returncode


def save_random_model(name: str, path: Path) -> Path:
    """timm's ``name`` with seeded random weights, written as safetensors at ``path``."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


if __name__ == "__main__":
    raise SystemExit(main())
