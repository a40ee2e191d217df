"""vit-audit: an audit harness for Vision Transformer explainability.

The library is layered, each layer a package that imports only from those below it (``lint-imports`` checks it):

- :mod:`audit.model`: load a checkpoint safely, prepare images with the model's own data config, capture every
  stage's tokens and gradients in one forward and backward pass, restore tokens into pictures;
- :mod:`audit.maps`: the map methods, declared once in :mod:`audit.maps.registry`;
- :mod:`audit.measure`: fills and MoRF/LeRF curves, statistics, model-parameter randomisation, localisation,
  probes, SpRAy, and the audit of one image;
- :mod:`audit.verdicts`: gates, margins and the comparisons with a released baseline;
- :mod:`audit.results`: the results file's records; :mod:`audit.config`: options and the built-in policy;
- :mod:`audit.run`: a run's inputs, plan, records, cache, executors and session;
- on top, the pytest plugin (:mod:`audit.plugin`), the ``vit-audit`` command (:mod:`audit.cli`), the packaged
  checks (:mod:`audit.checks`) and the report (:mod:`audit.reports`).

The names below are the stable Python API.
"""

from .errors import AuditError, CheckpointError, ImageError, ModelLoadError, NonFiniteError, UnsupportedModelError
from .maps import ACTIVATIONS, METHODS, MapResult, compute_maps
from .maps.registry import InputContext, MapContext, MapMethod
from .maps.registry import register as register_map
from .measure.curves import SCORE_DIRECTION, Curves, PerturbationConfig, auc, faithfulness_curves
from .measure.image_audit import ImageAudit, audit_image, audit_images, summarize_audits
from .measure.stats import Summary, bootstrap_ci, summarize
from .model.capture import Capture, capture
from .model.images import PreparedImage, find_images, normalize, prepare_image
from .model.layout import TokenLayout, check_supported, layout_of, stage_names
from .model.load import LoadedModel, load_model, read_state_dict
from .model.restore import PatchInverse, Restoration, restore, restore_inverse, restore_paper
from .run.work import Case, MapKey, ProbeKey

__version__ = "0.1.0"

__all__ = [
    # errors a user can act on
    "AuditError", "CheckpointError", "ImageError", "ModelLoadError", "NonFiniteError", "UnsupportedModelError",
    # the model and its tokens
    "LoadedModel", "load_model", "read_state_dict", "PreparedImage", "find_images", "normalize", "prepare_image",
    "TokenLayout", "check_supported", "layout_of", "stage_names", "Capture", "capture",
    "PatchInverse", "Restoration", "restore", "restore_inverse", "restore_paper",
    # maps, and adding one
    "ACTIVATIONS", "METHODS", "MapResult", "compute_maps", "MapMethod", "MapContext", "InputContext", "register_map",
    # measurement
    "SCORE_DIRECTION", "Curves", "PerturbationConfig", "auc", "faithfulness_curves",
    "ImageAudit", "audit_image", "audit_images", "summarize_audits", "Summary", "bootstrap_ci", "summarize",
    # what the plugin's parametrising fixtures hand out
    "Case", "MapKey", "ProbeKey",
]
