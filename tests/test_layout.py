"""Token layouts of every plain-ViT flavour timm has, read from the model."""

from __future__ import annotations

import pytest
import timm
import torch
from hypothesis import given
from hypothesis import strategies as st

from audit import UnsupportedModelError, layout_of
from audit.model.layout import TokenLayout, normalize_stage, stage_names

from conftest import input_size_of, make_tiny

EXPECTED_PREFIX = {"test_vit": 1, "test_vit2": 1, "test_vit3": 1, "deit_distilled": 2, "dinov2_reg4": 5, "square": 1}
EXPECTED_CLASS_TOKEN = {"test_vit": True, "test_vit2": False, "test_vit3": False, "deit_distilled": True,
                        "dinov2_reg4": True, "square": True}


def test_layout_reads_prefix_tokens_and_grid_from_the_model(tiny):
    key, model = tiny
    layout = layout_of(model, input_size_of(model))
    assert layout.num_prefix_tokens == EXPECTED_PREFIX[key]
    assert layout.has_class_token == EXPECTED_CLASS_TOKEN[key]
    height, width = input_size_of(model)
    assert layout.grid == (height // layout.patch_size[0], width // layout.patch_size[1])
    with torch.no_grad():
        tokens = model.forward_features(torch.zeros(1, 3, height, width))
    assert tokens.shape[1] == layout.num_tokens


def test_non_square_input_gives_a_non_square_grid():
    model = make_tiny("test_vit")  # dynamic_img_size=True
    layout = layout_of(model, (96, 160))
    assert layout.grid == (6, 10)
    with torch.no_grad():
        tokens = model.forward_features(torch.zeros(1, 3, 96, 160))
    assert tokens.shape[1] == layout.num_tokens == 61


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_non_vit_models_are_refused(name):
    model = timm.create_model(name, pretrained=False, num_classes=3)
    with pytest.raises(UnsupportedModelError, match="unsupported architecture"):
        layout_of(model, (64, 64))


@st.composite
def layouts(draw):
    return TokenLayout(
        num_prefix_tokens=draw(st.integers(0, 6)),
        has_class_token=draw(st.booleans()),
        grid=(draw(st.integers(1, 9)), draw(st.integers(1, 9))),
        patch_size=(4, 4),
        embed_dim=draw(st.sampled_from([8, 12, 48])),
        in_chans=3,
        depth=2,
        input_size=(36, 36),
    )


@given(layout=layouts(), data=st.data())
def test_tokens_to_grid_and_back_round_trip(layout, data):
    values = torch.arange(layout.num_tokens * 2, dtype=torch.float32).reshape(layout.num_tokens, 2)
    patches = layout.patch_tokens(values)
    assert torch.equal(patches[0], values[layout.num_prefix_tokens])  # the first patch follows the prefix
    grid = layout.to_grid(patches)
    assert grid.shape == (*layout.grid, 2)
    row, col = data.draw(st.integers(0, layout.grid[0] - 1)), data.draw(st.integers(0, layout.grid[1] - 1))
    assert torch.equal(grid[row, col], values[layout.num_prefix_tokens + row * layout.grid[1] + col])
    assert torch.equal(layout.from_grid(grid), patches)


def test_hidden_patch_side_is_sqrt_of_d_over_c():
    base = dict(num_prefix_tokens=1, has_class_token=True, grid=(2, 2), patch_size=(16, 16), in_chans=3, depth=1,
                input_size=(32, 32))
    assert TokenLayout(embed_dim=768, **base).hidden_patch == 16
    assert TokenLayout(embed_dim=192, **base).hidden_patch == 8
    assert TokenLayout(embed_dim=64, **base).hidden_patch is None  # 64 / 3 is not an integer
    assert TokenLayout(embed_dim=96, **base).hidden_patch is None  # 32 is not a square


def test_stage_names_and_normalisation():
    assert stage_names(3) == ["0", "1", "2", "encoder"]
    assert normalize_stage(-1, 12) == "11"
    assert normalize_stage("4", 12) == "4"
    assert normalize_stage("encoder", 12) == "encoder"
    with pytest.raises(ValueError, match="block 12 does not exist"):
        normalize_stage(12, 12)
    with pytest.raises(ValueError, match="neither a block index nor 'encoder'"):
        normalize_stage("head", 12)
