"""Where a gated-only audit's time goes per image: the curves' forwards against everything around them.

Example (docs/evidence/benchmarks.md's table: the default policy's maps on the real ViT-Ti)::

    python benchmarks/bench_overhead.py \
        --checkpoint ../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors \
        --images ../shared/images/imagenet-diverse-200 --count 10

Runs the steps of one image's record in the order the audit does (:func:`audit.measure.image_audit.audit_image`, then
:func:`audit.results.schema.run_record` and the JSON text of the record) and times each: preparing the image, the
capture pass, the maps of every stage, the MoRF/LeRF curves of the gated maps and ``random`` at their stages, the
restorations of every stage, the record with its thumbnails, and its JSON. Prints the median seconds per image of each
step and the share of the work outside the curves; start-up (imports and model load) is timed once. Then the bare
model's best batched throughput in the same process (:func:`bench_engine.best_throughput`), and the audit's model passes
per second of a whole record against it (the capture counted as 3 forwards).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

START = time.perf_counter()

import torch  # noqa: E402
from bench_engine import best_throughput  # noqa: E402

from audit import find_images, load_model  # noqa: E402
from audit.maps import compute_maps, needs_attention  # noqa: E402
from audit.measure.curves import PerturbationConfig, faithfulness_curves  # noqa: E402
from audit.measure.image_audit import ImageAudit, check_capture_finite, one_thread  # noqa: E402
from audit.model.capture import capture  # noqa: E402
from audit.model.images import normalize, prepare_image  # noqa: E402
from audit.model.restore import PatchInverse, restore  # noqa: E402
from audit.results.schema import run_record  # noqa: E402

STEPS = ("prepare", "capture", "maps", "curves", "restorations", "record", "json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--count", type=int, default=10, help="images timed (after one warm-up image)")
    parser.add_argument("--methods", default="cam,cam_hidden,grad,grad_cls,chefer,random,center")
    parser.add_argument("--curves", default="grad@0,chefer@encoder,random@0,random@encoder",
                        help="the maps that get curves (default: the default policy's gates and random there)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", default="auto", type=lambda text: text if text == "auto" else int(text))
    parser.add_argument("--amp", default=None, choices=[None, "bfloat16"])
    args = parser.parse_args(argv)
    loaded = load_model(args.model, args.checkpoint)
    startup = time.perf_counter() - START
    methods = args.methods.split(",")
    curves_for = args.curves.split(",")
    config = PerturbationConfig(steps=args.steps, batch_size=args.batch_size, amp=args.amp)
    inverse = PatchInverse(loaded.model)
    paths = find_images(args.images)[: args.count + 1]
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    forwards: list[int] = []
    for index, path in enumerate(paths):
        spent = one_image(loaded, path, methods, curves_for, config, inverse)
        if index == 0:
            continue  # warm-up
        forwards.append(spent.pop("forwards"))
        for step in STEPS:
            times[step].append(spent[step])
    medians = {step: statistics.median(values) for step, values in times.items()}
    total = sum(medians.values())
    outside = total - medians["curves"]
    print(f"start-up (imports, model load): {startup:.2f} s; {len(paths) - 1} images, {len(curves_for)} maps with "
          f"curves, {args.steps} steps, {torch.get_num_threads()} threads")
    print("| step | s / image (median) | share |")
    print("| --- | --- | --- |")
    for step in STEPS:
        print(f"| {step} | {medians[step]:.3f} | {100 * medians[step] / total:.0f}% |")
    print(f"| **outside the curves** | {outside:.3f} | **{100 * outside / total:.0f}%** |")
    rate, batch = best_throughput(loaded.model, (loaded.data_config["input_size"][0], *loaded.input_size),
                                  torch.device("cpu"), [16, 32, 64], 3, args.amp)
    passes = statistics.median(forwards) + 3
    print(f"bare model: {rate:.1f} images/s (best batch {batch}); the audit: {passes:.0f} model passes per image "
          f"in {total:.2f} s = {passes / total:.1f} /s, {100 * passes / total / rate:.0f}% of the bare rate "
          f"(curves alone: {100 * (passes - 3) / medians['curves'] / rate:.0f}%)")
    return 0


def one_image(loaded, path, methods, curves_for, config, inverse) -> dict[str, float]:
    """Seconds of each step of one image's record."""
    spent: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        spent[step] = now - clock
        clock = now

    prepared = prepare_image(path, loaded.data_config)
    lap("prepare")
    model = loaded.model
    cap = capture(model, normalize(prepared.pixel, loaded.mean, loaded.std), attention=needs_attention(methods))
    lap("capture")
    with one_thread():  # as audit_image and the record maker do
        check_capture_finite(cap, prepared.source)
        maps = compute_maps(model, cap, methods=methods, image=prepared.name)
    lap("maps")
    scored = {key: m.values for key, m in maps.items() if key in curves_for and m.rankable}
    jobs = []
    curves, shared = faithfulness_curves(model, prepared.pixel, scored, cap.target, loaded.mean, loaded.std,
                                         patch=cap.layout.patch_size, grid=cap.layout.grid, config=config,
                                         progress=lambda done, total: jobs.append(total))
    lap("curves")
    with one_thread():
        restorations = restore(cap, model, prepared.pixel, loaded.mean, loaded.std, inverse=inverse)
    lap("restorations")
    result = ImageAudit(image=prepared, source=prepared.source, target=cap.target, prob=cap.prob, maps=maps,
                        curves=curves, restorations=restorations, removed_prob=shared["removed"],
                        batch_size=shared["batch_size"], capture=cap)
    with one_thread():
        record = run_record(loaded, result, thumbnail=64)
    lap("record")
    json.dumps(record)
    lap("json")
    spent["forwards"] = jobs[-1] if jobs else 0
    return spent


if __name__ == "__main__":
    raise SystemExit(main())
