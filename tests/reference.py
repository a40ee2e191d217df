"""Plain reference implementation of Vision Transformer explainability definitions, used only by tests.

Everything here is written to be checked line by line against the definitions, not to be fast: loops are used
freely and all results are numpy float64 arrays.

Conventions:
    * ``P = model.num_prefix_tokens`` leading tokens (class, distillation, register tokens) precede the patch tokens.
    * The class token, when ``model.cls_token is not None``, is token index 0.
    * Patch token ``P + r * gw + q`` sits at grid row ``r``, column ``q`` (row-major).
    * Stages are named ``"0" .. "L-1"`` (outputs of the blocks) and ``"encoder"`` (output of ``model.norm``).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _np64(t: torch.Tensor) -> np.ndarray:
    """Detach a tensor and return it as a float64 numpy array."""
    return t.detach().cpu().to(torch.float64).numpy()


def _is_distilled(model: torch.nn.Module) -> bool:
    """True for a model with a distillation head (timm ``VisionTransformerDistilled``)."""
    return hasattr(model, "head_dist")


def _has_cls_token(model: torch.nn.Module) -> bool:
    """True when the model has a class token (then it is token 0)."""
    return getattr(model, "cls_token", None) is not None


def _square_side(n: int) -> int | None:
    """Return the integer p with p * p == n, or None when n is not a perfect square."""
    if n <= 0:
        return None
    p = math.isqrt(n)
    return p if p * p == n else None


def _act(values: np.ndarray, act: str) -> np.ndarray:
    """Apply an activation elementwise.

    Args:
        values: Input array.
        act: "gelu" (exact, erf based), "relu" or "identity".

    Returns:
        Float64 array of the same shape.
    """
    v = np.asarray(values, dtype=np.float64)
    out = np.empty_like(v)
    flat_in = v.reshape(-1)
    flat_out = out.reshape(-1)
    for k in range(flat_in.size):
        z = float(flat_in[k])
        if act == "gelu":
            flat_out[k] = 0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0)))
        elif act == "relu":
            flat_out[k] = z if z > 0.0 else 0.0
        elif act == "identity":
            flat_out[k] = z
        else:
            raise ValueError(f"unknown activation {act!r}")
    return out


def _stage_names(model: torch.nn.Module) -> list[str]:
    """Stage names in order: one per block, then "encoder"."""
    return [str(k) for k in range(len(model.blocks))] + ["encoder"]


def _tokens_to_grid(values: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Lay out one value per patch token (row-major) on a (gh, gw) grid."""
    gh, gw = grid
    assert values.shape == (gh * gw,), (values.shape, grid)
    out = np.zeros((gh, gw), dtype=np.float64)
    for r in range(gh):
        for q in range(gw):
            out[r, q] = values[r * gw + q]
    return out


# ----------------------------------------------------------------------------------------------------------------------
# 1. Forward and backward pass
# ----------------------------------------------------------------------------------------------------------------------


