"""One forward and one backward pass that capture every stage's tokens and their gradients.

Forward hooks keep the output of the patch embedding (before the position embedding), of the position
embedding, of every block and of the final norm (the "encoder output"); ``torch.autograd.grad`` then gives
the gradient of the explained class's logit with respect to each, so parameters' ``.grad`` stay untouched.
Hooks are removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from .layout import MAP_STAGE_ENCODER, TokenLayout, layout_of, stage_names

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

__all__ = ["Capture", "capture", "capture_batch", "attention_modules", "explicit_attention", "STAGE_PATCH_EMBED",
           "STAGE_EMBED"]

STAGE_PATCH_EMBED = "patch_embed"
STAGE_EMBED = "embed"


@dataclass
class Capture:
    """What one forward+backward pass of one image saw.

    Attributes:
        layout: the token layout for this input.
        target: the explained class c.
        logits: (num_classes,) logits of the clean image.
        prob: softmax probability of ``target``.
        tokens: stage -> tokens. ``'patch_embed'``: (gh*gw, D) before the position embedding; ``'embed'``,
            ``'0'..'L-1'``, ``'encoder'``: (N, D).
        grads: stage -> d logits[target] / d tokens, same shapes.
        attentions: with ``attention=True``, block k -> (heads, N, N) attention probabilities (softmax output);
            an empty list when the blocks' attention cannot be read (``attention_reason`` says why); None when not
            asked for.
        attention_grads: d logits[target] / d attention probabilities, same shapes.
        attention_reason: why the attention could not be read.
    """

    layout: TokenLayout
    target: int
    logits: torch.Tensor
    prob: float
    tokens: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor]
    attentions: list[torch.Tensor] | None = None
    attention_grads: list[torch.Tensor] | None = None
    attention_reason: str | None = None
    memo: dict = field(default_factory=dict, repr=False, compare=False)  # results derived once from this capture

    @property
    def stages(self) -> list[str]:
        """Every captured stage in forward order."""
        return [STAGE_PATCH_EMBED, STAGE_EMBED, *stage_names(self.layout.depth)]

    @property
    def map_stages(self) -> list[str]:
        """The stages maps are computed at: blocks and the encoder output."""
        return stage_names(self.layout.depth)


@contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _module_outputs(model: nn.Module) -> dict[str, nn.Module]:
    model = cast("VisionTransformer", model)  # checked by layout_of in capture_batch
    modules: dict[str, nn.Module] = {STAGE_PATCH_EMBED: model.patch_embed, STAGE_EMBED: model.pos_drop}
    modules.update({str(k): block for k, block in enumerate(model.blocks)})
    modules[MAP_STAGE_ENCODER] = model.norm
    return modules


def attention_modules(model: nn.Module) -> tuple[list[nn.Module], str | None]:
    """Each block's timm ``Attention`` (whose explicit path computes the probabilities), or ([], why not)."""
    model = cast("VisionTransformer", model)  # checked by layout_of in capture_batch
    modules = [getattr(block, "attn", None) for block in model.blocks]
    for index, module in enumerate(modules):
        if not (hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Dropout)):
            return [], (f"block {index}'s attention ({type(module).__name__}) does not expose its probabilities "
                        "(vit-audit reads timm's Attention)")
    return cast("list[nn.Module]", modules), None  # none is None: each has fused_attn


@contextmanager
def explicit_attention(modules: list[nn.Module]):
    """timm's explicit attention path (softmax probabilities as a tensor) instead of the fused kernel, restored after.

    The probabilities are ``attn_drop``'s output, which is its input in eval mode.
    """
    fused = [module.fused_attn for module in modules]
    try:
        for module in modules:
            module.fused_attn = False  # type: ignore[assignment]  # a bool attribute: nn.Module types Tensor | Module
        yield
    finally:
        for module, flag in zip(modules, fused):
            module.fused_attn = flag


