"""Cost per image of the maps and fills beyond the paper, measured in one process (ratios, not absolute speed).

Example (docs/evidence/benchmarks.md's table)::

    python benchmarks/bench_recipes.py --model vit_tiny_patch16_224.augreg_in21k_ft_in1k \
        --checkpoint ../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors \
        --images ../shared/images/imagenet-diverse-200 --count 5

For each image: the capture without and with attention, each attention-based map at every stage, ``ig@input``, and
the MoRF/LeRF curves of one map (``cam@encoder``) under every fill. Prints the median seconds per image, the model
passes each needs, and the ratio to the ``grey`` fill's curves (or to the plain capture).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from audit import PerturbationConfig, capture, compute_maps, faithfulness_curves, find_images, load_model
from audit.maps.attention import ATTENTION_METHODS
from audit.maps.integrated_gradients import IG_STEPS
from audit.measure.image_audit import input_map
from audit.model.images import normalize, prepare_image

FILLS = ("grey", "black", "mean", "blur", "road")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--count", type=int, default=5, help="images timed (the first ones found)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)

    loaded = load_model(args.model, args.checkpoint)
    model = loaded.model
    paths = find_images(args.images)[:args.count]
    times: dict[str, list[float]] = {}

    def timed(name: str, work):
        start = time.perf_counter()
        value = work()
        times.setdefault(name, []).append(time.perf_counter() - start)
        return value

    for path in paths:
        pixel = prepare_image(path, loaded.data_config).pixel
        x = normalize(pixel, loaded.mean, loaded.std)
        timed("capture", lambda: capture(model, x))
        cap = timed("capture with attention", lambda: capture(model, x, attention=True))
        for method in ATTENTION_METHODS:
            timed(f"{method} (every stage)", lambda: compute_maps(model, cap, methods=[method]))
        timed("ig@input", lambda: input_map("ig", model, pixel, PerturbationConfig(), loaded.mean, loaded.std,
                                               cap.target, cap.layout))
        cam = compute_maps(model, cap, methods=["cam"], stages=["encoder"])["cam@encoder"].values
        for fill in FILLS:
            config = PerturbationConfig(steps=args.steps, fill=fill)
            timed(f"curves, fill {fill}", lambda: faithfulness_curves(
                model, pixel, {"cam@encoder": cam}, cap.target, loaded.mean, loaded.std, cap.layout.patch_size,
                cap.layout.grid, config=config))

    passes = {"capture": "1 forward + 1 backward", "capture with attention": "1 forward + 1 backward",
              "ig@input": f"{IG_STEPS + 1} forwards + backwards"}
    passes.update({f"{m} (every stage)": "none (from the capture)" for m in ATTENTION_METHODS})
    passes.update({f"curves, fill {f}": f"{2 + 2 * (args.steps - 1)} forwards" for f in FILLS})
    base = {name: statistics.median(times["curves, fill grey"] if name.startswith("curves") else times["capture"])
            for name in times}
    print(f"{loaded.name}, {len(paths)} images, {torch.get_num_threads()} threads, steps {args.steps}")
    print("| work | model passes | median s / image | ratio |")
    print("| --- | --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {passes[name]} | {median:.3f} | {median / base[name]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
