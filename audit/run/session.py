"""The state of one audit run, shared by every check: models, images, and results computed once.

Set-up (loading the models, finding the images) is :mod:`audit.run.inputs`; the records computed once per (model, image)
and per model, shared by every process of the run, are kept by :mod:`audit.run.store` and made by
:mod:`audit.run.records` (the randomisation check's by :mod:`audit.measure.randomisation`). This class ties them to the
gates and the baseline; :mod:`audit.run.assemble` writes them into the results file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import torch

from ..config.settings import AuditSettings
from ..errors import AuditError
from ..measure.precision import resolve_amp
from ..measure.probes import attraction, parse_probe, place, probe_image
from ..measure.randomisation import randomisation_record
from ..model.images import PreparedImage, prepare_image
from ..model.load import LoadedModel
from ..model.restore import PatchInverse
from ..results.schema import SCHEMA, error_run_record, model_record
from ..verdicts.classes import class_agreement
from ..verdicts.compare import (
    Baseline,
    baseline_stage,
    check_measured,
    check_paired,
    check_recipe,
    compare_map,
    load_baseline,
    maps_for_class,
    paired_runs,
    planning_power,
)
from ..verdicts.gates import apply_holm, evaluate_gate, gate_inputs
from ..verdicts.margins import margin_for
from ..verdicts.reasons import compare_probe, compare_regions, probe_limits, record_localisation, region_gate
from .assemble import assemble_results
from .cache import RunCache, run_key
from .executors import executor_for
from .inputs import checkpoint_for_workers, collect_images, load_models, load_named, model_id_for, read_labels
from .plan import ModelPlan, map_keys, plan_lines, plan_model
from .records import MADE_HOW, Item, RecordMaker, made_how
from .region_geometry import token_regions
from .regions import ImageRegionsError, load_regions
from .store import RecordStore
from .work import Case, MapKey, ProbeKey, RemoteTask

__all__ = ["AuditSession", "Case", "MapKey", "ProbeKey", "model_id_for"]

BASELINE_PREFIX = "baseline-"  # the id of a baseline model audited in this run: baseline-<its model id>


class AuditSession:
    """Models and images of a run, and access to results computed once for the whole run.

    Models are loaded and images found here, so that usage errors surface before any check runs.

    Args:
        settings: the resolved settings.
        workdir: the folder shared by every process of the run.
        embedded: whether the settings name the embedded default model (recorded in the results).
    """

    def __init__(self, settings: AuditSettings, workdir: str | os.PathLike[str], embedded: bool = False):
        self.settings = settings
        self.embedded = embedded
        self.store = RecordStore(workdir)
        self.device = self._device(settings.device)
        # --amp auto is resolved here, once, before the plans, the recipe and the cache key read it
        # (audit.measure.precision)
        self.precision = resolve_amp(settings.amp, self.device)
        self.settings = settings = replace(settings, amp=self.precision.amp)
        # A model that cannot be loaded does not stop the others: its error is kept for its check to report. With
        # no model loaded there is nothing to audit, and the first error stops the run.
        found = load_models(settings.model, settings.checkpoint)
        self.models, self.model_errors, self.model_ids = found.models, found.errors, found.ids
        self.image_set = collect_images(settings.images, keep_duplicates=settings.keep_duplicate_images)
        self.labels = read_labels(settings.labels) if settings.labels else None
        self.images = [(entry.id, entry.path) for entry in self.image_set.entries]
        self.plans: dict[str, ModelPlan] = {}
        for model_id, model in self.models.items():
            self._plan(model_id, model)
        self.inverses = {model_id: PatchInverse(loaded.model) for model_id, loaded in self.models.items()}
        self.config = settings.perturbation()
        # right for the right reasons: the regions of the images and the probes, read once (usage errors here)
        self.regions = load_regions(settings.regions, settings.region_roles) if settings.regions else None
        self.probes = [parse_probe(spec) for spec in settings.probe]
        for probe in self.probes:
            for loaded in self.models.values():
                place(probe, loaded.input_size)  # a stamp larger than an input, or placed outside it
        self._runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.records = RecordMaker(settings, self.config, self.device)
        self.baseline_model: LoadedModel | None = None
        self.baseline = (self._baseline() if settings.baseline else
                         self._audited_baseline() if settings.baseline_model else None)
        self.executor = executor_for(settings)  # where the records are made; started by the plugin's controller

    def _audited_baseline(self) -> Baseline:
        """The released model audited in this run, with the same recipe, images and gates as the candidates."""
        s = self.settings
        assert s.baseline_model is not None and s.baseline_checkpoint is not None  # given together (settings)
        loaded = load_named(s.baseline_model, s.baseline_checkpoint)
        model_id = f"{BASELINE_PREFIX}{model_id_for(s.baseline_model, s.baseline_checkpoint)}"
        self.baseline_model = loaded
        self._plan(model_id, loaded)
        self.inverses[model_id] = PatchInverse(loaded.model)

        def runs() -> dict[str, dict[str, Any]]:
            return {e.sha256: self.run(Case(model_id, e.id, e.path)) for e in self.image_set.entries if e.sha256}

        results = {"schema": SCHEMA, "perturbation": self.config.describe(), "settings": asdict(s)}
        return Baseline(f"{s.baseline_model} ({s.baseline_checkpoint}), audited in this run", None, results,
                        model_record(loaded, model_id), compute_runs=runs)

    def _model(self, model_id: str) -> LoadedModel:
        return self.models[model_id] if model_id in self.models else cast(LoadedModel, self.baseline_model)

    def _baseline(self) -> Baseline:
        """The baseline results file, checked against every model's recipe and gates (a usage error otherwise)."""
        assert self.settings.baseline is not None  # called only with --baseline
        baseline = load_baseline(self.settings.baseline)
        for loaded in self.models.values():
            check_recipe(baseline, self.config.describe(), asdict(self.settings), loaded)
        check_measured(baseline, self.settings.gated())
        check_paired(baseline, [entry.sha256 for entry in self.image_set.entries], self.settings.gated())
        probed = (baseline.results.get("settings") or {}).get("probe") or []
        missing = [spec for spec in self.settings.probe if spec not in probed]
        if missing:
            raise ValueError(f"baseline: {self.settings.baseline!r} was made without --probe {missing[0]}; audit the "
                             "released model again with the same probes (or use --baseline-model)")
        return baseline

    def _plan(self, model_id: str, loaded: LoadedModel) -> None:
        """The stages measured and gated for one model (:func:`audit.run.plan.plan_model`)."""
        self.plans[model_id] = plan_model(self.settings, loaded)

    @property
    def gates(self) -> dict[str, list[tuple[str, str]]]:
        """Model id -> its gated (method, stage) pairs, stages in canonical form."""
        return {model_id: plan.gates for model_id, plan in self.plans.items()}

    def plan_lines(self, model_id: str) -> list[str]:
        """What the run will measure on a model, with an ETA (:func:`audit.run.plan.plan_lines`)."""
        return plan_lines(self.plans[model_id], self.settings, self.models[model_id], len(self.images), self.device,
                          note=self.precision.plan_note(self.device))

    @staticmethod
    def _device(device: str) -> str:
        if device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
        return device

    # -- what checks are parametrised by -------------------------------------------------------------------------
    def cases(self) -> list[Case]:
        return [Case(model_id, image_id, path) for model_id in self.models for image_id, path in self.images]

    def map_keys(self) -> list[MapKey]:
        """(model id, method, stage) for every map of every model (``ig``: its one stage, the input)."""
        return [MapKey(model_id, method, stage) for model_id, loaded in self.models.items()
                for method, stage in map_keys(self.settings.methods, loaded.layout.depth)]

    def gate_keys(self) -> list[MapKey]:
        """(model id, method, stage) of every gated map of the audited models (a baseline audited here has none)."""
        return [MapKey(model_id, method, stage) for model_id, gates in self.gates.items() if model_id in self.models
                for method, stage in gates]

    def is_gated(self, model_id: str, method: str, stage: str) -> bool:
        return (method, stage) in self.gates.get(model_id, [])

    # -- results computed once -----------------------------------------------------------------------------------
    def run(self, case: Case) -> dict[str, Any]:
        """The record of one (model, image): computed by the first process that asks, read by the others."""
        if case.key not in self._runs:
            self._runs[case.key] = self.store.once("runs", case.key, lambda: self._compute_run(case))
        return self._runs[case.key]

    def run_group(self, cases: list[Case]) -> None:
        """Make the records of several cases of one model together, their curves' batches shared across images
        (``--image-batch``); a case whose record is stored already is left alone. Each record is then read with
        :meth:`run`; one that failed with an error that is not its image's is left for its check to make again and
        report."""
        todo = [case for case in cases if case.key not in self._runs and self.store.read("runs", case.key) is None]
        if len(todo) > 1:
            model_id = todo[0].model_id
            records = self.records.make_group(self._model(model_id), self.plans[model_id], self.inverses[model_id],
                                              [self._item(case) for case in todo], self._label_of)
            failed = {case.key for case, record in zip(todo, records) if not isinstance(record, dict)}
            for case, record in zip(todo, records):
                if case.key not in failed:
                    self.keep_run(case, cast("dict[str, Any]", record))  # not failed: a record
            cases = [case for case in cases if case.key not in failed]  # left for their checks to make and report
        for case in cases:
            self.run(case)

    @property
    def caching(self) -> bool:
        """Whether finished records are also kept in the cache."""
        return self.records.cache is not None

    def remote_task(self, case: Case, device: str) -> RemoteTask | None:
        """The task that makes the case's record on a worker running on ``device``, with the cache key its record will
        be stored under; None where the record is had here instead: already stored, served by the cache, or failing
        before any model work (its label or its file cannot be read), made at once with the same error as a local
        run."""
        if self.store.read("runs", case.key) is not None:
            return None
        s, loaded, plan = self.settings, self.models[case.model_id], self.plans[case.model_id]
        entry = self.image_set.entry(case.image_id)
        sha256 = entry.sha256 if entry else None
        try:
            label = self.labels.class_of(case.path, loaded.num_classes) if self.labels else None
        except AuditError:
            self.run(case)
            return None
        cache = self.records.cache
        key = run_key(s, loaded, plan, device, sha256, label) if cache is not None else None
        cached = cast(RunCache, cache).get(key) if key is not None else None  # a key only with a cache
        if cached is not None:
            cached.update(image=case.path, image_name=case.image_id)
            self.keep_run(case, cached)
            return None
        try:  # read only for a task: a cached record needs no bytes
            data = Path(case.path).read_bytes()
        except OSError:
            self.run(case)
            return None
        name, checkpoint = dict(zip(self.model_ids, zip(s.model, s.checkpoint)))[case.model_id]
        payload = {"settings": replace(s, cache=None, no_cache=True), "config": self.config, "plan": plan,
                   "model": (name, checkpoint_for_workers(checkpoint), loaded.checkpoint_sha256),
                   "path": case.path, "image_id": case.image_id, "sha256": sha256, "label": label, "data": data,
                   "device": device}
        return RemoteTask(payload, key)

    def keep_remote(self, case: Case, task: RemoteTask, record: dict[str, Any], seconds: float) -> None:
        """Keep the record a worker returned (and cache it, as a local run would)."""
        if "worker_error" in record:
            plan, inverse = self.plans[case.model_id], self.inverses[case.model_id]
            record = {**error_run_record(self.models[case.model_id].name, case.path, record["worker_error"]),
                      **made_how(seconds, inverse, plan)}
        elif task.key is not None and not record.get("error"):
            cast(RunCache, self.records.cache).put(task.key, record)  # a key only with a cache (remote_task)
        self.keep_run(case, record)

    def image_batch(self, model_id: str) -> int:
        """How many of a model's images share the curves' batches (``--image-batch``, ``auto`` resolved)."""
        return self.records.image_batch(self._model(model_id), self.plans[model_id])

    def _item(self, case: Case) -> Item:
        """What the record maker needs of a case's image: (path, image id, sha256, no bytes: read from the path)."""
        entry = self.image_set.entry(case.image_id)
        return case.path, case.image_id, entry.sha256 if entry else None, None

    @property
    def _label_of(self):
        """``--labels``' reader of an image's true class, or None."""
        return self.labels.class_of if self.labels else None

    def _compute_run(self, case: Case) -> dict[str, Any]:
        model_id = case.model_id
        record = self.records.make(self._model(model_id), self.plans[model_id], self.inverses[model_id],
                                   self._item(case), self._label_of)
        return self.finish_run(case, record)

    def finish_run(self, case: Case, record: dict[str, Any]) -> dict[str, Any]:
        """The session's part of a record, wherever it was made: the maps of the baseline's class, and the ids."""
        loaded = self._model(case.model_id)
        if not record.get("error"):
            prepared: list[PreparedImage] = []

            def image() -> PreparedImage:  # prepared once, when the first of the two needs it
                if not prepared:
                    prepared.append(prepare_image(case.path, loaded.data_config, name=case.image_id))
                return prepared[0]

            try:
                self._maps_for_baseline_class(case, loaded, record, image)
                self._right_reasons(case, loaded, record, image)
            except AuditError as err:
                record = {**error_run_record(loaded.name, case.path, str(err)), **{k: record.get(k) for k in MADE_HOW}}
        record.update(model_id=case.model_id, image_id=case.image_id)
        return record

    def keep_run(self, case: Case, record: dict[str, Any]) -> dict[str, Any]:
        """Keep a record made elsewhere (a Ray task, or a group) as the run's record of ``case``, unless one is kept
        already."""
        if case.key not in self._runs:
            self._runs[case.key] = self.store.once("runs", case.key, lambda: self.finish_run(case, record))
        return self._runs[case.key]

    def _maps_for_baseline_class(self, case: Case, loaded: LoadedModel, record: dict[str, Any],
                                 image: Callable[[], PreparedImage]) -> None:
        """Where the baseline explained another class on this image, the gated maps of that class too (drift
        compares maps of the same class)."""
        if self.baseline is None or case.model_id not in self.models:  # the baseline's own runs compare nothing
            return
        entry = self.image_set.entry(case.image_id)
        other = self.baseline.runs.get(entry.sha256) if entry and entry.sha256 else None
        if other is None or other.get("error") or other.get("class") in (None, record["class"]):
            return
        record["baseline_class"] = other["class"]
        record["baseline_class_maps"] = maps_for_class(loaded, image(), int(other["class"]), self.gates[case.model_id],
                                                       self.settings.act, self.settings.seed, self.device)

    def _right_reasons(self, case: Case, loaded: LoadedModel, record: dict[str, Any],
                       image: Callable[[], PreparedImage]) -> None:
        """The image's regions on the token grid and its gated maps' localisation (``--regions``), and its stamped
        copies (``--probe``): no curves, the maps and one forward and backward pass per probe."""
        keys = [f"{method}@{stage}" for method, stage in self.gates.get(case.model_id, [])]
        layout = loaded.layout
        if self.regions is not None:
            found = self.regions.for_image(case.path)
            if found is None:
                record["regions"] = {"problem": "no regions for this image"}
            else:
                try:
                    tokens = token_regions(found, case.path, loaded.data_config, layout.grid, layout.patch_size)
                except ImageRegionsError as err:
                    record["regions"] = {"problem": str(err)}
                else:
                    record["regions"] = {"object": tokens.object, "artefact": tokens.artefact, "void": tokens.void,
                                         "labels": list(tokens.labels), "notes": list(tokens.notes)}
                    record["localisation"] = record_localisation(record["maps"], record["regions"], keys)
        if self.probes:
            s = self.settings
            record["probes"] = {probe.spec: probe_image(loaded, image(), probe, self.gates.get(case.model_id, []),
                                                        int(record["class"]), act=s.act, seed=s.seed,
                                                        device=self.device)
                                for probe in self.probes}

    # -- right for the right reasons: regions, probes, classes -----------------------------------------------------
    def region_keys(self) -> list[MapKey]:
        """(model id, method, stage) of every gated map whose relevance on the regions is gated (``--regions``)."""
        return self.gate_keys() if self.regions is not None else []

    def region_gate(self, model_id: str, method: str, stage: str) -> dict[str, Any]:
        """The regions gate of one map: absolute (mass on the objects above chance), and with a baseline also paired
        (:mod:`audit.verdicts.reasons`); computed once for the run."""
        return self.store.once("regions", (model_id, method, stage),
                               lambda: self._compute_region_gate(model_id, method, stage))

    def _compute_region_gate(self, model_id: str, method: str, stage: str) -> dict[str, Any]:
        s, key = self.settings, f"{method}@{stage}"
        record = region_gate(self.runs_of(model_id), key, min_images=s.min_images, threshold=s.region_threshold,
                             limits=s.limits.get(key), seed=s.seed)
        record.update(model_id=model_id, method=method, stage=stage)
        if self.baseline is not None:
            written = dict(zip(self.gates[model_id], s.gated()))[(method, stage)]
            base_key = f"{method}@{baseline_stage(self.baseline, written[1])}"
            digests = {entry.id: entry.sha256 for entry in self.image_set.entries}
            record["paired"] = compare_regions(self.runs_of(model_id), digests, self.baseline.runs, key, base_key,
                                               margin=s.region_margin, min_images=s.min_images, seed=s.seed)
        return record

    def probe_keys(self) -> list[ProbeKey]:
        """(model id, probe) of every probe of every audited model."""
        return [ProbeKey(model_id, probe.spec) for model_id in self.models for probe in self.probes]

    def probe(self, model_id: str, spec: str) -> dict[str, Any]:
        """A probe's record: the attraction and the stamp's mass, paired with the baseline where there is one, and
        the policy's absolute limits; computed once for the run."""
        return self.store.once("probes", (model_id, spec), lambda: self._compute_probe(model_id, spec))

    def _compute_probe(self, model_id: str, spec: str) -> dict[str, Any]:
        s, loaded = self.settings, self.models[model_id]
        keys = [f"{method}@{stage}" for method, stage in self.gates[model_id]]
        runs = self.runs_of(model_id)
        record = probe_limits(runs, spec, keys, loaded.num_classes, max_attraction=s.max_attraction,
                              max_stamp_mass=s.max_stamp_mass, min_images=s.min_images, seed=s.seed)
        record.update(model_id=model_id, model=loaded.name)
        entries: list[Any] = [(run.get("probes") or {}).get(spec) for run in runs if not run.get("error")]
        entries = [e for e in entries if e is not None]
        record["attraction"] = attraction([e["clean_class"] for e in entries], [e["stamped_class"] for e in entries],
                                          loaded.num_classes)
        record["mean_mass"] = {key: (sum(v) / len(v) if v else None) for key in keys
                               for v in [[e["mass"][key] for e in entries if e["mass"].get(key) is not None]]}
        if self.baseline is not None:
            pairs = [(key, f"{m}@{baseline_stage(self.baseline, st)}")
                     for key, (m, st) in zip(keys, s.gated())]
            digests = {entry.id: entry.sha256 for entry in self.image_set.entries}
            record["paired"] = compare_probe(runs, digests, self.baseline.runs, spec, pairs, loaded.num_classes,
                                             attraction_margin=s.attraction_margin, stamp_margin=s.stamp_margin,
                                             min_images=s.min_images, seed=s.seed)
        return record

    def class_agreement(self, model_id: str) -> dict[str, Any]:
        """The per-class collapse gate of a model against the baseline
        (:func:`audit.verdicts.classes.class_agreement`)."""
        return self.store.once("classes", (model_id,), lambda: self._compute_classes(model_id))

    def _compute_classes(self, model_id: str) -> dict[str, Any]:
        digests = {entry.id: entry.sha256 for entry in self.image_set.entries}
        assert self.baseline is not None  # the class gate is collected only with a baseline
        both, _ = paired_runs(self.runs_of(model_id), digests, self.baseline.runs)
        pairs = [(int(other["class"]), other.get("class_name"), int(run["class"])) for run, other in both
                 if other.get("class") is not None]
        record = class_agreement(pairs, self.settings.min_class_agreement)
        record.update(model_id=model_id, model=self.models[model_id].name)
        return record

    def runs_of(self, model_id: str) -> list[dict[str, Any]]:
        return [self.run(Case(model_id, image_id, path)) for image_id, path in self.images]

    def randomisation(self, model_id: str) -> dict[str, Any]:
        """The cascading randomisation check of a model, on ``randomisation_images`` readable images chosen
        round-robin over classes (``--labels``' true classes, else the model's top-1), ``randomisation_seeds`` times."""
        return self.store.once("sanity", (model_id,), lambda: self._compute_randomisation(model_id))

    def _compute_randomisation(self, model_id: str) -> dict[str, Any]:
        return randomisation_record(self.models[model_id], model_id, self.images, self.settings, self.config,
                                    self.device, labels=self._label_of)

    def gate(self, model_id: str, method: str, stage: str) -> dict[str, Any]:
        """Evaluate one gate over every image and store its record for the results file.

        With ``--fail-correction holm`` every gate of the model is evaluated together, so that Holm's correction of
        the fail verdicts sees all of them.
        """
        if self.settings.fail_correction != "holm":
            return self._store_gate(model_id, self._evaluate_gate(model_id, method, stage))
        records = [self._evaluate_gate(model_id, m, st) for m, st in self.gates[model_id]]
        apply_holm(records)
        for record in records:
            self._store_gate(model_id, record)
        return next(r for r in records if (r["method"], r["stage"]) == (method, stage))

    def _evaluate_gate(self, model_id: str, method: str, stage: str) -> dict[str, Any]:
        data, baseline, skipped = gate_inputs(self.runs_of(model_id), method, stage)
        s = self.settings
        record = evaluate_gate(self.models[model_id].name, method, stage, data, threshold=s.threshold, seed=s.seed,
                               min_images=s.min_images, limits=s.limits.get(f"{method}@{stage}"),
                               baseline=baseline if method != "random" and baseline.images else None)
        record["model_id"] = model_id
        if skipped:
            record["unreadable_images"] = skipped
            record["reason"] += f"; {len(skipped)} image(s) could not be read: {', '.join(skipped)}"
        return record

    def _store_gate(self, model_id: str, record: dict[str, Any]) -> dict[str, Any]:
        self.store.write("gates", (model_id, record["method"], record["stage"]), record)
        return record

    def comparison_keys(self) -> list[MapKey]:
        """(model id, method, stage) of every gated map compared with the baseline (none without a baseline)."""
        return self.gate_keys() if self.baseline is not None else []

    def comparison(self, model_id: str, method: str, stage: str) -> dict[str, Any]:
        """Compare one gated map with the baseline, image by image (computed once for the run).

        With ``--fail-correction holm`` every compared map of the model is compared together, and Holm's correction
        applies to their fail verdicts.
        """
        if self.settings.fail_correction != "holm":
            return self.store.once("comparisons", (model_id, method, stage),
                                   lambda: self._compute_comparison(model_id, method, stage))

        def family() -> list[dict[str, Any]]:
            records = [self._compute_comparison(model_id, m, st) for m, st in self.gates[model_id]]
            for record in records:
                record["threshold"] = -record["margin"]
            apply_holm(records)
            return records

        records = self.store.once("comparison-families", (model_id,), family)
        record = next(r for r in records if (r["method"], r["stage"]) == (method, stage))
        return self.store.once("comparisons", (model_id, method, stage), lambda: record)

    def margin(self, gate: str) -> tuple[Any, str]:
        """The margin of a compared map as the policy writes it (``grad@0``), and where it came from."""
        s = self.settings
        margin, source = margin_for(gate, s.margins, s.margin)
        if source == "margin":
            source = f"margin, from {s.origin('margin')}"
        elif source.startswith("margins."):
            source = f"{source}, from {s.origin('margins')}"
        return margin, source

    def comparison_plan_lines(self) -> list[str]:
        """Before the run: each compared map's margin and where it came from, and, from a baseline results file, the
        power to plan with (:func:`audit.verdicts.compare.planning_power`)."""
        digests = [entry.sha256 for entry in self.image_set.entries]
        assert self.baseline is not None  # called only with a baseline (the plugin's header)
        lines = []
        for method, stage in self.settings.gated():
            gate = f"{method}@{stage}"
            margin, source = self.margin(gate)
            plan = planning_power(self.baseline, digests, method, baseline_stage(self.baseline, stage), margin)
            lines.append(f"compare {gate}: margin {margin.text()} ({source}); {plan}")
        return lines

    def _compute_comparison(self, model_id: str, method: str, stage: str) -> dict[str, Any]:
        written = dict(zip(self.gates[model_id], self.settings.gated()))[(method, stage)]
        loaded, s = self.models[model_id], self.settings
        digests = {entry.id: entry.sha256 for entry in self.image_set.entries}
        margin, source = self.margin(f"{written[0]}@{written[1]}")
        assert self.baseline is not None  # comparisons are made only with a baseline
        return compare_map(self.runs_of(model_id), digests, self.baseline, method, stage,
                           baseline_stage(self.baseline, written[1]), model_id=model_id, model_name=loaded.name,
                           input_size=loaded.input_size, margin=margin, margin_source=source,
                           min_images=s.min_images, min_map_agreement=s.min_map_agreement, seed=s.seed)

    def comparison_records(self) -> list[dict[str, Any]]:
        order: dict[tuple[str, str, str], int] = {key: i for i, key in enumerate(self.comparison_keys())}
        records = self.store.read_all("comparisons")
        return sorted(records, key=lambda r: order.get((r["model_id"], r["method"], r["stage"]), len(order)))

    def gate_records(self) -> list[dict[str, Any]]:
        """Every gate evaluated so far (by any process), in the order of :meth:`gate_keys`."""
        order: dict[tuple[str, str, str], int] = {key: i for i, key in enumerate(self.gate_keys())}
        gates = self.store.read_all("gates")
        return sorted(gates, key=lambda g: order.get((g["model_id"], g["method"], g["stage"]), len(order)))

    # -- the results file ----------------------------------------------------------------------------------------
    def results(self, checks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Assemble the results file from every record the run produced (any process; :mod:`audit.run.assemble`)."""
        return assemble_results(self, checks)