def ref_forward(model: torch.nn.Module, x_norm: torch.Tensor | np.ndarray, target: int | None = None) -> dict[str, Any]:
    """Run the model by hand, keeping every stage's tokens and the gradient of the class logit w.r.t. them.

    Args:
        model: timm VisionTransformer (or VisionTransformerDistilled) in eval mode.
        x_norm: Normalised input, (1, C, H, W) or (C, H, W).
        target: Class whose logit is differentiated; the argmax of the logits when None.

    Returns:
        Dict with "class" (int), "prob" (float), "logits" (K,), "tokens" and "grads" ({stage: (N, D)}),
        "pre_pos" ((gh*gw, D)), "post_pos" ((N, D)) and "grid" ((gh, gw)).
    """
    x = torch.as_tensor(x_norm)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    assert x.dim() == 4 and x.shape[0] == 1, "one image at a time"
    param_dtype = next(model.parameters()).dtype
    x_in = x.detach().clone().to(param_dtype).requires_grad_(True)
    H, W = int(x_in.shape[2]), int(x_in.shape[3])
    gh, gw = model.patch_embed.dynamic_feat_size((H, W))

    # Remember parameter gradients so that they can be put back after the backward pass.
    saved_grads = [(p, None if p.grad is None else p.grad.clone()) for p in model.parameters()]

    with torch.enable_grad():
        h = model.patch_embed(x_in)
        pre = h
        h = model._pos_embed(h)
        post = h
        h = model.patch_drop(h)
        h = model.norm_pre(h)
        kept: dict[str, torch.Tensor] = {}
        for k in range(len(model.blocks)):
            h = model.blocks[k](h)
            h.retain_grad()
            kept[str(k)] = h
        enc = model.norm(h)
        enc.retain_grad()
        kept["encoder"] = enc
        logits = model.forward_head(enc)

        logits64 = logits.detach().to(torch.float64)[0]
        c = int(torch.argmax(logits64).item()) if target is None else int(target)
        prob = float(torch.softmax(logits64, dim=0)[c].item())

        y_c = logits[0, c]
        y_c.backward()

    tokens = {}
    grads = {}
    for name, t in kept.items():
        tokens[name] = _np64(t[0])
        grads[name] = _np64(t.grad[0])

    for p, g in saved_grads:
        p.grad = g

    D = int(pre.shape[-1])
    pre_pos = _np64(pre[0]).reshape(-1, D)  # (gh*gw, D) whether patch_embed gives (gh*gw, D) or (gh, gw, D)
    assert pre_pos.shape[0] == gh * gw, (pre_pos.shape, gh, gw)
    post_pos = _np64(post[0])

    return {
        "class": c,
        "prob": prob,
        "logits": _np64(logits[0]),
        "tokens": tokens,
        "grads": grads,
        "pre_pos": pre_pos,
        "post_pos": post_pos,
        "grid": (int(gh), int(gw)),
    }


# ----------------------------------------------------------------------------------------------------------------------
# 2. Maps
# ----------------------------------------------------------------------------------------------------------------------


def _class_scores_all_tokens(model: torch.nn.Module, enc_tokens: np.ndarray, c: int) -> np.ndarray:
    """Per-token class score s_i over all N encoder tokens (head bias included), in float64."""
    T = torch.from_numpy(enc_tokens)  # (N, D) float64
    with torch.no_grad():
        if _is_distilled(model):
            head = copy.deepcopy(model.head).to(torch.float64)
            head_dist = copy.deepcopy(model.head_dist).to(torch.float64)
            s = 0.5 * (head(T)[:, c] + head_dist(T)[:, c])
        else:
            fc_norm = copy.deepcopy(model.fc_norm).to(torch.float64)
            head = copy.deepcopy(model.head).to(torch.float64)
            s = head(fc_norm(T))[:, c]
    return s.numpy()


def _cam_map(model: torch.nn.Module, T: np.ndarray, c: int, P: int, grid: tuple[int, int]) -> np.ndarray:
    """CAM: m_i = w_c . fc_norm(T_i) for patch tokens (no bias); distilled: 0.5 (w_c + w_dist_c) . T_i."""
    N = T.shape[0]
    if _is_distilled(model):
        w = 0.5 * (_np64(model.head.weight[c]) + _np64(model.head_dist.weight[c]))
        feats = T
    else:
        w = _np64(model.head.weight[c])
        fc_norm = copy.deepcopy(model.fc_norm).to(torch.float64)
        with torch.no_grad():
            feats = fc_norm(torch.from_numpy(T)).numpy()
    values = np.zeros(N - P, dtype=np.float64)
    for i in range(P, N):
        values[i - P] = float(np.dot(w, feats[i]))
    return _tokens_to_grid(values, grid)


