"""How close MoRF/LeRF scoring comes to the bare model's speed, and how much faster it is than the paper's code.

    python benchmarks/bench_engine.py \
        --checkpoint ../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors

(a) the bare model's best batched throughput (images/s, over several batch sizes, best of a few repeats);
(b) the time of MoRF+LeRF for N maps of one image, from ranked maps to 2 x 21-point curves, and its ratio to the
    ideal N x 38 forwards at rate (a) (the clean and the fully removed image are shared, so 38 per map);
(c) the same work as the paper's code does it: one forward+backward pass per stage to get the maps, then one
    forward per perturbed image (21 per curve, batch 1); printed as the speed-up of ours (one capture + (b)).
All in one process, one run, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import skimage.data
import torch

from audit import PerturbationConfig, capture, compute_maps, faithfulness_curves, load_model, normalize, prepare_image
from audit.measure.curves import removal_counts


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def best_throughput(model, shape, device, batch_sizes, repeats, amp):
    """Best images/s of the bare model over batch sizes (inference_mode)."""
    best = (0.0, batch_sizes[0])
    context = torch.autocast(device.type, dtype=getattr(torch, amp)) if amp else torch.autocast(device.type,
                                                                                                 enabled=False)
    with torch.inference_mode(), context:
        for batch in batch_sizes:
            x = torch.randn(batch, *shape, device=device)
            model(x)  # warm-up
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                model(x)
                _sync(device)
                rate = batch / (time.perf_counter() - start)
                best = max(best, (rate, batch))
    return best


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def paper_style(model, pixel, x, maps, target, mean, std, device, steps=20, fill=127 / 255):
    """One forward+backward per stage, then one batch-1 forward per perturbed image, 21 per curve."""
    stages = [*model.blocks, model.norm]
    for module in stages:  # the paper's code captures one layer per pass
        kept = {}
        handle = module.register_forward_hook(lambda _m, _i, out: kept.setdefault("t", out))
        try:
            logits = model(x.detach().clone().requires_grad_(True))
            torch.autograd.grad(logits[0, target], kept["t"])
        finally:
            handle.remove()
    height, width = pixel.shape[-2:]
    counts = removal_counts(height * width, steps)
    with torch.inference_mode():
        for values in maps.values():
            up = torch.nn.functional.interpolate(values[None, None].double(), size=(height, width), mode="bilinear",
                                                 align_corners=False).flatten()
            for descending in (True, False):
                order = torch.sort(up, descending=descending, stable=True).indices
                for k in range(steps + 1):
                    image = pixel.clone().reshape(pixel.shape[0], -1)
                    image[:, order[: counts[k]].to(device)] = fill
                    model(normalize(image.reshape(pixel.shape)[None], mean, std)).softmax(-1)[0, target].item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--maps", type=int, default=12, help="N: maps of one image scored together")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", default="16,32,64,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--amp", default=None, choices=[None, "bfloat16"])
    parser.add_argument("--skip-paper", action="store_true", help="skip (c), the slow one-image-at-a-time run")
    args = parser.parse_args()

    device = torch.device(args.device)
    loaded = load_model(args.model, args.checkpoint)
    model = loaded.model.to(device)
    image = prepare_image(skimage.data.chelsea(), loaded.data_config, name="chelsea")
    pixel = image.pixel.to(device)
    x = normalize(pixel, loaded.mean, loaded.std)[None]
    print(f"{args.model} on {args.device} ({_cpu_name()}, {os.cpu_count()} logical CPUs, "
          f"{torch.get_num_threads()} torch threads), torch {torch.__version__}, amp={args.amp}")

    rate, batch = best_throughput(model, tuple(x.shape[1:]), device, [int(b) for b in args.batch_sizes.split(",")],
                                  args.repeats, args.amp)
    print(f"(a) bare model: {rate:.1f} images/s (best batch {batch})")

    start = time.perf_counter()
    cap = capture(model, x)
    all_maps = compute_maps(model, cap, methods=["cam", "cam_hidden", "grad", "grad_cls"])
    capture_seconds = time.perf_counter() - start
    maps = {k: m.values for k, m in all_maps.items() if m.rankable}
    maps = dict(list(maps.items())[-args.maps:])
    n = len(maps)
    config = PerturbationConfig(batch_size=batch, amp=args.amp)
    faithfulness_curves(model, pixel, dict(list(maps.items())[:1]), cap.target, loaded.mean, loaded.std,
                        cap.layout.patch_size, cap.layout.grid, config)  # warm-up
    timings = []
    for _ in range(args.repeats):
        _sync(device)
        start = time.perf_counter()
        faithfulness_curves(model, pixel, maps, cap.target, loaded.mean, loaded.std, cap.layout.patch_size,
                            cap.layout.grid, config)
        _sync(device)
        timings.append(time.perf_counter() - start)
    ours = min(timings)
    ideal = n * 38 / rate
    print(f"(b) MoRF+LeRF of N={n} maps: {ours:.2f} s (best of {args.repeats}); ideal N*38/rate = {ideal:.2f} s; "
          f"ratio {ours / ideal:.3f} (target <= 1.1)")
    print(f"    capture (1 forward + 1 backward) and all maps at every stage: {capture_seconds:.3f} s")
    if not args.skip_paper:
        start = time.perf_counter()
        paper_style(model, pixel, x, maps, cap.target, loaded.mean, loaded.std, device)
        paper = time.perf_counter() - start
        print(f"(c) paper's way (13 capture passes, N*42 batch-1 forwards): {paper:.2f} s; ours "
              f"{capture_seconds + ours:.2f} s; speed-up {paper / (capture_seconds + ours):.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
