"""One (model, image) record of a run: served by the cache when it holds one made the same way, else computed
(capture, maps, curves, restorations, thumbnails) and written to the cache as soon as it is done."""

from __future__ import annotations

import time
from typing import Any, cast

from ..config.settings import AuditSettings
from ..errors import AuditError
from ..measure.curves import AUTO_BATCH, PerturbationConfig
from ..measure.image_audit import audit_group, one_thread
from ..model.images import prepare_image
from ..model.load import LoadedModel
from ..model.restore import PatchInverse
from ..results.schema import error_run_record, run_record
from .cache import RunCache, run_key
from .plan import ModelPlan, auto_image_batch

__all__ = ["MADE_HOW", "Item", "RecordMaker", "made_how"]

# what every record says of its making; image_batch: how many images were audited together, sharing the curves' batches
MADE_HOW = ("seconds", "inverse_exact", "measured_stages", "curves_for", "image_batch")
# an image to make a record of: (path, image id, its file's sha256 or None, its bytes or None). With bytes (a Ray
# task's image, read where the file is) the path only names it.
Item = tuple[str, str, str | None, bytes | None]


def made_how(seconds: float, inverse: PatchInverse, plan: ModelPlan, images: int = 1) -> dict[str, Any]:
    """The :data:`MADE_HOW` fields of a record that took ``seconds`` to make (or to fail), in a group of ``images``."""
    return dict(zip(MADE_HOW, (seconds, inverse.exact, plan.measured, plan.curves_for, images)))


class RecordMaker:
    """Makes the records of a run's (model, image) pairs with the run's settings, recipe and device.

    Args:
        settings: the resolved settings (``cache`` and ``no_cache`` say where records are kept between runs).
        config: the MoRF/LeRF recipe.
        device: where the models run.
    """

    def __init__(self, settings: AuditSettings, config: PerturbationConfig, device: str):
        self.settings, self.config, self.device = settings, config, device
        self._cache: RunCache | None = None

    @property
    def cache(self) -> RunCache | None:
        """The records kept between runs (None under ``--no-cache``); its folder is made on first use."""
        if self._cache is None and self.settings.cache and not self.settings.no_cache:
            self._cache = RunCache(self.settings.cache)
        return self._cache

    def cache_lines(self) -> list[str]:
        """``cache: 18 record(s) reused, 2 computed (DIR)`` and a line per unusable entry, once the cache was used
        in this process."""
        cache = self._cache
        if cache is None or not (cache.hits or cache.misses):
            return []
        ignored = f"; {len(cache.ignored)} unusable entries ignored" if cache.ignored else ""
        return [f"cache: {cache.hits} record(s) reused, {cache.misses} computed ({cache.folder}){ignored}",
                *cache.ignored]

    def image_batch(self, loaded: LoadedModel, plan: ModelPlan) -> int:
        """How many images' perturbed copies share the curves' batches (``--image-batch``; ``auto``: enough images to
        fill one batch, :func:`audit.run.plan.auto_image_batch`)."""
        if self.settings.image_batch != AUTO_BATCH:
            return int(self.settings.image_batch)
        return auto_image_batch(plan, self.settings, loaded, self.config, self.device)

    def make(self, loaded: LoadedModel, plan: ModelPlan, inverse: PatchInverse, item: Item,
             label_of=None) -> dict[str, Any]:
        """The record of one image ``item``; an image that cannot be audited gets an error record with its one-line
        reason, and an error that is not the image's (a bug) is raised.

        ``label_of(path, num_classes)`` gives the image's true class (``--labels``); it may raise an AuditError.
        """
        record = self.make_group(loaded, plan, inverse, [item], label_of)[0]
        if isinstance(record, Exception):
            raise record
        return record

    def make_group(self, loaded: LoadedModel, plan: ModelPlan, inverse: PatchInverse, items: list[Item],
                   label_of=None) -> list[dict[str, Any] | Exception]:
        """The records of several images (:data:`Item` each), those not cached audited together so that their
        perturbed copies share the curves' batches (:func:`audit.measure.image_audit.audit_group`).

        Each record is cached as soon as its group is done. An image that cannot be audited gets an error record; an
        error that is not the image's stands in its place. A record's ``seconds`` is its share of the group's time and
        the time of its own record; its ``image_batch`` is how many images were audited together.
        """
        start = time.perf_counter()
        s = self.settings
        out: list[dict[str, Any] | Exception | None] = [None] * len(items)
        todo: list[tuple[int, Any, int | None, dict[str, Any] | None]] = []  # (index, prepared image, label, cache key)
        record: dict[str, Any] | Exception | None  # a cached record, a made one, then each image's entry
        for index, (path, image_id, sha256, data) in enumerate(items):
            try:
                label = label_of(path, loaded.num_classes) if label_of else None
                key = run_key(s, loaded, plan, self.device, sha256, label) if self.cache is not None else None
                record = cast(RunCache, self.cache).get(key) if key is not None else None  # a key only with a cache
                if record is None:
                    prepared = prepare_image(path if data is None else data, loaded.data_config, name=image_id,
                                             source=path)
                    todo.append((index, prepared, label, key))
                else:
                    out[index] = record
            except AuditError as err:
                out[index] = self._error(loaded, path, err, start, inverse, plan)
        if todo:
            results = audit_group(loaded, [prepared for _, prepared, _, _ in todo], [label for _, _, label, _ in todo],
                                  methods=s.methods, stages=plan.measured, act=s.act, config=self.config, seed=s.seed,
                                  device=self.device, keep_capture=True, inverse=inverse, curves_for=plan.curves_for)
            share = (time.perf_counter() - start) / len(todo)  # of the group's time, before each record's own
            for (index, _, _, key), result in zip(todo, results):
                path = items[index][0]
                if isinstance(result, AuditError):
                    out[index] = self._error(loaded, path, result, start, inverse, plan)
                    continue
                if isinstance(result, Exception):
                    out[index] = result
                    continue
                own = time.perf_counter()
                with one_thread():  # thumbnails and small tensors (audit.measure.image_audit.one_thread)
                    record = run_record(loaded, result, thumbnail=max(s.report_thumbnail, 64))
                record.update(made_how(share + time.perf_counter() - own, inverse, plan, images=len(todo)))
                if key is not None:
                    cast(RunCache, self.cache).put(key, record)  # on disk as soon as it is done
                out[index] = record
        for (path, image_id, _, _), record in zip(items, out):
            if isinstance(record, dict):
                record.update(image=path, image_name=image_id)  # the same bytes may be found under another name
        return cast("list[dict[str, Any] | Exception]", out)  # every image's entry is filled in

    @staticmethod
    def _error(loaded: LoadedModel, path: str, err: AuditError, start: float, inverse: PatchInverse,
               plan: ModelPlan) -> dict[str, Any]:
        record = error_run_record(loaded.name, path, str(err))
        record.update(made_how(time.perf_counter() - start, inverse, plan))
        return record
