"""audit.model.load: checkpoints are read without running code, loaded strictly, and every failure is one clear line."""

from __future__ import annotations

import hashlib
import pathlib
import pickle
import random
import re
import socket

import pytest
import timm
import timm.models._hub
import torch
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageNetInfo

from audit import CheckpointError, ModelLoadError, UnsupportedModelError, load_model, read_state_dict
from audit.model.load import sha256_of

from conftest import VIT_TINY_FILE, input_size_of, make_tiny

VIT_TINY_SHA256 = "3f1f07da5e1337265ac1eb0234d13841467caf730b3c4240bd3f98c49bc16a92"


class NetworkAccess(BaseException):
    """A test opened a network connection. A BaseException, so that no ``except Exception`` can swallow it."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that tries to resolve a host or open a connection, instead of waiting on retries."""

    def refuse(*args, **kwargs):
        raise NetworkAccess(f"network access attempted: {args[:2]!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def hub_unreachable(monkeypatch) -> list[str]:
    """Make timm's Hugging Face Hub download raise OSError as it does offline; returns the repos asked for."""
    asked: list[str] = []

    def download(*args, **kwargs):
        asked.append(kwargs.get("repo_id", args[0] if args else None))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", download)
    return asked


@pytest.fixture(scope="module")
def source():
    """A tiny ViT with seeded weights, a fixed input batch and its logits."""
    model = make_tiny("test_vit", seed=0)
    generator = torch.Generator().manual_seed(1234)
    inputs = torch.randn(2, 3, *input_size_of(model), generator=generator)
    with torch.no_grad():
        logits = model(inputs)
    return model, inputs, logits


def state_dict_of(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}


def quoted(path: pathlib.Path) -> str:
    """The path as the messages quote it, escaped for a regex."""
    return re.escape(repr(str(path)))


def assert_one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    return message


# --- the real ViT-Ti checkpoint from ../shared/models ------------------------------------------------------------


@pytest.mark.shared
def test_real_checkpoint_infers_1000_classes_and_keeps_its_own_preprocessing(vit_tiny):
    assert vit_tiny.num_classes == 1000
    assert vit_tiny.model.head.out_features == 1000
    config = vit_tiny.data_config
    assert config["input_size"] == (3, 224, 224)
    assert vit_tiny.input_size == (224, 224)
    assert vit_tiny.mean == vit_tiny.std == (0.5, 0.5, 0.5)
    assert config["interpolation"] == "bicubic"
    assert config["crop_pct"] == pytest.approx(0.9)
    # read from the weights' own pretrained config, not ImageNet defaults
    pretrained_cfg = vit_tiny.model.pretrained_cfg
    assert tuple(config["mean"]) == tuple(pretrained_cfg["mean"])
    assert tuple(config["std"]) == tuple(pretrained_cfg["std"])
    assert vit_tiny.mean != tuple(IMAGENET_DEFAULT_MEAN) and vit_tiny.std != tuple(IMAGENET_DEFAULT_STD)


@pytest.mark.shared
def test_real_checkpoint_records_its_path_and_sha256(vit_tiny):
    assert vit_tiny.checkpoint == str(VIT_TINY_FILE)
    assert vit_tiny.checkpoint_sha256 == VIT_TINY_SHA256
    assert sha256_of(VIT_TINY_FILE) == VIT_TINY_SHA256


@pytest.mark.shared
def test_real_checkpoint_is_in_eval_mode_with_a_class_token_layout(vit_tiny):
    assert not vit_tiny.model.training
    layout = vit_tiny.layout
    assert (layout.num_prefix_tokens, layout.grid, layout.patch_size) == (1, (14, 14), (16, 16))


@pytest.mark.shared
def test_real_checkpoint_names_imagenet_classes(vit_tiny):
    assert vit_tiny.class_name(285) == "Egyptian cat"
    assert len(vit_tiny.class_names) == 1000
    assert vit_tiny.class_name(1000) == "1000"
    assert vit_tiny.class_name(-1) == "-1"


# --- tiny checkpoints in every supported container ---------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "module-prefix"])
@pytest.mark.parametrize("nesting", [None, "state_dict", "model", "model_ema", "state_dict_ema"],
                         ids=["flat", "state_dict", "model", "model_ema", "state_dict_ema"])
def test_pth_checkpoint_loads_strictly_and_reproduces_the_source_logits(tmp_path, source, nesting, prefix):
    model, inputs, logits = source
    weights = state_dict_of(model, prefix)
    payload = weights if nesting is None else {nesting: weights, "epoch": 7, "arch": "test_vit"}
    path = tmp_path / "checkpoint.pth"
    torch.save(payload, path)

    loaded = load_model("test_vit", path)

    assert loaded.num_classes == 10
    assert not loaded.model.training
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(inputs), logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "module-prefix"])
def test_safetensors_checkpoint_loads_strictly_and_reproduces_the_source_logits(tmp_path, source, prefix):
    model, inputs, logits = source
    path = tmp_path / "checkpoint.safetensors"
    save_file(state_dict_of(model, prefix), str(path))

    loaded = load_model("test_vit", path)

    assert loaded.checkpoint == str(path)
    assert loaded.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(inputs), logits, rtol=0, atol=1e-6)


