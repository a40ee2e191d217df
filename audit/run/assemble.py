"""The results file of a run: every record its processes produced, with the summaries, the settings, the policy and
the environment, each run trimmed to ``--results-detail`` (:mod:`audit.results.detail`)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, cast

import torch

from ..config.policy import policy_record
from ..measure.stats import summarize
from ..results.detail import trim_comparison, trim_run
from ..results.schema import SCHEMA, clean, environment_record, model_record

if TYPE_CHECKING:
    from .session import AuditSession

__all__ = ["assemble_results"]


def assemble_results(session: AuditSession, checks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The results file of ``session`` from every record the run produced (any process), and the checks' outcomes."""
    runs = [run for run in (session.store.read("runs", case.key) for case in session.cases()) if run is not None]
    s = session.settings
    settings = {k: v for k, v in asdict(s).items() if k != "limits"}
    settings["limits"] = {k: asdict(v) for k, v in s.limits.items()}
    labels = session.labels
    return clean({
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment_record(session.device, s.seed, threads=torch.get_num_threads()),
        "settings": settings,
        "embedded_default": session.embedded,
        "perturbation": session.config.describe(),
        "precision": session.precision.record(),
        "policy": policy_record(s),
        "models": [model_record(session.models[model_id], model_id) if model_id in session.models
                   else {"id": model_id, **session.model_errors[model_id]} for model_id in session.model_ids],
        "images": session.image_set.record(),
        "images_left_out": session.image_set.left_out,
        **({"labels": {"path": labels.path, "sha256": labels.sha256}} if labels else {}),
        "runs": [trim_run(run, s.results_detail, session.gates.get(cast(str, run.get("model_id")), []))
                 for run in runs],
        "gates": session.gate_records(),
        "summaries": _summaries(session, runs),
        "randomisation": session.store.read_all("sanity"),
        "regions": session.store.read_all("regions"),
        "probes": session.store.read_all("probes"),
        **_comparison_results(session),
        "checks": checks or [],
    })


def _summaries(session: AuditSession, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean AUCs and ABPC of every (model, map) with curves, with bootstrap CIs over the images."""
    summaries = []
    for model_id, loaded in session.models.items():
        records = [(key.split("@")[0], key.split("@")[1], m["morf_auc"], m["lerf_auc"])
                   for run in runs if run.get("model_id") == model_id and not run.get("error")
                   for key, m in run["maps"].items() if m.get("morf_auc") is not None]
        for summary in summarize(records, seed=session.settings.seed):
            summaries.append({"model": loaded.name, "model_id": model_id, **asdict(summary)})
    return summaries


def _comparison_results(session: AuditSession) -> dict[str, Any]:
    """The results file's ``baseline`` block and ``comparisons`` (nothing without a baseline)."""
    baseline = session.baseline
    if baseline is None:
        return {}
    entries = session.image_set.entries
    mine = {entry.sha256 for entry in entries if entry.sha256}
    only_in_baseline = sorted(str(run.get("image_id")) for digest, run in baseline.runs.items() if digest not in mine)
    only_in_candidate = [entry.id for entry in entries if not entry.sha256 or entry.sha256 not in baseline.runs]
    return {"baseline": {**baseline.record(), "images_only_in_baseline": only_in_baseline,
                         "images_only_in_candidate": only_in_candidate},
            "classes": session.store.read_all("classes"),
            "comparisons": [trim_comparison(record, session.settings.results_detail)
                            for record in session.comparison_records()]}