def _cam_hidden_map(T: np.ndarray, s: np.ndarray, in_chans: int) -> np.ndarray | None:
    """Hidden-space CAM: v = sum_i s_i T_i over all tokens, reshaped to (C, p, p) and summed over C."""
    N, D = T.shape
    if D % in_chans != 0:
        return None
    p = _square_side(D // in_chans)
    if p is None:
        return None
    v = np.zeros(D, dtype=np.float64)
    for i in range(N):
        v = v + s[i] * T[i]
    cube = v.reshape(in_chans, p, p)
    out = np.zeros((p, p), dtype=np.float64)
    for ch in range(in_chans):
        out = out + cube[ch]
    return out


def _grad_map(T: np.ndarray, G: np.ndarray, P: int, grid: tuple[int, int], act: str) -> np.ndarray:
    """Gradient x token: m_i = act(sum_j T_ij G_ij) for patch tokens."""
    N = T.shape[0]
    values = np.zeros(N - P, dtype=np.float64)
    for i in range(P, N):
        values[i - P] = float(np.sum(T[i] * G[i]))
    return _tokens_to_grid(_act(values, act), grid)


def _grad_cls_map(T: np.ndarray, G: np.ndarray, P: int, grid: tuple[int, int], act: str) -> np.ndarray:
    """Projection on the class-token gradient: m_i = act(sum_j T_ij G_0j) for patch tokens."""
    N = T.shape[0]
    values = np.zeros(N - P, dtype=np.float64)
    for i in range(P, N):
        values[i - P] = float(np.sum(T[i] * G[0]))
    return _tokens_to_grid(_act(values, act), grid)


def ref_maps(model: torch.nn.Module, fwd: dict[str, Any], act: str = "gelu") -> dict[tuple[str, str], np.ndarray]:
    """Compute every map for every stage.

    Args:
        model: The model that produced ``fwd``.
        fwd: Output of ``ref_forward``.
        act: Activation for the gradient maps: "gelu", "relu" or "identity".

    Returns:
        Dict keyed by (method, stage). "cam", "grad", "grad_cls" maps are (gh, gw); "cam_hidden" maps are (p, p).
        "cam" and "cam_hidden" are left out when the model has an attention pool, "cam_hidden" when D / C is not
        a perfect square, "grad_cls" when there is no class token.
    """
    P = int(model.num_prefix_tokens)
    grid = tuple(fwd["grid"])
    c = int(fwd["class"])
    in_chans = int(model.patch_embed.proj.in_channels)
    attn_pool = getattr(model, "attn_pool", None)
    has_cls = _has_cls_token(model)

    s = None
    if attn_pool is None:
        s = _class_scores_all_tokens(model, fwd["tokens"]["encoder"], c)

    out: dict[tuple[str, str], np.ndarray] = {}
    for stage in _stage_names(model):
        T = fwd["tokens"][stage]
        G = fwd["grads"][stage]
        if attn_pool is None:
            out[("cam", stage)] = _cam_map(model, T, c, P, grid)
            hidden = _cam_hidden_map(T, s, in_chans)
            if hidden is not None:
                out[("cam_hidden", stage)] = hidden
        out[("grad", stage)] = _grad_map(T, G, P, grid, act)
        if has_cls:
            out[("grad_cls", stage)] = _grad_cls_map(T, G, P, grid, act)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# 3. Deletion / insertion curves
# ----------------------------------------------------------------------------------------------------------------------


def _rank(values: np.ndarray, order: str) -> np.ndarray:
    """Indices of a flat array, "morf" = descending, "lerf" = ascending; ties keep the lower index first."""
    if order == "morf":
        return np.argsort(-values, kind="stable")
    if order == "lerf":
        return np.argsort(values, kind="stable")
    raise ValueError(f"unknown order {order!r}")


def _resize_bilinear(grid_map: np.ndarray, size: tuple[int, int], dtype: torch.dtype) -> np.ndarray:
    """Bilinear resize (align_corners=False) of a 2-D map with torch, computed in ``dtype``."""
    t = torch.as_tensor(np.asarray(grid_map), dtype=dtype)[None, None]
    r = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return r[0, 0].to(torch.float64).numpy()


def ref_curve(
    model: torch.nn.Module,
    pixel: torch.Tensor | np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    grid_map: np.ndarray,
    c: int,
    order: str,
    steps: int = 20,
    fill: float = 127 / 255,
    unit: str = "pixel",
    interp_dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """Probability of class ``c`` while pixels (or patches) are progressively replaced by ``fill``.

    Args:
        model: The classifier, in eval mode.
        pixel: (C, H, W) image in [0, 1], before normalisation.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        grid_map: 2-D relevance map.
        c: Class index.
        order: "morf" (most relevant first) or "lerf" (least relevant first).
        steps: Number of steps; the curve has steps + 1 values.
        fill: Replacement value in pixel space.
        unit: "pixel" or "patch".
        interp_dtype: Dtype used for the bilinear resize of the map.

    Returns:
        (steps + 1,) float64 array of softmax probabilities of class ``c``.
    """
    img = np.asarray(torch.as_tensor(pixel).detach().cpu().to(torch.float64).numpy(), dtype=np.float64)
    assert img.ndim == 3, "pixel must be (C, H, W)"
    C, H, W = img.shape
    mean_a = np.asarray(mean, dtype=np.float64).reshape(C, 1, 1)
    std_a = np.asarray(std, dtype=np.float64).reshape(C, 1, 1)
    gmap = np.asarray(grid_map, dtype=np.float64)
    param_dtype = next(model.parameters()).dtype

    # masks[k] is a (H, W) boolean array: True where the pixel is replaced by ``fill`` in image k.
    masks: list[np.ndarray] = []
    if unit == "pixel":
        up = _resize_bilinear(gmap, (H, W), interp_dtype)
        ranked = _rank(up.reshape(-1), order)
        n = H * W
        for k in range(steps + 1):
            count = int(math.floor(k * n / steps + 0.5))
            mask = np.zeros(n, dtype=bool)
            for idx in ranked[:count]:
                mask[idx] = True
            masks.append(mask.reshape(H, W))
    elif unit == "patch":
        gh, gw = model.patch_embed.dynamic_feat_size((H, W))
        ph, pw = model.patch_embed.patch_size
        cell_map = gmap if gmap.shape == (gh, gw) else _resize_bilinear(gmap, (gh, gw), interp_dtype)
        ranked = _rank(cell_map.reshape(-1), order)
        n = gh * gw
        for k in range(steps + 1):
            count = int(math.floor(k * n / steps + 0.5))
            mask = np.zeros((H, W), dtype=bool)
            for cell in ranked[:count]:
                r, q = divmod(int(cell), gw)
                mask[r * ph:(r + 1) * ph, q * pw:(q + 1) * pw] = True  # slicing clips at the image border
            masks.append(mask)
    else:
        raise ValueError(f"unknown unit {unit!r}")

    probs = np.zeros(steps + 1, dtype=np.float64)
    with torch.no_grad():
        for k in range(steps + 1):
            x = img.copy()
            for ch in range(C):
                x[ch][masks[k]] = fill
            x = (x - mean_a) / std_a
            inp = torch.from_numpy(x).to(param_dtype).unsqueeze(0)
            logits = model(inp).to(torch.float64)[0]
            probs[k] = float(torch.softmax(logits, dim=0)[c].item())
    return probs


def ref_auc(curve: np.ndarray) -> float:
    """Trapezoid-rule area under a curve sampled at x = k / steps, k = 0..steps, on [0, 1]."""
    y = np.asarray(curve, dtype=np.float64)
    steps = y.size - 1
    total = 0.0
    for k in range(steps):
        total += 0.5 * (y[k] + y[k + 1]) / steps
    return total


# ----------------------------------------------------------------------------------------------------------------------
# 4. and 5. Restoring tokens to image space
# ----------------------------------------------------------------------------------------------------------------------


def ref_restore_paper(tokens: np.ndarray, num_prefix: int, grid: tuple[int, int], in_chans: int) -> np.ndarray | None:
    """Tile each patch token's D values, reshaped to (C, p, p), on the grid.

    Args:
        tokens: (N, D) tokens of one stage.
        num_prefix: Number of leading prefix tokens to drop.
        grid: (gh, gw).
        in_chans: C.

    Returns:
        (C, gh * p, gw * p) array, or None when D / C is not a perfect square.
    """
    T = np.asarray(tokens, dtype=np.float64)
    N, D = T.shape
    gh, gw = grid
    if D % in_chans != 0:
        return None
    p = _square_side(D // in_chans)
    if p is None:
        return None
    patches = T[num_prefix:]
    assert patches.shape[0] == gh * gw, (patches.shape, grid)
    out = np.zeros((in_chans, gh * p, gw * p), dtype=np.float64)
    for r in range(gh):
        for q in range(gw):
            block = patches[r * gw + q].reshape(in_chans, p, p)
            out[:, r * p:(r + 1) * p, q * p:(q + 1) * p] = block
    return out


def ref_restore_inverse(
    model: torch.nn.Module,
    tokens: np.ndarray,
    post_pos: np.ndarray,
    pre_pos: np.ndarray,
    grid: tuple[int, int] | None = None,
) -> np.ndarray:
    """Invert position embedding and patch projection in the least-squares sense (normalised input space).

    Args:
        model: The model (its ``num_prefix_tokens`` and ``patch_embed.proj`` are used).
        tokens: (N, D) tokens of one stage.
        post_pos: (N, D) tokens right after the position embedding (from ``ref_forward``).
        pre_pos: (gh*gw, D) patch embeddings before the position embedding (from ``ref_forward``).
        grid: (gh, gw); defaults to ``model.patch_embed.grid_size``.

    Returns:
        (C, gh * ph, gw * pw) array.
    """
    P = int(model.num_prefix_tokens)
    T = np.asarray(tokens, dtype=np.float64)
    post = np.asarray(post_pos, dtype=np.float64)
    pre = np.asarray(pre_pos, dtype=np.float64)
    if grid is None:
        grid = tuple(model.patch_embed.grid_size)
    gh, gw = grid
    proj = model.patch_embed.proj
    C = int(proj.in_channels)
    ph, pw = int(proj.kernel_size[0]), int(proj.kernel_size[1])

    patches = T[P:]
    assert patches.shape[0] == gh * gw == pre.shape[0], (patches.shape, pre.shape, grid)
    pos = post[P:] - pre  # position embedding of the patch tokens

    Wm = _np64(proj.weight).reshape(proj.weight.shape[0], C * ph * pw)  # (D, C*ph*pw)
    b = _np64(proj.bias) if proj.bias is not None else np.zeros(Wm.shape[0], dtype=np.float64)
    Wpinv = np.linalg.pinv(Wm)  # (C*ph*pw, D)

    out = np.zeros((C, gh * ph, gw * pw), dtype=np.float64)
    for r in range(gh):
        for q in range(gw):
            t = patches[r * gw + q] - pos[r * gw + q]
            x = Wpinv @ (t - b)
            out[:, r * ph:(r + 1) * ph, q * pw:(q + 1) * pw] = x.reshape(C, ph, pw)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# 6. Attention maps (attention, rollout, Chefer's relevance, Grad-CAM on attention) and Integrated Gradients
# ----------------------------------------------------------------------------------------------------------------------
#
# Unlike the sections above, these references return torch float64 tensors (maps are (gh, gw)). They never call
# timm's ``Attention.forward``: the attention probabilities are computed by hand from ``attn.qkv`` so that the
# gradient of the class logit with respect to them can be taken by autograd.


def _model64(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of the model in eval mode, with parameters that do not require grad."""
    m = copy.deepcopy(model).to(torch.float64).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _one_image64(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(1, C, H, W) float64 copy of an image given as (C, H, W) or (1, C, H, W)."""
    t = torch.as_tensor(x).detach().cpu().to(torch.float64).clone()
    if t.dim() == 3:
        t = t.unsqueeze(0)
    assert t.dim() == 4 and t.shape[0] == 1, "one image at a time"
    return t


def _check_plain_blocks(model: torch.nn.Module) -> None:
    """The manual forward pass below is only valid for timm's pre-norm ``Block`` with its ``Attention``."""
    from timm.models.vision_transformer import Attention, Block

    for k, blk in enumerate(model.blocks):
        if not isinstance(blk, Block) or not isinstance(blk.attn, Attention):
            raise NotImplementedError(f"block {k} is {type(blk).__name__}/{type(blk.attn).__name__}, "
                                      "not timm's Block/Attention")


def reference_manual_forward(
    model: torch.nn.Module,
    x_norm: torch.Tensor,
    offsets: dict[int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward pass with attention computed by hand, in the dtype of ``model`` and ``x_norm`` (no copies made).

    Args:
        model: timm VisionTransformer (or VisionTransformerDistilled) in eval mode, made of timm ``Block``s.
        x_norm: Normalised input (B, C, H, W), same dtype as the model.
        offsets: Optional {block: (B, heads, N, N) tensor} added to that block's attention probabilities before
            they are used (for finite differences); the probabilities returned are the softmax outputs, without it.

    Returns:
        (logits (B, K), [A_0 .. A_{L-1}] each (B, heads, N, N)). The A_k are part of the autograd graph (not
        detached), so ``torch.autograd.grad(y_c, A_k)`` is the full derivative dy_c/dA_k, including the paths
        through the attention probabilities of later blocks.
    """
    _check_plain_blocks(model)
    h = model.patch_embed(x_norm)
    h = model._pos_embed(h)
    h = model.patch_drop(h)
    h = model.norm_pre(h)
    attns: list[torch.Tensor] = []
    for k, blk in enumerate(model.blocks):
        a = blk.attn
        u = blk.norm1(h)
        B, N, _ = u.shape
        heads, hd = int(a.num_heads), int(a.head_dim)
        qkv = a.qkv(u).reshape(B, N, 3, heads, hd)
        q = qkv[:, :, 0].permute(0, 2, 1, 3)  # (B, heads, N, hd)
        key = qkv[:, :, 1].permute(0, 2, 1, 3)
        v = qkv[:, :, 2].permute(0, 2, 1, 3)
        q = a.q_norm(q)
        key = a.k_norm(key)
        scores = torch.matmul(q * a.scale, key.transpose(-2, -1))  # (B, heads, N, N)
        probs = torch.softmax(scores, dim=-1)
        attns.append(probs)
        used = probs if offsets is None or k not in offsets else probs + offsets[k]
        ctx = torch.matmul(used, v)  # (B, heads, N, hd); attn_drop is the identity in eval
        ctx = ctx.permute(0, 2, 1, 3).reshape(B, N, heads * hd)
        ctx = a.norm(ctx)
        if getattr(a, "gate", None) is not None:
            ctx = ctx * torch.sigmoid(a.gate(u))
        out = a.proj(ctx)  # proj_drop and drop_path1 are identities in eval
        h = h + blk.ls1(out)
        h = h + blk.ls2(blk.mlp(blk.norm2(h)))  # drop_path2 is the identity in eval
    enc = model.norm(h)
    logits = model.forward_head(enc)
    return logits, attns


def reference_attention_probs(
    model: torch.nn.Module, x_norm: torch.Tensor | np.ndarray, target: int | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Attention probabilities of every block and the gradient of the class logit with respect to them.

    Args:
        model: timm VisionTransformer in eval mode (a float64 copy is used; the model itself is left untouched).
        x_norm: Normalised input, (1, C, H, W) or (C, H, W).
        target: Class c; the argmax of the logits when None.

    Returns:
        (logits (K,), [A_0 .. A_{L-1}] each (heads, N, N), [dy_c/dA_0 .. dy_c/dA_{L-1}] each (heads, N, N)),
        all float64 and detached.
    """
    m = _model64(model)
    x = _one_image64(x_norm).requires_grad_(True)  # the only leaf that needs grad: it puts every A_k in the graph
    with torch.enable_grad():
        logits, attns = reference_manual_forward(m, x)
        c = int(torch.argmax(logits[0]).item()) if target is None else int(target)
        grads = torch.autograd.grad(logits[0, c], attns, allow_unused=True)
    grads = [torch.zeros_like(a) if g is None else g for a, g in zip(attns, grads)]
    return logits[0].detach(), [a[0].detach() for a in attns], [g[0].detach() for g in grads]


def _grid_of(model: torch.nn.Module, x: torch.Tensor | np.ndarray) -> tuple[int, int]:
    """Patch grid (gh, gw) for an input of the size of ``x``."""
    t = torch.as_tensor(x)
    gh, gw = model.patch_embed.dynamic_feat_size((int(t.shape[-2]), int(t.shape[-1])))
    return int(gh), int(gw)


def _row0_patches(matrix: torch.Tensor, num_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """Row 0 of an (N, N) matrix, columns of the patch tokens only, laid out row-major on the (gh, gw) grid."""
    gh, gw = grid
    N = matrix.shape[-1]
    assert N == num_prefix + gh * gw, (N, num_prefix, grid)
    out = torch.zeros(gh, gw, dtype=torch.float64)
    for r in range(gh):
        for q in range(gw):
            out[r, q] = matrix[0, num_prefix + r * gw + q]
    return out


def _require_cls(model: torch.nn.Module) -> None:
    """Row 0 must be the class token for the attention maps to be defined."""
    if not _has_cls_token(model):
        raise ValueError("the attention maps read row 0, which must be the class token; this model has none")


def reference_attention_from(attention: torch.Tensor, num_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """attention@b from A_b (heads, N, N): m_i = mean_h A_b[h, 0, i] over patch tokens i; (gh, gw) float64."""
    A = torch.as_tensor(attention).to(torch.float64)
    heads = A.shape[0]
    mean = torch.zeros(A.shape[1:], dtype=torch.float64)
    for h in range(heads):
        mean = mean + A[h]
    mean = mean / heads
    return _row0_patches(mean, num_prefix, grid)


def reference_rollout_from(attentions: Sequence[torch.Tensor], num_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """rollout over all the given blocks [A_0 .. A_b] (each (heads, N, N)).

    Ã_k = (mean_h A_k + I) / 2, R_b = Ã_b Ã_{b-1} ... Ã_0, m_i = R_b[0, i] over patch tokens; (gh, gw) float64.
    """
    R = None
    for A in attentions:
        A = torch.as_tensor(A).to(torch.float64)
        N = A.shape[-1]
        At = (A.mean(dim=0) + torch.eye(N, dtype=torch.float64)) / 2
        R = At if R is None else At @ R  # the later block multiplies from the left
    assert R is not None, "at least one block"
    return _row0_patches(R, num_prefix, grid)


def reference_chefer_from(
    attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor], num_prefix: int, grid: tuple[int, int]
) -> torch.Tensor:
    """Chefer et al. 2021 (rules 5-6) over the given blocks 0..b.

    R = I; for each block k: Ā_k = mean_h((dy_c/dA_k * A_k) clamped at 0), R = R + Ā_k R; m_i = R[0, i] over patch
    tokens; (gh, gw) float64.
    """
    assert len(attentions) == len(gradients) and len(attentions) > 0
    N = torch.as_tensor(attentions[0]).shape[-1]
    R = torch.eye(N, dtype=torch.float64)
    for A, G in zip(attentions, gradients):
        A = torch.as_tensor(A).to(torch.float64)
        G = torch.as_tensor(G).to(torch.float64)
        Abar = (G * A).clamp(min=0).mean(dim=0)
        R = R + Abar @ R
    return _row0_patches(R, num_prefix, grid)


def reference_attn_gradcam_from(
    attention: torch.Tensor, gradient: torch.Tensor, num_prefix: int, grid: tuple[int, int]
) -> torch.Tensor:
    """Grad-CAM on attention (heads, N, N) and its gradient; (gh, gw) float64.

    α_h = mean over patch tokens i of dy_c/dA_b[h, 0, i] (prefix columns left out); m_i = ReLU(mean_h α_h A_b[h, 0, i]).
    """
    A = torch.as_tensor(attention).to(torch.float64)
    G = torch.as_tensor(gradient).to(torch.float64)
    heads, N = A.shape[0], A.shape[-1]
    gh, gw = grid
    assert N == num_prefix + gh * gw, (N, num_prefix, grid)
    weighted = torch.zeros(N, N, dtype=torch.float64)
    for h in range(heads):
        alpha = G[h, 0, num_prefix:].mean()  # patch tokens only
        weighted = weighted + alpha * A[h]
    weighted = weighted / heads
    return _row0_patches(weighted, num_prefix, grid).clamp(min=0)


def _attention_inputs(model: torch.nn.Module, x_norm, target: int | None, block: int):
    """Shared set-up of the map references: checks, attention probabilities, gradients, P and grid."""
    _require_cls(model)
    L = len(model.blocks)
    if not 0 <= int(block) < L:
        raise IndexError(f"block {block} out of range 0..{L - 1}")
    _, attns, grads = reference_attention_probs(model, x_norm, target)
    return attns, grads, int(model.num_prefix_tokens), _grid_of(model, x_norm)


def reference_attention_map(model: torch.nn.Module, x_norm, target: int | None, block: int) -> torch.Tensor:
    """attention@block for a normalised input (1, C, H, W) or (C, H, W); (gh, gw) float64."""
    attns, _, P, grid = _attention_inputs(model, x_norm, target, block)
    return reference_attention_from(attns[block], P, grid)


def reference_rollout_map(model: torch.nn.Module, x_norm, target: int | None, block: int) -> torch.Tensor:
    """rollout@block (Abnar & Zuidema 2020) for a normalised input; (gh, gw) float64. ``target`` is unused."""
    attns, _, P, grid = _attention_inputs(model, x_norm, target, block)
    return reference_rollout_from(attns[: block + 1], P, grid)


def reference_chefer_map(model: torch.nn.Module, x_norm, target: int | None, block: int) -> torch.Tensor:
    """chefer@block (Chefer et al. 2021, rules 5-6) for a normalised input; (gh, gw) float64."""
    attns, grads, P, grid = _attention_inputs(model, x_norm, target, block)
    return reference_chefer_from(attns[: block + 1], grads[: block + 1], P, grid)


def reference_attn_gradcam_map(model: torch.nn.Module, x_norm, target: int | None, block: int) -> torch.Tensor:
    """attn_gradcam@block (Chefer's Grad-CAM baseline on attention) for a normalised input; (gh, gw) float64."""
    attns, grads, P, grid = _attention_inputs(model, x_norm, target, block)
    return reference_attn_gradcam_from(attns[block], grads[block], P, grid)


def reference_ig_weights(steps: int = 32) -> tuple[list[float], list[float]]:
    """Trapezoid rule on [0, 1]: alphas k / steps, k = 0..steps; weights 1 / (2 steps) at the ends, 1 / steps inside."""
    alphas = [k / steps for k in range(steps + 1)]
    weights = [1.0 / steps] * (steps + 1)
    weights[0] = 0.5 / steps
    weights[-1] = 0.5 / steps
    return alphas, weights


def reference_ig_attribution(
    model: torch.nn.Module,
    pixel: torch.Tensor | np.ndarray,
    fill_pixel: torch.Tensor | np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    target: int,
    steps: int = 32,
) -> torch.Tensor:
    """Integrated Gradients in pixel space, before summing over channels and pooling.

    Args:
        model: The classifier in eval mode (a float64 copy is used; its own forward is called).
        pixel: (C, H, W) image x in [0, 1], before normalisation.
        fill_pixel: (C, H, W) baseline image x0, before normalisation.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        target: Class c.
        steps: Number of trapezoid intervals; the gradient is taken at steps + 1 points.

    Returns:
        (C, H, W) float64 tensor (x - x0) * g, g = sum_k w_k dy_c/dx at x0 + alpha_k (x - x0).
    """
    m = _model64(model)
    x = _one_image64(pixel)[0]
    x0 = _one_image64(fill_pixel)[0]
    assert x.shape == x0.shape, (x.shape, x0.shape)
    C = x.shape[0]
    mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(C, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float64).reshape(C, 1, 1)
    alphas, weights = reference_ig_weights(steps)
    # All steps + 1 points go through the model as one batch: a ViT in eval mode treats batch items independently,
    # so the gradient of the summed logits with respect to point k is dy_c/dx at point k alone.
    points = torch.stack([x0 + alpha * (x - x0) for alpha in alphas]).requires_grad_(True)
    with torch.enable_grad():
        y = m((points - mean_t) / std_t)[:, int(target)]
        (grads,) = torch.autograd.grad(y.sum(), points)
    g = torch.zeros_like(x)
    for k, w in enumerate(weights):
        g = g + w * grads[k]
    return (x - x0) * g


def reference_ig_map(
    model: torch.nn.Module,
    pixel: torch.Tensor | np.ndarray,
    fill_pixel: torch.Tensor | np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    target: int,
    patch_size: int | tuple[int, int],
    steps: int = 32,
) -> torch.Tensor:
    """ig@input: the IG attribution summed over channels, then average-pooled over patch_size x patch_size cells.

    Returns:
        (H // ph, W // pw) float64 tensor (the patch grid when the patches tile the image).
    """
    attr = reference_ig_attribution(model, pixel, fill_pixel, mean, std, target, steps).sum(dim=0)  # (H, W)
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else (int(patch_size[0]), int(patch_size[1]))
    H, W = attr.shape
    gh, gw = H // ph, W // pw
    out = torch.zeros(gh, gw, dtype=torch.float64)
    for r in range(gh):
        for q in range(gw):
            out[r, q] = attr[r * ph:(r + 1) * ph, q * pw:(q + 1) * pw].mean()
    return out