def capture(model: nn.Module, x: torch.Tensor, target: int | None = None, attention: bool = False) -> Capture:
    """Run one forward and one backward pass of a normalised image and keep every stage.

    Args:
        model: a timm VisionTransformer (checked by :func:`audit.model.layout.check_supported`).
        x: the normalised model input, (C, H, W) or (1, C, H, W).
        target: the class to explain; defaults to the clean image's top-1.
        attention: also keep every block's attention probabilities and their gradients; for that pass the blocks
            run timm's explicit attention path (the fused kernel does not expose the probabilities), which is
            restored afterwards.

    Returns:
        A :class:`Capture` with tokens and gradients on the model's device, detached.
    """
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"x: expected one image (C, H, W) or (1, C, H, W), got shape {tuple(x.shape)}")
    return capture_batch(model, x, [target], attention=attention)[0]


def capture_batch(model: nn.Module, x: torch.Tensor, targets: Sequence[int | None] | None = None,
                  attention: bool = False) -> list[Capture]:
    """:func:`capture` of several images in one forward and one backward pass.

    The images of a batch do not interact in an eval-mode ViT, so the gradient of the sum of each image's
    explained logit is each image's own gradient; the results equal :func:`capture`'s one image at a time up to
    float rounding.

    Args:
        model: a timm VisionTransformer.
        x: normalised model inputs, (B, C, H, W).
        targets: the class each image explains (None: its top-1); default every image's top-1.
        attention: as in :func:`capture`.

    Returns:
        One :class:`Capture` per image.
    """
    if x.ndim != 4 or x.shape[0] < 1:
        raise ValueError(f"x: expected images (B, C, H, W), got shape {tuple(x.shape)}")
    count = int(x.shape[0])
    wanted_targets = [None] * count if targets is None else list(targets)
    if len(wanted_targets) != count:
        raise ValueError(f"targets: expected one per image ({count}), got {len(wanted_targets)}")
    layout = layout_of(model, (int(x.shape[-2]), int(x.shape[-1])))
    outputs: dict[str, torch.Tensor] = {}
    handles = []

    def keep(stage: str):
        def hook(_module, _inputs, output):
            outputs[stage] = output

        return hook

    modules, reason = attention_modules(model) if attention else ([], None)
    attn_outputs: list[torch.Tensor] = []
    try:
        for stage, module in _module_outputs(model).items():
            handles.append(module.register_forward_hook(keep(stage)))
        for module in modules:  # each attn_drop an nn.Dropout (attention_modules)
            handles.append(cast(nn.Dropout, module.attn_drop).register_forward_hook(
                lambda _m, _i, output: attn_outputs.append(output)))
        with _eval_mode(model), torch.enable_grad(), explicit_attention(modules):
            x_in = x.detach().clone().requires_grad_(True)
            logits = model(x_in)
            if isinstance(logits, (tuple, list)):
                raise ValueError("model returned a tuple of predictions; put it in eval mode")
            num_classes = logits.shape[-1]
            chosen = []
            for index, target in enumerate(wanted_targets):
                if target is None:
                    target = int(logits[index].argmax())
                elif not 0 <= int(target) < num_classes:
                    raise ValueError(f"target: class {target} is out of range for a model with {num_classes} "
                                     "classes")
                chosen.append(int(target))
            stages = list(outputs)
            wanted = [outputs[s] for s in stages] + attn_outputs
            explained = logits[torch.arange(count, device=logits.device), chosen]
            grads = torch.autograd.grad(explained.sum() if count > 1 else explained[0], wanted, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()

    logits = logits.detach()
    captures = []
    for index in range(count):
        tokens: dict[str, torch.Tensor] = {}
        gradients: dict[str, torch.Tensor] = {}
        for stage, grad in zip(stages, grads):
            value = outputs[stage].detach()[index]
            value = value.reshape(-1, value.shape[-1])  # dynamic_img_size patch embeddings are (gh, gw, D)
            tokens[stage] = value
            gradients[stage] = torch.zeros_like(value) if grad is None else grad.detach()[index].reshape(value.shape)
        attentions = attention_grads = None
        if attention:
            attn_grads = grads[len(stages):]
            attentions = [output.detach()[index] for output in attn_outputs]
            attention_grads = [torch.zeros_like(a) if g is None else g.detach()[index]
                               for a, g in zip(attentions, attn_grads)]
        row = logits[index]
        captures.append(Capture(
            layout=layout,
            target=chosen[index],
            logits=row,
            prob=float(row.float().softmax(-1)[chosen[index]]),
            tokens=tokens,
            grads=gradients,
            attentions=attentions,
            attention_grads=attention_grads,
            attention_reason=reason,
        ))
    return captures
