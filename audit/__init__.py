"""vit-audit: an audit harness for Vision Transformer explainability.

The pipeline, one module a stage: :mod:`~audit.model.load` (load a checkpoint safely), :mod:`~audit.model.images`
(prepare images with the model's own data config), :mod:`~audit.model.capture` (one forward + one backward pass),
:mod:`~audit.model.restore` (tokens back into pictures), :mod:`~audit.maps.paper` (the paper's maps),
:mod:`~audit.measure.curves`
(MoRF/LeRF curves), :mod:`~audit.measure.stats` (bootstrap CIs, paired differences, Spearman),
:mod:`~audit.verdicts.gates` (a
verdict over an image set), :mod:`~audit.verdicts.compare` (a candidate against its released baseline), and
:mod:`~audit.measure.image_audit` tying them. Around a run: :mod:`~audit.config.settings` (options and policy) with
:mod:`~audit.ranges` (their accepted values, defined once), :mod:`~audit.run.inputs` (the models and images of a run),
:mod:`~audit.run.store` (records computed once), :mod:`~audit.run.session` (what the checks read),
:mod:`~audit.results.schema` and
:mod:`~audit.run.outputs` (the results file and the report), and the thin pytest :mod:`~audit.plugin`.
"""

from .errors import AuditError, CheckpointError, ImageError, ModelLoadError, NonFiniteError, UnsupportedModelError
from .maps import ACTIVATIONS, METHODS, MapResult, compute_maps
from .measure.curves import SCORE_DIRECTION, Curves, PerturbationConfig, auc, faithfulness_curves
from .measure.image_audit import ImageAudit, audit_image, audit_images, summarize_audits
from .measure.stats import Summary, bootstrap_ci, summarize
from .model.capture import Capture, capture
from .model.images import PreparedImage, find_images, normalize, prepare_image
from .model.layout import TokenLayout, check_supported, layout_of, stage_names
from .model.load import LoadedModel, load_model, read_state_dict
from .model.restore import PatchInverse, Restoration, restore, restore_inverse, restore_paper

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "METHODS", "SCORE_DIRECTION",
    "AuditError", "CheckpointError", "ImageError", "ModelLoadError", "NonFiniteError", "UnsupportedModelError",
    "Capture", "Curves", "ImageAudit", "LoadedModel", "MapResult", "PatchInverse", "PerturbationConfig",
    "PreparedImage", "Restoration", "Summary", "TokenLayout",
    "audit_image", "audit_images", "auc", "bootstrap_ci", "capture", "check_supported", "compute_maps",
    "faithfulness_curves", "find_images", "layout_of", "load_model", "normalize", "prepare_image",
    "read_state_dict", "restore", "restore_inverse", "restore_paper", "stage_names", "summarize",
    "summarize_audits",
]
