"""Records per second of one process against Ray tasks, on the same images with the same settings.

    python benchmarks/bench_ray.py --model vit_tiny_patch16_224.augreg_in21k_ft_in1k \
        --checkpoint ../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors \
        --images ../shared/images/imagenet-diverse-200 --limit 6

Makes the (model, image) records of the first ``--limit`` images (sorted) twice, cache off: (a) one after the other
in this process (``--executor local``, torch's default threads or ``--threads``), (b) as Ray tasks (``--executor
ray``) on a Ray instance started on this machine (one worker per CPU, one thread each) or on ``--ray-address``. The
time of (b) is from the first task submitted to the last record stored, so it includes starting the worker processes
and loading the model in each; connecting to Ray is timed apart. The largest |difference| of any AUC between (a) and
(b) is printed too (``--threads 1`` compares like with like), and the load average before and after (another job
sharing the CPU shows there).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from audit.config.settings import resolve_settings
from audit.model.images import find_images
from audit.run.session import AuditSession

POLICY = {"methods": ["cam,cam_hidden,grad,grad_cls,chefer,random,center"], "gate": ["grad@0", "chefer@encoder"]}


def make_all(session: AuditSession, executor) -> float:
    """Seconds to make every record of the session with ``executor``."""
    start = time.perf_counter()
    for _ in executor.make(session, session.cases()):
        pass
    return time.perf_counter() - start


def aucs(session: AuditSession) -> dict[tuple[str, str, str], float]:
    return {(case.image_id, key, side): m[f"{side}_auc"] for case in session.cases()
            for key, m in session.run(case)["maps"].items() for side in ("morf", "lerf")
            if m[f"{side}_auc"] is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--limit", type=int, default=6, help="the first N images, sorted (default 6)")
    parser.add_argument("--steps", default="20")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the one process (default torch's; 1 as each Ray task has, to compare "
                             "the AUCs like with like)")
    parser.add_argument("--ray-address", default=None, help="a running cluster (default: start one on this machine)")
    parser.add_argument("--out", default=None, help="write the numbers here as JSON")
    args = parser.parse_args()

    images = [str(p) for p in find_images([args.images])[:args.limit]]
    cli = {"model": [args.model], "checkpoint": [args.checkpoint], "images": images, "steps": args.steps,
           "no_cache": True, **POLICY}
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as local_dir, tempfile.TemporaryDirectory() as ray_dir:
        local = AuditSession(resolve_settings({**cli, "executor": "local"}), local_dir)
        local_s = make_all(local, local.executor)
        ray_session = AuditSession(resolve_settings({**cli, "executor": "ray", "ray_address": args.ray_address}),
                                   ray_dir)
        executor = ray_session.executor
        start = time.perf_counter()
        executor.start()
        connect_s = time.perf_counter() - start
        try:
            ray_s = make_all(ray_session, executor)
        finally:
            executor.close()
        ours, theirs = aucs(ray_session), aucs(local)
    load_after = os.getloadavg()
    n = len(images)
    numbers = {
        "images": n, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "local_s": local_s, "local_records_per_s": n / local_s,
        "ray": executor.describe(), "ray_connect_s": connect_s, "ray_s": ray_s, "ray_records_per_s": n / ray_s,
        "speedup": local_s / ray_s, "max_abs_auc_difference": max(abs(ours[k] - theirs[k]) for k in theirs),
        "aucs_compared": len(theirs), "same_aucs": sorted(ours) == sorted(theirs),
        "load_average_before": load_before, "load_average_after": load_after,
    }
    print(f"{n} images, {os.cpu_count()} CPUs; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"one process ({torch.get_num_threads()} torch threads): {local_s:.1f} s, {n / local_s:.3f} records/s")
    print(f"{executor.describe()}: connect {connect_s:.1f} s, then {ray_s:.1f} s, {n / ray_s:.3f} records/s "
          f"({local_s / ray_s:.2f}x one process)")
    print(f"max |AUC difference| {numbers['max_abs_auc_difference']:.2e} over {len(theirs)} AUCs")
    if args.out:
        Path(args.out).write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
