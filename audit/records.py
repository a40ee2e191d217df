"""One (model, image) record of a run: served by the cache when it holds one made the same way, else computed
(capture, maps, curves, restorations, thumbnails) and written to the cache as soon as it is done."""

from __future__ import annotations

import time
from typing import Any

from .cache import RunCache, run_key
from .errors import AuditError
from .images import prepare_image
from .models import LoadedModel
from .perturb import PerturbationConfig
from .pipeline import audit_image, one_thread
from .plan import ModelPlan
from .restore import PatchInverse
from .results import error_run_record, run_record
from .settings import AuditSettings

__all__ = ["MADE_HOW", "RecordMaker", "made_how"]

MADE_HOW = ("seconds", "inverse_exact", "measured_stages", "curves_for")  # what every record says of its making


def made_how(seconds: float, inverse: PatchInverse, plan: ModelPlan) -> dict[str, Any]:
    """The :data:`MADE_HOW` fields of a record that took ``seconds`` to make (or to fail)."""
    return dict(zip(MADE_HOW, (seconds, inverse.exact, plan.measured, plan.curves_for)))


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

    def make(self, loaded: LoadedModel, plan: ModelPlan, inverse: PatchInverse, path: str, image_id: str,
             sha256: str | None, label_of=None, data: bytes | None = None) -> dict[str, Any]:
        """The record of one image; an image that cannot be audited gets an error record with its one-line reason.

        ``label_of(path, num_classes)`` gives the image's true class (``--labels``); it may raise an AuditError.
        ``data``: the image file's bytes, read where the file is (a Ray task's image); ``path`` then only names it.
        """
        start = time.perf_counter()
        s = self.settings
        try:
            label = label_of(path, loaded.num_classes) if label_of else None
            key = run_key(s, loaded, plan, self.device, sha256, label) if self.cache is not None else None
            record = self.cache.get(key) if key is not None else None
            if record is None:
                prepared = prepare_image(path if data is None else data, loaded.data_config, name=image_id,
                                         source=path)
                result = audit_image(loaded, prepared, methods=s.methods, stages=plan.measured, act=s.act,
                                     config=self.config, seed=s.seed, label=label, device=self.device,
                                     keep_capture=True, inverse=inverse, curves_for=plan.curves_for)
                with one_thread():  # thumbnails and small tensors (audit.pipeline.one_thread)
                    record = run_record(loaded, result, thumbnail=max(s.report_thumbnail, 64))
                record.update(made_how(time.perf_counter() - start, inverse, plan))
                if key is not None:
                    self.cache.put(key, record)  # on disk as soon as it is done
            record.update(image=path, image_name=image_id)  # the same bytes may be found under another name
        except AuditError as err:
            record = error_run_record(loaded.name, path, str(err))
            record.update(made_how(time.perf_counter() - start, inverse, plan))
        return record
