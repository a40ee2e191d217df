"""Check that the audit gives the same numbers on CUDA as on the CPU, and time both; then the same images audited
together on CUDA (their perturbed copies in shared batches, as ``--image-batch`` does) against the CPU's numbers.

    python benchmarks/cuda_check.py --checkpoint ../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors

Needs a CUDA device. TF32 is switched off so that float32 means float32 on both sides.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import skimage.data
import torch

from audit import audit_image, load_model, prepare_image
from audit.measure.image_audit import audit_group


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    parser.add_argument("--checkpoint", required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("cuda_check: no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    worst = {"prob": 0.0, "map": 0.0, "auc": 0.0, "restore": 0.0, "group_auc": 0.0}
    where: dict[str, str] = {}

    def note(kind: str, value: float, label: str) -> None:
        if value > worst[kind]:
            worst[kind], where[kind] = value, label
    names = ("chelsea", "coffee", "astronaut")
    on_cpu = {}
    for name in names:
        results = {}
        for device in ("cpu", "cuda"):
            loaded = load_model(args.model, args.checkpoint)
            image = prepare_image(getattr(skimage.data, name)(), loaded.data_config, name=name)
            audit_image(loaded, image, device=device, stages=["encoder"])  # warm-up
            start = time.perf_counter()
            results[device] = audit_image(loaded, image, device=device)
            print(f"{name} {device}: class {results[device].target} p={results[device].prob:.4f} "
                  f"{len(results[device].curves)} maps scored in {time.perf_counter() - start:.2f} s")
        cpu, gpu = results["cpu"], results["cuda"]
        on_cpu[name] = cpu
        assert cpu.target == gpu.target, (name, cpu.target, gpu.target)
        note("prob", abs(cpu.prob - gpu.prob), name)
        for key, m in cpu.maps.items():
            if m.values is None:
                continue
            other = gpu.maps[key].values.cpu()
            scale = float(m.values.abs().max()) or 1.0
            note("map", float((m.values - other).abs().max()) / scale, f"{name} {key}")
            assert m.degenerate == gpu.maps[key].degenerate, key
        for key, c in cpu.curves.items():
            g = gpu.curves[key]
            note("auc", max(abs(c.morf_auc - g.morf_auc), abs(c.lerf_auc - g.lerf_auc)), f"{name} {key}")
        for stage, r in cpu.restorations["inverse"].items():
            other = gpu.restorations["inverse"][stage].image
            note("restore", float(np.abs(r.image.numpy() - other.numpy()).max()), f"{name} {stage}")
    loaded = load_model(args.model, args.checkpoint)
    images = [prepare_image(getattr(skimage.data, name)(), loaded.data_config, name=name) for name in names]
    start = time.perf_counter()
    group = audit_group(loaded, images, device="cuda")
    print(f"{len(names)} images together on cuda (batch {group[0].batch_size}): {time.perf_counter() - start:.2f} s")
    for name, result in zip(names, group):
        assert not isinstance(result, Exception), (name, result)
        for key, c in on_cpu[name].curves.items():
            g = result.curves[key]
            note("group_auc", max(abs(c.morf_auc - g.morf_auc), abs(c.lerf_auc - g.lerf_auc)), f"{name} {key}")
    print("largest CPU/CUDA differences:", {k: f"{v:.2e} ({where.get(k, '-')})" for k, v in worst.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
