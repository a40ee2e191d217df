"""The maps: the paper's class activation and gradient maps (eqs. 1-4), the attention family, and Integrated
Gradients, each declared once in the registry (:mod:`audit.maps.registry`).

Importing this package registers the built-in methods. The tuples below name them as shipped; what a run accepts is
the registry (:func:`audit.maps.registry.names`), which also holds any method registered since.
"""

# isort: off
from . import paper  # noqa: F401  (registers the paper's maps and the two baselines, first)
from . import attention  # noqa: F401  (then the attention family)
from . import integrated_gradients  # noqa: F401  (then the one input map)
# isort: on
from .attention import ATTENTION_METHODS
from .registry import (
    ACTIVATIONS,
    MapResult,
    compute_maps,
    finish_map,
    is_constant,
    load_entry_points,
    names,
    needs_attention,
)

__all__ = ["ACTIVATIONS", "ATTENTION_METHODS", "DEFAULT_METHODS", "METHODS", "MapResult", "compute_maps", "finish_map",
           "is_constant", "needs_attention"]

#: The built-in methods, in registration order, and those the library computes by default (the paper's and the two
#: baselines); ask the registry for any other selection (``names(stages="input")``, ``names(baseline=True)``, ...).
METHODS = names()
DEFAULT_METHODS = names(default=True)

load_entry_points()  # installed packages' methods, after the built-ins
