"""vit-audit: an audit harness for Vision Transformer explainability.

The pipeline, one module a stage: :mod:`~audit.models` (load a checkpoint safely), :mod:`~audit.images`
(prepare images with the model's own data config), :mod:`~audit.capture` (one forward + one backward pass),
:mod:`~audit.restore` (tokens back into pictures), :mod:`~audit.maps` (the paper's maps), :mod:`~audit.perturb`
(MoRF/LeRF curves), :mod:`~audit.stats` (bootstrap CIs, paired differences, Spearman), :mod:`~audit.gates` (a
verdict over an image set), :mod:`~audit.compare` (a candidate against its released baseline), and
:mod:`~audit.pipeline` tying them. Around a run: :mod:`~audit.settings` (options and policy) with
:mod:`~audit.ranges` (their accepted values, defined once), :mod:`~audit.inputs` (the models and images of a run),
:mod:`~audit.store` (records computed once), :mod:`~audit.session` (what the checks read), :mod:`~audit.results` and
:mod:`~audit.outputs` (the results file and the report), and the thin pytest :mod:`~audit.plugin`.
"""

from .capture import Capture, capture
from .errors import AuditError, CheckpointError, ImageError, ModelLoadError, NonFiniteError, UnsupportedModelError
from .images import PreparedImage, find_images, normalize, prepare_image
from .layout import TokenLayout, check_supported, layout_of, stage_names
from .maps import ACTIVATIONS, METHODS, MapResult, compute_maps
from .models import LoadedModel, load_model, read_state_dict
from .perturb import SCORE_DIRECTION, Curves, PerturbationConfig, auc, faithfulness_curves
from .pipeline import ImageAudit, audit_image, audit_images, summarize_audits
from .restore import PatchInverse, Restoration, restore, restore_inverse, restore_paper
from .stats import Summary, bootstrap_ci, summarize

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
