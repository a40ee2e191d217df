"""What right for the right reasons costs per image: the regions on the token grid and the gated maps' localisation
(``--regions``), and one probe (``--probe``), beside the record the audit makes anyway.

Example (docs/evidence/benchmarks.md, the right-for-the-right-reasons cost)::

    python benchmarks/bench_reasons.py --count 10 \
        --checkpoint ../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors \
        --images ../shared/images/imagenet-diverse-200

Times, per photo and with the default policy's gated maps (grad@0, chefer@encoder): the image's regions (a box over its
middle half, in a CSV) mapped onto the tokens (:func:`audit.run.region_geometry.token_regions`) and the localisation of
the gated maps (:func:`audit.verdicts.reasons.record_localisation`), and one probe
(:func:`audit.measure.probes.probe_image`: one forward and backward pass of the stamped picture and its gated maps);
then the median and the largest of each over the photos. Run it alone: another process on the CPU slows it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

MODEL = "vit_tiny_patch16_224"
KEYS = [("grad", "0"), ("chefer", "encoder")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--probe", default="square:white:16@top-left")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_reasons"))
    args = parser.parse_args(argv)
    from audit import load_model, prepare_image
    from audit.maps import compute_maps
    from audit.measure.probes import parse_probe, probe_image
    from audit.model.capture import capture
    from audit.model.images import normalize
    from audit.run.region_geometry import token_regions
    from audit.run.regions import load_regions
    from audit.verdicts.reasons import record_localisation

    torch.set_num_threads(2)
    loaded = load_model(MODEL, args.checkpoint)
    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.count]
    args.out.mkdir(parents=True, exist_ok=True)
    boxes = args.out / "boxes.csv"
    with open(boxes, "w", encoding="utf-8") as handle:
        handle.write("file,x0,y0,x1,y1\n")
        for path in photos:
            with Image.open(path) as picture:
                w, h = picture.size
            handle.write(f"{path.name},{w / 4},{h / 4},{3 * w / 4},{3 * h / 4}\n")
    regions = load_regions(boxes)
    probe = parse_probe(args.probe)
    layout = loaded.layout
    times: dict[str, list[float]] = {"maps (made anyway)": [], "regions + localisation": [], "probe": []}
    for path in photos:
        prepared = prepare_image(path, loaded.data_config)
        start = time.perf_counter()
        cap = capture(loaded.model, normalize(prepared.pixel, loaded.mean, loaded.std), attention=True)
        maps = compute_maps(loaded.model, cap, methods=["grad", "chefer"], stages=["0", "encoder"])
        times["maps (made anyway)"].append(time.perf_counter() - start)
        grids = {key: {"grid": m.values.tolist() if m.values is not None else None} for key, m in maps.items()}
        start = time.perf_counter()
        tokens = token_regions(regions.for_image(path), path, loaded.data_config, layout.grid, layout.patch_size)
        record_localisation(grids, {"object": tokens.object, "artefact": tokens.artefact, "void": tokens.void},
                            [f"{m}@{s}" for m, s in KEYS])
        times["regions + localisation"].append(time.perf_counter() - start)
        start = time.perf_counter()
        probe_image(loaded, prepared, probe, KEYS, cap.target)
        times["probe"].append(time.perf_counter() - start)
    print(f"{MODEL}, {len(photos)} photos of {args.images}, {torch.get_num_threads()} threads; gated maps "
          f"{', '.join(f'{m}@{s}' for m, s in KEYS)}; probe {args.probe}")
    print("| step | median s/image | largest s/image |")
    print("| --- | --- | --- |")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {max(values):.3f} |")
    extra = [a + b for a, b in zip(times["regions + localisation"], times["probe"])]
    print(f"| regions + localisation + one probe | {statistics.median(extra):.3f} | {max(extra):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
