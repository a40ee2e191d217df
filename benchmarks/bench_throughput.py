"""The audit's model passes per second against the bare model's best batched rate, in one process, per model and dtype.

Example (the check to run where a GPU is lent: a ViT-Ti and a ViT-B/16 with random weights, float32 and bfloat16)::

    python benchmarks/bench_throughput.py --device cuda --count 32
    python benchmarks/bench_throughput.py --device cpu --count 4 --models vit_tiny_patch16_224   # the CPU stand-in

For each model (timm's architecture, seeded random weights: speed does not depend on them) and each dtype:

(a) the bare model's best batched throughput over ``--batch-sizes`` (images/s, best of a few repeats);
(b) the records of ``--count`` photos made the way the audit makes them
(:meth:`audit.run.records.RecordMaker.make_group`,
    the project's policy from ``pyproject.toml``, ``--batch-size auto``, ``--image-batch`` as given), timed whole:
    model passes per second (a capture counts 3, every perturbed image 1) and their share of (a); and the curves'
    forwards alone (the time spent in :func:`audit.measure.curves.evaluate_curve_work`) against (a).

The photos are scikit-image's (in its wheel), repeated to ``--count``, or ``--images``. One warm-up group is made first
and not timed. The issue's target on a GPU: (b) at >= 50% of (a).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from bench_engine import _sync, best_throughput

import audit.measure.image_audit as pipeline
from audit import find_images, load_model
from audit.config.settings import resolve_settings
from audit.measure.curves import perturbed_copies
from audit.model.restore import PatchInverse
from audit.run.plan import plan_model
from audit.run.records import RecordMaker

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "hubble_deep_field", "immunohistochemistry")


def _photos(folder: Path, count: int, images: list[str] | None) -> list[str]:
    if images:
        found = sorted(find_images(images))
        return [found[i % len(found)] for i in range(count)]
    import skimage.data
    from PIL import Image

    paths = []
    for i in range(count):
        name = PHOTOS[i % len(PHOTOS)]
        path = folder / f"{i:03d}-{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(path)
        paths.append(str(path))
    return paths


def _timed_curves(spent: list[float], device: torch.device):
    """A stand-in for evaluate_curve_work that adds its seconds to ``spent``."""
    inner = pipeline.evaluate_curve_work

    def timed(*args, **kwargs):
        _sync(device)
        start = time.perf_counter()
        inner(*args, **kwargs)
        _sync(device)
        spent.append(time.perf_counter() - start)
    return timed


def measure(name: str, amp: str | None, device: torch.device, photos: list[str], image_batch: str,
            batch_sizes: list[int], folder: Path) -> dict:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    checkpoint = folder / f"{name}.safetensors"
    if not checkpoint.exists():
        model = timm.create_model(name, pretrained=False).eval()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    loaded = load_model(name, checkpoint)
    model = loaded.model.to(device)
    shape = (loaded.data_config["input_size"][0], *loaded.input_size)
    bare, best_batch = best_throughput(model, shape, device, batch_sizes, 3, amp)

    cli = {"model": [name], "checkpoint": [str(checkpoint)], "images": photos, "device": device.type,
           "no_cache": True, "image_batch": image_batch, "amp": amp}
    settings = resolve_settings(cli, pyproject=ROOT / "pyproject.toml")
    maker = RecordMaker(settings, settings.perturbation(), device.type)
    plan = plan_model(settings, loaded)
    inverse = PatchInverse(loaded.model)
    group = maker.image_batch(loaded, plan)
    items = [(path, Path(path).stem, None, None) for path in photos]
    spent: list[float] = []
    original = pipeline.evaluate_curve_work
    pipeline.evaluate_curve_work = _timed_curves(spent, device)
    try:
        maker.make_group(loaded, plan, inverse, items[:group])  # warm-up
        spent.clear()
        start = time.perf_counter()
        records = []
        for first in range(0, len(items), group):
            records += maker.make_group(loaded, plan, inverse, items[first:first + group])
        _sync(device)
        seconds = time.perf_counter() - start
    finally:
        pipeline.evaluate_curve_work = original
    failed = [r for r in records if not isinstance(r, dict) or r.get("error")]
    if failed:
        raise SystemExit(f"bench_throughput: {len(failed)} record(s) failed: {failed[0]}")
    copies = [_copies(r, settings.steps) for r in records]
    passes = sum(copies) + 3 * len(records)
    curves = sum(spent)
    return {"model": name, "amp": amp or "float32", "bare": bare, "best_batch": best_batch,
            "batch": records[0]["batch_size"], "image_batch": group, "images": len(records), "seconds": seconds,
            "passes": passes / seconds, "share": passes / seconds / bare,
            "curves_share": sum(copies) / curves / bare if curves else float("nan"),
            "copies": statistics.median(copies)}


def _copies(record: dict, steps: int) -> int:
    """Perturbed images of one record (:func:`audit.measure.curves.perturbed_copies` of its distinct curves)."""
    curves = {(tuple(m["morf"]), tuple(m["lerf"])) for m in record["maps"].values() if m.get("morf") is not None}
    return perturbed_copies(len(curves), steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vit_tiny_patch16_224,vit_base_patch16_224")
    parser.add_argument("--amp", default="none,bfloat16", help="comma list of none, bfloat16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--count", type=int, default=32, help="photos audited per model and dtype (after a warm-up)")
    parser.add_argument("--images", nargs="*", help="photos to use instead of scikit-image's")
    parser.add_argument("--image-batch", default="auto")
    parser.add_argument("--batch-sizes", default=None, help="of the bare model (default: 16..1024 on CUDA, 16..64 CPU)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32
    sizes = [int(b) for b in (args.batch_sizes or ("16,32,64,128,256,512,1024" if device.type == "cuda"
                                                   else "16,32,64")).split(",")]
    import tempfile

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}; {args.count} photos, --image-batch {args.image_batch}")
    print("| model | dtype | bare images/s (batch) | audit passes/s | share | curves' share | batch x images | "
          "copies/image | s/image |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as folder:
        photos = _photos(Path(folder), args.count, args.images)
        for model in args.models.split(","):
            for amp in args.amp.split(","):
                r = measure(model, None if amp == "none" else amp, device, photos, args.image_batch, sizes,
                            Path(folder))
                print(f"| {r['model']} | {r['amp']} | {r['bare']:.0f} ({r['best_batch']}) | {r['passes']:.0f} | "
                      f"**{100 * r['share']:.0f}%** | {100 * r['curves_share']:.0f}% | {r['batch']} x "
                      f"{r['image_batch']} | {r['copies']:.0f} | {r['seconds'] / r['images']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
