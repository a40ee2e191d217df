"""Errors a user can act on.

Every error raised for bad input names the input, what was wrong and what to do, in one line, so that a
command-line front end can print ``str(err)`` and move on to the next input.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base class of every error vit-audit raises on purpose."""


class ModelLoadError(AuditError, ValueError):
    """A model name that timm does not know, or pretrained weights that cannot be fetched."""


class CheckpointError(AuditError, ValueError):
    """A checkpoint that is missing, unreadable, unsafe, or does not fit the architecture."""


class UnsupportedModelError(AuditError, TypeError):
    """A model that is not a plain ViT token sequence (e.g. Swin, ConvNeXt)."""


class ImageError(AuditError, ValueError):
    """An image that cannot be read or does not fit the model."""


class NonFiniteError(AuditError, ValueError):
    """A model whose activations on an image are not finite (NaN or infinity): nothing measured on it means anything."""


class ExecutorError(AuditError, ValueError):
    """An executor that cannot start (Ray missing, a cluster that cannot be reached) or that lost its cluster."""


def one_line(err: BaseException) -> str:
    """An error's text on one line, without a closing full stop, or its type where it has none."""
    return " ".join(str(err).split()).rstrip(".") or type(err).__name__