def test_read_state_dict_strips_the_module_prefix(tmp_path, source):
    model, _, _ = source
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": state_dict_of(model, "module.")}, path)
    assert set(read_state_dict(path)) == set(model.state_dict())


def test_num_classes_is_inferred_from_the_checkpoint_head(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "seven.safetensors"
    save_file(state_dict_of(timm.create_model("test_vit", num_classes=7)), str(path))

    loaded = load_model("test_vit", path)

    assert loaded.num_classes == 7
    assert loaded.model.head.weight.shape == (7, 64)
    assert loaded.class_names is None
    assert loaded.class_name(3) == "3"


def test_model_without_checkpoint_has_no_checkpoint_or_digest():
    loaded = load_model("test_vit", num_classes=4)
    assert (loaded.checkpoint, loaded.checkpoint_sha256, loaded.num_classes) == (None, None, 4)


@pytest.mark.parametrize("plain_key, ema_key", [("model", "model_ema"), ("state_dict", "state_dict_ema")])
@pytest.mark.parametrize("use_ema", [False, True], ids=["use_ema=False", "use_ema=True"])
def test_use_ema_selects_the_ema_copy_and_otherwise_the_plain_one(tmp_path, plain_key, ema_key, use_ema):
    plain = state_dict_of(make_tiny("test_vit", seed=0))
    ema = state_dict_of(make_tiny("test_vit", seed=1))
    assert not torch.equal(plain["head.weight"], ema["head.weight"])
    path = tmp_path / "train_state.pth"
    torch.save({ema_key: ema, plain_key: plain, "epoch": 90}, path)  # the EMA copy first: file order must not matter

    loaded = load_model("test_vit", path, use_ema=use_ema)

    expected = ema if use_ema else plain
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_use_ema_falls_back_to_the_plain_copy_when_there_is_no_ema(tmp_path):
    plain = state_dict_of(make_tiny("test_vit", seed=3))
    path = tmp_path / "no_ema.pth"
    torch.save({"state_dict": plain}, path)
    weights = read_state_dict(path, use_ema=True)
    assert weights.keys() == plain.keys()
    assert torch.equal(weights["head.weight"], plain["head.weight"])


# --- pickles that would run code --------------------------------------------------------------------------------


class TouchOnUnpickle:
    """Unpickling this object creates ``target``: the shape of a checkpoint that runs code when it is loaded."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


def write_payload(path: pathlib.Path, target: pathlib.Path, writer: str) -> None:
    if writer == "torch.save":  # a zip checkpoint with real tensors and the payload beside them
        torch.save({"state_dict": {"head.weight": torch.zeros(2, 2)}, "extra": TouchOnUnpickle(target)}, path)
    else:  # a bare (legacy) pickle
        path.write_bytes(pickle.dumps({"state_dict": {"w": 1}, "extra": TouchOnUnpickle(target)}, protocol=2))


def unsafe_load(path: pathlib.Path, writer: str) -> None:
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dumps"])
@pytest.mark.parametrize("reader", ["read_state_dict", "load_model"])
def test_pickled_payload_is_refused_and_never_runs(tmp_path, writer, reader):
    target = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    write_payload(path, target, writer)

    with pytest.raises(CheckpointError, match=rf"^checkpoint {quoted(path)} refused: .*could run code") as err:
        read_state_dict(path) if reader == "read_state_dict" else load_model("test_vit", path)

    assert_one_line(err)
    assert not target.exists()
    # The same payload, pointed at another file, does run when unpickled without protection.
    control = tmp_path / "control-ran"
    control_path = tmp_path / "control.pth"
    write_payload(control_path, control, writer)
    unsafe_load(control_path, writer)
    assert control.exists()
    assert not target.exists()


# --- checkpoints that do not fit --------------------------------------------------------------------------------


def test_checkpoint_of_another_layout_lists_missing_and_unexpected_keys_on_one_line(tmp_path):
    path = tmp_path / "test_vit.safetensors"
    save_file(state_dict_of(make_tiny("test_vit")), str(path))
    source_keys = list(read_state_dict(path))
    target_keys = list(timm.create_model("test_vit2", num_classes=10).state_dict())
    missing = [key for key in target_keys if key not in source_keys]
    unexpected = [key for key in source_keys if key not in target_keys]
    assert len(missing) > 5 and 0 < len(unexpected) <= 5

    with pytest.raises(CheckpointError, match=rf"^checkpoint {quoted(path)} does not fit model 'test_vit2': ") as err:
        load_model("test_vit2", path)

    message = assert_one_line(err)
    listed = ", ".join(missing[:5])
    assert f"{len(missing)} missing ({listed}, ... (+{len(missing) - 5} more))" in message
    assert f"{len(unexpected)} unexpected ({', '.join(unexpected)})" in message
    assert missing[5] not in message
    assert "shape mismatch" not in message


def test_head_of_another_width_is_reported_as_a_shape_mismatch(tmp_path):
    weights = state_dict_of(make_tiny("test_vit"))
    weights["head.weight"] = torch.zeros(10, 32)
    path = tmp_path / "narrow_head.pth"
    torch.save(weights, path)

    with pytest.raises(CheckpointError, match=(
        rf"^checkpoint {quoted(path)} does not fit model 'test_vit': "
        r"1 shape mismatch \(head\.weight: checkpoint \(10, 32\) vs model \(10, 64\)\)$"
    )) as err:
        load_model("test_vit", path)
    assert_one_line(err)


def test_checkpoint_for_a_wider_model_lists_five_shape_mismatches_and_counts_the_rest(tmp_path):
    path = tmp_path / "width64.pth"
    torch.save(state_dict_of(make_tiny("test_vit")), path)

    with pytest.raises(CheckpointError, match=(
        rf"^checkpoint {quoted(path)} does not fit model 'test_vit': (\d+) shape mismatch "
        r"\(cls_token: checkpoint \(1, 1, 64\) vs model \(1, 1, 32\), pos_embed: .*, \.\.\. \(\+\d+ more\)\)$"
    )) as err:
        load_model("test_vit", path, embed_dim=32, num_heads=2)

    message = assert_one_line(err)
    count = int(re.search(r": (\d+) shape mismatch", message).group(1))
    assert message.count(": checkpoint (") == 5
    assert f"(+{count - 5} more)" in message
    assert "head.weight: checkpoint (10, 64) vs model (10, 32)" not in message  # past the first five


def test_checkpoint_without_classifier_head_is_refused(tmp_path):
    weights = state_dict_of(make_tiny("test_vit"))
    del weights["head.weight"], weights["head.bias"]
    path = tmp_path / "backbone.safetensors"
    save_file(weights, str(path))
    message = rf"^checkpoint {quoted(path)} has no classifier \('head\.weight'\)"
    with pytest.raises(CheckpointError, match=message) as err:
        load_model("test_vit", path)
    assert_one_line(err)


# --- files that are not checkpoints -----------------------------------------------------------------------------


def _missing(path):
    return path.with_name("nowhere.safetensors")


def _random_safetensors(path):
    path = path.with_name("random.safetensors")
    path.write_bytes(random.Random(0).randbytes(4096))
    return path


def _truncated_safetensors(path):
    whole = path.with_name("whole.safetensors")
    save_file({"head.weight": torch.ones(10, 64)}, str(whole))
    path = path.with_name("truncated.safetensors")
    path.write_bytes(whole.read_bytes()[:-100])
    return path


def _text_file(path):
    path = path.with_name("weights.txt")
    path.write_text("head.weight = 1\n")
    return path


def _saved(obj, name="odd.pth"):
    def make(path):
        path = path.with_name(name)
        torch.save(obj, path)
        return path

    return make


def _truncated_pth(path):
    whole = path.with_name("whole.pth")
    torch.save({"head.weight": torch.ones(10, 64)}, whole)
    path = path.with_name("truncated.pth")
    path.write_bytes(whole.read_bytes()[:200])
    return path


BAD_FILES = [
    pytest.param(_missing, r"not found: pass the path of a \.safetensors or \.pth file$", id="missing"),
    pytest.param(_random_safetensors, r"is not a readable safetensors file \(", id="random-safetensors"),
    pytest.param(_truncated_safetensors, r"is not a readable safetensors file \(", id="truncated-safetensors"),
    pytest.param(_text_file, r": unknown file type '\.txt'; use \.safetensors \(preferred\) or \.pth", id="txt"),
    pytest.param(_truncated_pth, r"is not a readable PyTorch file \(", id="truncated-pth"),
    pytest.param(_saved(torch.zeros(3)), r"holds a Tensor, not a state dict of tensors$", id="bare-tensor"),
    pytest.param(_saved([torch.zeros(3)]), r"holds a list, not a state dict of tensors$", id="list"),
    pytest.param(_saved({"epoch": 3, "lr": 0.1}), r"holds no tensors; pass a model state dict$", id="no-tensors"),
    pytest.param(_saved({"state_dict": {"epoch": 3}}), r"holds no tensors; pass a model state dict$",
                 id="nested-no-tensors"),
]


@pytest.mark.parametrize("make, tail", BAD_FILES)
@pytest.mark.parametrize("reader", ["read_state_dict", "load_model"])
def test_unusable_checkpoint_file_raises_one_line_error_naming_the_path(tmp_path, make, tail, reader):
    path = make(tmp_path / "placeholder")
    with pytest.raises(CheckpointError, match=rf"^checkpoint {quoted(path)}.*{tail}") as err:
        read_state_dict(path) if reader == "read_state_dict" else load_model("test_vit", path)
    message = assert_one_line(err)
    assert message.count(str(path)) == 1


def test_safetensors_file_without_tensors_says_so_without_calling_it_unreadable(tmp_path):
    path = tmp_path / "empty.safetensors"
    save_file({}, str(path))
    with pytest.raises(CheckpointError, match=rf"^checkpoint {quoted(path)} holds no tensors") as err:
        read_state_dict(path)
    message = assert_one_line(err)
    assert "not a readable" not in message and message.count(str(path)) == 1


# --- names and architectures ------------------------------------------------------------------------------------


def test_unknown_model_name_raises_model_load_error():
    with pytest.raises(ModelLoadError, match=r"^model 'qqzx_net' is not a timm model name$"):
        load_model("qqzx_net")


def test_unknown_vit_name_suggests_similar_timm_names():
    with pytest.raises(ModelLoadError, match=r"^model 'vit_no_such_size' is not a timm model name; similar names: \w"):
        load_model("vit_no_such_size")


def test_unknown_keyword_raises_model_load_error_naming_it():
    with pytest.raises(ModelLoadError, match=r"^model 'test_vit' could not be built with \{'bogus_option': 1\}"):
        load_model("test_vit", bogus_option=1)


@pytest.mark.parametrize("name, cls", [("resnet18", "ResNet"), ("swin_tiny_patch4_window7_224", "SwinTransformer")])
def test_non_vit_model_is_unsupported(name, cls):
    message = rf"^unsupported architecture: '{name}' \({cls}\) is not a plain ViT token sequence"
    with pytest.raises(UnsupportedModelError, match=message):
        load_model(name, num_classes=10)


def test_non_vit_model_with_its_own_checkpoint_is_reported_as_unsupported(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(state_dict_of(timm.create_model("resnet18", num_classes=10)), path)
    with pytest.raises(UnsupportedModelError, match=r"^unsupported architecture: 'resnet18'"):
        load_model("resnet18", path)


def test_pretrained_with_a_checkpoint_is_a_value_error_raised_before_reading_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"^pretrained: pass either a checkpoint or pretrained=True, not both$") as err:
        load_model("test_vit", tmp_path / "absent.safetensors", pretrained=True)
    assert type(err.value) is ValueError  # not a CheckpointError about the missing file


def test_pretrained_offline_says_it_needs_the_network_and_to_pass_a_local_checkpoint(hub_unreachable):
    with pytest.raises(ModelLoadError, match=(
        r"^model 'test_vit': timm's pretrained weights could not be fetched \(OSError\); this needs the network: "
        r"pass a local checkpoint file instead$"
    )):
        load_model("test_vit", pretrained=True)
    assert hub_unreachable and set(hub_unreachable) == {"timm/test_vit.r160_in1k"}


def test_pretrained_with_a_bad_keyword_blames_the_keyword_not_the_network(hub_unreachable):
    with pytest.raises(ModelLoadError, match=r"could not be built with \{'bogus_option': 1\}"):
        load_model("test_vit", pretrained=True, bogus_option=1)
    assert hub_unreachable == []


# --- class names and the data config ----------------------------------------------------------------------------


def test_explicit_class_names_are_used_and_must_match_the_head():
    loaded = load_model("test_vit", num_classes=3, class_names=["cat", "dog", "fox"])
    assert [loaded.class_name(i) for i in range(3)] == ["cat", "dog", "fox"]
    with pytest.raises(ValueError, match=r"^class_names: 2 names given for a model with 3 classes$"):
        load_model("test_vit", num_classes=3, class_names=["cat", "dog"])


@pytest.mark.parametrize("num_classes, subset", [(11221, "imagenet-21k-miil"), (21843, "imagenet-21k-goog")])
def test_imagenet_21k_heads_get_the_names_of_their_own_label_set(num_classes, subset):
    loaded = load_model("test_vit", num_classes=num_classes)
    info = ImageNetInfo(subset)
    assert loaded.class_names is not None
    for index in (0, 1, 2, num_classes - 1):
        assert loaded.class_name(index) == info.index_to_description(index)


@pytest.mark.parametrize("kwargs, input_size", [
    pytest.param({"in_chans": 1}, (1, 160, 160), id="in_chans=1"),
    pytest.param({"img_size": (96, 128)}, (3, 96, 128), id="img_size=96x128"),
])
def test_data_config_follows_model_kwargs_that_change_the_input(kwargs, input_size):
    loaded = load_model("test_vit", num_classes=10, **kwargs)
    assert tuple(loaded.data_config["input_size"]) == input_size
    assert loaded.input_size == input_size[1:]
    assert loaded.layout.in_chans == input_size[0]
