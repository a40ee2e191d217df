"""Settings: command line over --audit-config over [tool.vit-audit], each value validated with its option named."""

from __future__ import annotations

import datetime
import math
import os
import re
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.config.settings import OPTIONS, output_settings, read_toml_table, resolve_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BASE = {"model": ["test_vit"], "checkpoint": ["w.safetensors"], "images": ["photos"]}


def test_precedence_command_line_then_config_file_then_pyproject(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.vit-audit]\nsteps = 10\nthreshold = 0.1\ngate = ["cam@encoder"]\nseed = 3\n')
    config = tmp_path / "policy.toml"
    config.write_text("threshold = 0.2\nbatch-size = 16\n")
    settings = resolve_settings({**BASE, "seed": "5"}, config, pyproject)
    assert (settings.steps, settings.threshold, settings.batch_size, settings.seed) == (10, 0.2, 16, 5)
    assert settings.gate == ["cam@encoder"]
    assert settings.sources == [f"{pyproject} [tool.vit-audit]", str(config), "command line"]


def test_config_file_may_hold_a_tool_table_and_limits(tmp_path):
    config = tmp_path / "audit.toml"
    config.write_text('[tool.vit-audit]\nmethods = ["cam", "random"]\n'
                      '[tool.vit-audit.limits."cam@encoder"]\nmax_morf_auc = 0.3\n')
    settings = resolve_settings(BASE, config)
    assert settings.methods == ["cam", "random"]
    assert settings.limits["cam@encoder"].max_morf_auc == 0.3


def test_comma_lists_and_repeated_options_are_both_lists():
    settings = resolve_settings({**BASE, "methods": ["cam,grad", "random"], "layers": ["0,encoder"]})
    assert settings.methods == ["cam", "grad", "random"] and settings.layers == ["0", "encoder"]


@pytest.mark.parametrize("cli, message", [
    ({"steps": "0"}, "steps: expected a positive integer, got 0"),
    ({"steps": "2.5"}, "steps: '2.5' is not a valid int"),
    ({"threshold": "high"}, "threshold: 'high' is not a valid float"),
    ({"fill": "1.5"}, "fill: 1.5 is outside \\[0, 1\\]"),
    ({"unit": "superpixel"}, "unit: 'superpixel' is not pixel or patch"),
    ({"amp": "int8"}, "amp: 'int8' is not bfloat16, float16 or auto \\(leave it off for float32\\)"),
    ({"act": "tanh"}, "act: 'tanh' is not one of"),
    ({"gate": ["cam-encoder"]}, "gate: 'cam-encoder' is not method@stage"),
    ({"methods": ["cam"], "gate": ["grad@0"]}, "gate: 'grad@0' gates a map that --methods does not compute"),
    ({"checkpoint": []}, "checkpoint: 0 checkpoints for 1 models"),
    ({"executor": "dask"}, "executor: 'dask' is not one of local, ray"),
    ({"executor": "ray", "ray_address": "head-node"}, "ray-address: 'head-node' is not auto, HOST:PORT or "
     "ray://HOST:PORT"),
    ({"executor": "ray", "ray_address": "ray://head:10001x"}, "ray-address: 'ray://head:10001x' is not auto"),
    ({"ray_address": "auto"}, "ray-address: 'auto' is given but the executor is local; add --executor ray"),
])
def test_bad_values_name_the_option(cli, message):
    with pytest.raises(ValueError, match=message):
        resolve_settings({**BASE, **cli})


def test_the_ray_executor_takes_auto_host_port_and_ray_client_addresses():
    for address in ("auto", "10.0.0.5:6379", "ray://head-node:10001", "[::1]:6379"):
        settings = resolve_settings({**BASE, "executor": "ray", "ray_address": address})
        assert (settings.executor, settings.ray_address) == ("ray", address)
    assert resolve_settings({**BASE, "ray_address": "none"}).ray_address is None  # how a policy's address is unset


def test_unknown_key_and_bad_toml_are_reported_with_the_file(tmp_path):
    typo = tmp_path / "typo.toml"
    typo.write_text("treshold = 0.1\n")
    with pytest.raises(ValueError, match="typo.toml: unknown key 'treshold'"):
        resolve_settings(BASE, typo)
    broken = tmp_path / "broken.toml"
    broken.write_text("threshold = = 0.1\n")
    with pytest.raises(ValueError, match="audit-config: .*broken.toml' is not valid TOML"):
        resolve_settings(BASE, broken)
    with pytest.raises(ValueError, match="audit-config: .*missing.toml' not found"):
        resolve_settings(BASE, tmp_path / "missing.toml")


def test_output_settings_are_read_leniently_for_a_run_that_cannot_start(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.vit-audit]\nreport = "out/r.html"\nsteps = "twenty"\nreport-thumbnail = 96\n')
    broken = tmp_path / "broken.toml"
    broken.write_text("audit-json = \n")  # not TOML: passed over
    with pytest.raises(ValueError, match="steps"):
        resolve_settings(BASE, None, pyproject)
    out = output_settings({"audit_json": "r.json", "report_max_mb": "many"}, broken, pyproject)
    assert out == {"audit_json": "r.json", "report": "out/r.html", "report_thumbnail": 96, "report_max_mb": 5.0}
    out = output_settings({"report": "cli.html", "report_thumbnail": "0"}, None, pyproject)
    assert out["report"] == "cli.html" and out["report_thumbnail"] == 96  # 0 px is no thumbnail: not taken
    # An empty --report turns the policy's report off, as it does for a run that starts.
    assert output_settings({"report": ""}, None, pyproject)["report"] is None
    assert resolve_settings({**BASE, "report": ""}).report is None


# --- Ranges: one definition, used by the settings, output_settings and the report renderer. ---------------------

def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert type(err.value) is ValueError and message and len(message.splitlines()) == 1, repr(message)
    return message


@pytest.mark.parametrize("cli, message", [
    ({"seed": "-1"}, r"^seed: expected an integer in \[0, 4294967295\], got -1$"),
    ({"seed": str(2**32)}, r"^seed: expected an integer in \[0, 4294967295\], got 4294967296$"),
    ({"seed": "9" * 400}, r"^seed: expected an integer in \[0, 4294967295\], got 9999"),
    ({"threshold": "nan"}, r"^threshold: expected a finite number, got nan$"),
    ({"threshold": "-inf"}, r"^threshold: expected a finite number, got -inf$"),
    ({"randomisation_threshold": "nan"}, r"^randomisation-threshold: expected an absolute Spearman correlation in "
                                         r"\[0, 1\], got nan$"),
    ({"randomisation_threshold": "1.5"}, r"^randomisation-threshold: expected an absolute Spearman correlation in "
                                         r"\[0, 1\]"),
    ({"randomisation_threshold": "-0.5"}, r"^randomisation-threshold: expected an absolute Spearman correlation in "
                                          r"\[0, 1\], got -0.5$"),
    ({"report_thumbnail": "7"}, r"^report-thumbnail: expected an integer number of pixels in \[8, 512\], got 7$"),
    ({"report_thumbnail": "513"}, r"^report-thumbnail: expected an integer number of pixels in \[8, 512\], got 513$"),
    ({"report_max_mb": "inf"}, r"^report-max-mb: expected a size in MB in \(0, 10000\), got inf$"),
    ({"report_max_mb": "nan"}, r"^report-max-mb: expected a size in MB in \(0, 10000\), got nan$"),
    ({"report_max_mb": "10000"}, r"^report-max-mb: expected a size in MB in \(0, 10000\), got 10000.0$"),
    ({"steps": "10001"}, r"^steps: expected an integer in \[1, 10000\], got 10001$"),
    ({"batch_size": str(10**30)}, r"^batch-size: expected an integer in \[1, 1000000\], got 1000000000000"),
    ({"min_images": str(10**30)}, r"^min-images: expected an integer in \[1, 1000000\], got 1000000000000"),
    ({"randomisation_images": "1001"}, r"^randomisation-images: expected an integer in \[1, 1000\], got 1001$"),
    ({"randomisation_seeds": "0"}, r"^randomisation-seeds: expected a positive integer, got 0$"),
    ({"randomisation_seeds": "101"}, r"^randomisation-seeds: expected an integer in \[1, 100\], got 101$"),
    ({"fill": "nan"}, r"^fill: nan is outside \[0, 1\]$"),
    ({"layers": [""]}, r"^layers: expected at least one block index, 'encoder', 'all' or 'auto', got an empty list$"),
    ({"methods": [" , "]}, r"^methods: expected at least one of cam,.*, got an empty list$"),
    ({"batch_size": "0"}, r"^batch-size: expected a positive integer, got 0$"),  # the first versions' words
    ({"image_batch": "0"}, r"^image-batch: expected a positive integer, got 0$"),
    ({"image_batch": "65"}, r"^image-batch: expected an integer in \[1, 64\], got 65$"),
])
def test_out_of_range_values_are_refused_before_the_run_with_the_option_and_range(cli, message):
    with pytest.raises(ValueError) as err:
        resolve_settings({**BASE, **cli})
    assert re.search(message, _one_line(err)), str(err.value)


def test_the_bounds_of_every_range_are_accepted_and_exported():
    from audit.config.settings import RANGES, SEED_MAX, STEPS_MAX

    assert (SEED_MAX, STEPS_MAX) == (2**32 - 1, 10_000)
    assert RANGES["seed"].high == SEED_MAX and RANGES["steps"].high == STEPS_MAX
    for name, rng in RANGES.items():
        for value in (rng.low, rng.high):
            if value in rng:  # the closed ends
                settings = resolve_settings({**BASE, name: str(value)})
                assert getattr(settings, name) == value
    edges = resolve_settings({**BASE, "seed": str(2**32 - 1), "randomisation_threshold": "0", "steps": "10000",
                              "report_max_mb": "9999.5", "report_thumbnail": "512", "fill": "0"})
    assert (edges.seed, edges.randomisation_threshold, edges.steps) == (2**32 - 1, 0.0, 10_000)


def test_a_range_error_from_a_file_names_the_file(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.vit-audit]\nsteps = 0\n")
    with pytest.raises(ValueError) as err:
        resolve_settings(BASE, None, pyproject)
    assert _one_line(err) == f"steps: expected a positive integer, got 0 (in {pyproject} [tool.vit-audit])"
    config = tmp_path / "policy.toml"
    config.write_text("seed = -1\nsteps = 5\n")
    with pytest.raises(ValueError) as err:
        resolve_settings(BASE, config, pyproject)  # the effective value's file: the config file wins
    assert _one_line(err) == f"seed: expected an integer in [0, 4294967295], got -1 (in {config})"
    assert resolve_settings({**BASE, "seed": "4"}, config).seed == 4  # the command line overrides the bad value


def test_render_report_and_the_settings_share_the_ranges_of_the_report_options(monkeypatch):
    import audit.reports.render
    from audit.config.settings import RANGES
    from audit.reports.render import render_report

    class Accepted(Exception):
        pass

    def accepted():
        raise Accepted

    monkeypatch.setattr(audit.reports.render, "_environment", accepted)  # past the argument check: the value was taken

    def renderer_takes(**kwargs) -> bool:
        try:
            render_report({}, "unused.html", **kwargs)
        except Accepted:
            return True
        except ValueError:
            return False
        raise AssertionError("render_report neither accepted nor refused")

    def settings_take(name, value) -> bool:
        try:
            resolve_settings({**BASE, name: str(value)})
        except ValueError as err:
            assert str(err).startswith(name.replace("_", "-") + ": ")
            return False
        return True

    pixels, size = RANGES["report_thumbnail"], RANGES["report_max_mb"]
    for value in (pixels.low - 1, pixels.low, pixels.low + 1, 64, pixels.high - 1, pixels.high, pixels.high + 1):
        taken = pixels.low <= value <= pixels.high
        assert renderer_takes(thumbnail=value) is settings_take("report_thumbnail", value) is taken, value
        taken_leniently = output_settings({"report_thumbnail": str(value)})["report_thumbnail"] == value
        assert taken_leniently is taken, value
    for value in (-1.0, 0.0, 1e-9, 5.0, size.high - 0.5, float(size.high), size.high + 1.0, math.inf, math.nan):
        taken = 0 < value < size.high
        assert renderer_takes(max_mb=value) is settings_take("report_max_mb", value) is taken, value
        taken_leniently = output_settings({"report_max_mb": str(value)})["report_max_mb"] == value
        assert taken_leniently is taken, value


# --- TOML of the wrong shape, and files that are not readable TOML. ----------------------------------------------

WRONG_SHAPES = [
    ("tool = 5\n", "tool: expected a table, got 5"),
    ("[tool]\nvit-audit = 5\n", "tool.vit-audit: expected a table, got 5"),
    ('[tool]\nvit-audit = ["steps"]\n', "tool.vit-audit: expected a table, got ['steps']"),
    ("steps = {a = 1}\n", "steps: {'a': 1} is not a valid int"),
    ("threshold = [0.1]\n", "threshold: [0.1] is not a valid float"),
    ("device = {a = 1}\n", "device: {'a': 1} is not a valid string"),
    ("report = 5\n", "report: 5 is not a valid string"),
    ("gate = [{x = 1}]\n", "gate: expected a string or a list of strings, got {'x': 1}"),
    ("methods = [[\"cam\"]]\n", "methods: expected a string or a list of strings, got ['cam']"),
    ("limits = 5\n", "limits: expected a table of method@stage = {...}, got 5"),
    ('limits = ["cam@encoder"]\n', "limits: expected a table of method@stage = {...}, got ['cam@encoder']"),
    ('limits."cam@encoder" = 5\n', "limits.cam@encoder: expected a table of max_morf_auc, min_lerf_auc, min_abpc, "
                                   "min_object_mass, max_artefact_mass, got 5"),
    ('limits."cam@encoder".max_morf_auc = "x"\n', "limits.cam@encoder.max_morf_auc: expected a finite number, "
                                                  "got 'x'"),
    ('limits."cam@encoder".max_morf_auc = {a = 1}\n', "limits.cam@encoder.max_morf_auc: expected a finite number, "
                                                      "got {'a': 1}"),
    ('limits."cam@encoder".max_morf_auc = true\n', "limits.cam@encoder.max_morf_auc: expected a finite number, "
                                                   "got True"),
    ('limits."cam@encoder".min_abpc = nan\n', "limits.cam@encoder.min_abpc: expected a finite number, got nan"),
    (f'limits."cam@encoder".min_abpc = {10**400}\n', "limits.cam@encoder.min_abpc: expected a finite number, got 1"),
    ('limits."cam@encoder".max_abpc = 0.1\n', "limits.cam@encoder: unknown limits ['max_abpc']"),
    ('limits.cam-encoder.min_abpc = 0.1\n', "limits: 'cam-encoder' is not method@stage"),
    ('limits."cam@\\n" = 5\n', "limits.'cam@\\n': expected a table of"),
    (f"threshold = {10**400}\n", "threshold: 1000000"),
]


@pytest.mark.parametrize("where", ["audit-config", "pyproject"])
@pytest.mark.parametrize("text, message", WRONG_SHAPES)
def test_toml_of_the_wrong_shape_is_one_line_naming_the_key_and_the_file(tmp_path, where, text, message):
    if where == "pyproject":
        path = tmp_path / "pyproject.toml"
        if not text.startswith(("tool", "[tool]")):
            text = "[tool.vit-audit]\n" + text.replace("[tool.vit-audit]\n", "")
        path.write_text(text)
        args = (BASE, None, path)
    else:
        path = tmp_path / "policy.toml"
        path.write_text(text)
        args = (BASE, path)
    with pytest.raises(ValueError) as err:
        resolve_settings(*args)
    line = _one_line(err)
    assert line.startswith(message) and f"(in {path}" in line, line
    assert output_settings({}, *args[1:]) == DEFAULT_OUTPUTS  # the lenient reader passes them over


DEFAULT_OUTPUTS = {"audit_json": None, "report": None, "report_thumbnail": 64, "report_max_mb": 5.0}


@pytest.mark.parametrize("text, message", [
    ("steps = true\n", "steps: True is not a valid int"),
    ("batch-size = false\n", "batch-size: False is not a valid int or auto"),
    ("threshold = true\n", "threshold: True is not a valid float"),
    ("fill = false\n", "fill: False is not a valid float"),
    ("report-max-mb = true\n", "report-max-mb: True is not a valid float"),
    ("strict = 5\n", "strict: 5 is not a valid bool"),
    ("strict = 0\n", "strict: 0 is not a valid bool"),
    ('strict = "maybe"\n', "strict: 'maybe' is not a valid bool"),
    ("strict = [true]\n", "strict: [True] is not a valid bool"),
    ("layers = [true]\n", "layers: expected a string or a list of strings, got True"),
    ("methods = [false]\n", "methods: expected a string or a list of strings, got False"),
    ("model = true\n", "model: expected a string or a list of strings, got True"),
])
def test_booleans_and_numbers_are_not_taken_for_each_other(tmp_path, text, message):
    config = tmp_path / "policy.toml"
    config.write_text(text)
    with pytest.raises(ValueError) as err:
        resolve_settings(BASE, config)
    assert _one_line(err) == f"{message} (in {config})"


def test_booleans_that_are_booleans_and_layer_numbers_are_still_taken(tmp_path):
    config = tmp_path / "policy.toml"
    config.write_text('strict = true\nlayers = [0, "encoder"]\nsteps = 12.0\nfill = 0\n')
    settings = resolve_settings(BASE, config)
    assert (settings.strict, settings.layers, settings.steps, settings.fill) == (True, ["0", "encoder"], 12, 0.0)
    assert resolve_settings({**BASE, "strict": "yes"}).strict is True


def test_a_number_on_the_command_line_overrides_the_policy_even_when_it_is_zero(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.vit-audit]\nthreshold = 0.5\nseed = 3\n")
    settings = resolve_settings({**BASE, "threshold": 0, "seed": 0}, None, pyproject)
    assert (settings.threshold, settings.seed) == (0.0, 0)


def _within(seconds: float, function):
    """Run ``function`` in a thread; (finished, result-or-exception)."""
    box: dict = {}

    def run():
        try:
            box["result"] = function()
        except BaseException as err:  # handed back to the test
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), box


def _unblock(fifo) -> None:
    """Release a reader stuck opening ``fifo`` (a regression), so that no thread is left hanging."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_as_audit_config_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "policy.toml"
    os.mkfifo(fifo)
    try:
        finished, box = _within(10, lambda: resolve_settings(BASE, fifo))
        assert finished, "resolve_settings hangs on a FIFO"
        err = box.get("error")
        assert type(err) is ValueError, box
        assert str(err) == f"audit-config: {str(fifo)!r} is not a regular file (a FIFO); pass a TOML file"
        finished, box = _within(10, lambda: output_settings({"report": "r.html"}, fifo, fifo))
        assert finished, "output_settings hangs on a FIFO"
        assert box == {"result": {**DEFAULT_OUTPUTS, "report": "r.html"}}
        finished, box = _within(10, lambda: read_toml_table(fifo, "tool.vit-audit", option="pyproject"))
        assert finished and type(box.get("error")) is ValueError, box
    finally:
        _unblock(fifo)


def _folder(tmp_path):
    return tmp_path


def _missing(tmp_path):
    return tmp_path / "missing.toml"


def _latin1(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('report = "r\xe9sum\xe9.html"\n'.encode("latin-1"))
    return path


def _invalid(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("threshold = = 0.1\n")
    return path


def _long_integer(tmp_path):
    path = tmp_path / "long.toml"
    path.write_text("steps = " + "9" * 5000 + "\n")
    return path


def _deep(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("gate = " + "[" * 5000 + "]" * 5000 + "\n")
    return path


@pytest.mark.parametrize("make, tail", [
    (_folder, r"is not a regular file \(a folder\); pass a TOML file"),
    (_missing, r"not found"),
    (_latin1, r"is not UTF-8 text \(byte 0xe9 at offset 11\)"),
    (_invalid, r"is not valid TOML \(.*line 1.*\)"),
    (_long_integer, r"is not valid TOML \(.*\)"),
    (_deep, r"is not valid TOML \(nested too deeply\)"),
])
def test_an_audit_config_that_is_not_a_readable_toml_file_is_one_line(tmp_path, make, tail):
    path = make(tmp_path)
    with pytest.raises(ValueError) as err:
        resolve_settings(BASE, path)
    assert re.fullmatch(rf"audit-config: {re.escape(repr(str(path)))} {tail}", _one_line(err)), str(err.value)
    assert output_settings({}, path, path) == DEFAULT_OUTPUTS


def test_a_pyproject_of_the_wrong_shape_names_that_file_and_output_settings_pass_it_over(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('tool = "vit-audit"\n')
    with pytest.raises(ValueError) as err:
        resolve_settings(BASE, None, pyproject)
    assert _one_line(err) == f"tool: expected a table, got 'vit-audit' (in {pyproject})"
    assert output_settings({"report": "r.html"}, None, pyproject)["report"] == "r.html"
    pyproject.write_bytes(b"[tool.vit-audit]\nsteps = 3\n\xff\n")
    with pytest.raises(ValueError) as err:
        resolve_settings(BASE, None, pyproject)
    assert _one_line(err) == f"pyproject: {str(pyproject)!r} is not UTF-8 text (byte 0xff at offset 27)"


# --- Property: any TOML-able value under any option gives settings or a one-line ValueError. ---------------------

OPTION_KEYS = sorted({*OPTIONS, *(name.replace("_", "-") for name in OPTIONS), "limits"})
INNER_KEYS = st.one_of(st.sampled_from(["vit-audit", "cam@encoder", "grad@0", "max_morf_auc", "min_abpc", "a", ""]),
                       st.text(max_size=8))
SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([0, 1, -1, 7, 8, 512, 513, 10_000, 2**32 - 1, 2**32, 10**400]),
    st.floats(allow_subnormal=False),  # conftest flushes denormals to zero
    st.sampled_from(["", "none", "cam", "cam,random", "cam@encoder", "grad@0", "all", "encoder", "0", "-1", "true",
                     "nan", "inf", "1e999", "cpu", "patch", "bfloat16", "relu"]),
    st.text(max_size=12),
    st.dates(),
    st.datetimes(),
)
VALUES = st.recursive(SCALARS, lambda children: st.one_of(st.lists(children, max_size=4),
                                                          st.dictionaries(INNER_KEYS, children, max_size=4)),
                      max_leaves=12)


def _toml_string(text: str) -> str:
    escaped = "".join("\\" + ch if ch in '"\\' else f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch
                      for ch in text)
    return f'"{escaped}"'


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value) if isinstance(value, int) else _toml_string(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return "{" + ", ".join(f"{_toml_string(key)} = {_toml(item)}" for key, item in value.items()) + "}"


@given(table=st.dictionaries(st.sampled_from([*OPTION_KEYS, "tool"]), VALUES, min_size=1, max_size=3))
@settings(max_examples=200, deadline=None)
def test_any_toml_values_give_settings_or_one_line_value_error_and_output_settings_never_raise(tmp_path_factory,
                                                                                              table):
    folder = tmp_path_factory.mktemp("property")
    body = "".join(f"{_toml_string(key)} = {_toml(value)}\n" for key, value in table.items())
    tomllib.loads(body)  # the file is TOML: what is checked is how its values are taken
    config, pyproject = folder / "policy.toml", folder / "pyproject.toml"
    config.write_text(body)
    pyproject.write_text("[tool.vit-audit]\n" + body)
    for cli, args, path in ((BASE, (config,), config), (BASE, (None, pyproject), pyproject),
                            ({**BASE, **table}, (), None)):
        try:
            resolve_settings(cli, *args)
        except ValueError as err:
            message = str(err)
            assert type(err) is ValueError and len(message.splitlines()) == 1, repr(message)
            assert path is None or str(path) in message, message
    assert set(output_settings({}, config, pyproject)) == set(DEFAULT_OUTPUTS)
    assert set(output_settings({**table}, config, pyproject)) == set(DEFAULT_OUTPUTS)


def test_batch_size_is_auto_by_default_and_takes_auto_from_every_source(tmp_path):
    assert resolve_settings(dict(BASE)).batch_size == "auto"
    assert resolve_settings({**BASE, "batch_size": " AUTO "}).batch_size == "auto"
    config = tmp_path / "policy.toml"
    config.write_text('batch-size = "auto"\n')
    assert resolve_settings({**BASE}, config).batch_size == "auto"
    config.write_text("batch-size = 32\n")
    assert resolve_settings({**BASE}, config).batch_size == 32
    with pytest.raises(ValueError, match=r"^batch-size: 'many' is not a valid int or auto$"):
        resolve_settings({**BASE, "batch_size": "many"})
    config.write_text('batch-size = "many"\n')
    with pytest.raises(ValueError, match=rf"^batch-size: 'many' is not a valid int or auto \(in {config}\)$"):
        resolve_settings({**BASE}, config)


def test_image_batch_is_auto_by_default_and_takes_a_number_or_auto_from_every_source(tmp_path):
    assert resolve_settings(dict(BASE)).image_batch == "auto"
    assert resolve_settings({**BASE, "image_batch": " Auto "}).image_batch == "auto"
    assert resolve_settings({**BASE, "image_batch": "8"}).image_batch == 8
    config = tmp_path / "policy.toml"
    config.write_text("image-batch = 4\n")
    assert resolve_settings({**BASE}, config).image_batch == 4
    with pytest.raises(ValueError, match=r"^image-batch: 'all' is not a valid int or auto$"):
        resolve_settings({**BASE, "image_batch": "all"})
    config.write_text("image-batch = 2.5\n")
    with pytest.raises(ValueError, match=r"^image-batch: 2.5 is not a valid int or auto"):
        resolve_settings({**BASE}, config)


# -- the policy: built in, turned off only on purpose, and where each value came from --------------------------------
def test_without_a_policy_file_the_built_in_policy_gates_and_says_so():
    from audit.config.policy import DEFAULT_GATES, policy_lines

    s = resolve_settings(BASE)
    assert s.gate == list(DEFAULT_GATES) and s.origin("gate") == "built-in default"
    lines = policy_lines(s)
    assert lines[0].startswith("gates grad@0, chefer@encoder (threshold +0, at least 20 images")
    assert "k=2 gates" in lines[0] and "at most 4.9% per model" in lines[0]
    assert lines[1].startswith("policy from: methods, gate, threshold") and "from built-in default" in lines[1]


def test_gate_none_gates_nothing_and_the_header_says_no_gate_not_pass(tmp_path):
    from audit.config.policy import policy_lines

    s = resolve_settings({**BASE, "gate": ["none"]})
    assert s.gate == [] and s.origin("gate") == "command line"
    assert policy_lines(s)[0].startswith("gates: none (none from command line): this run gates nothing")
    with pytest.raises(ValueError, match=r"^gate: none gates nothing and cannot be listed with other gates"):
        resolve_settings({**BASE, "gate": ["none", "grad@0"]})
    config = tmp_path / "policy.toml"
    config.write_text('gate = "none"\n')
    assert resolve_settings(BASE, config).gate == []


def test_built_in_gates_of_maps_the_run_does_not_compute_are_left_out_and_said():
    s = resolve_settings({**BASE, "methods": ["grad", "random"]})
    assert s.gate == ["grad@0"]
    assert s.origin("gate") == ("built-in default (chefer@encoder left out: not computed by --methods or not at a "
                                "stage of --layers)")
    assert resolve_settings({**BASE, "layers": ["encoder"]}).gate == ["chefer@encoder"]
    with pytest.raises(ValueError, match="gates a map that --methods does not compute"):  # given gates stay checked
        resolve_settings({**BASE, "methods": ["grad", "random"], "gate": ["chefer@encoder"]})


def test_each_policy_value_names_the_source_it_came_from(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.vit-audit]\ngate = ["grad@0"]\nthreshold = 0.01\n[tool.vit-audit.margins]\n'
                         '"grad@0" = "30%"\n')
    config = tmp_path / "audit.toml"
    config.write_text("min-images = 30\n")
    s = resolve_settings({**BASE, "strict": True}, config, pyproject)
    assert s.origin("gate") == s.origin("threshold") == s.origin("margins") == f"{pyproject} [tool.vit-audit]"
    assert s.origin("min_images") == str(config) and s.origin("strict") == "command line"
    assert s.origin("margin") == "built-in default" and s.margins == {"grad@0": "30%"}


@pytest.mark.parametrize("text, message", [
    ('[margins]\n"grad@0" = 2\n', "margins.grad@0: 2 is not a margin"),
    ('[margins]\n"grad@0" = "x%"\n', "margins.grad@0: 'x%' is not a margin"),
    ('[margins]\n"grad-0" = 0.1\n', "margins: 'grad-0' is not method@stage"),
    ("margins = 0.1\n", "margins: expected a table of method@stage = margin, got 0.1"),
    ('fail-correction = "bonferroni"\n', "fail-correction: 'bonferroni' is not one of none, holm"),
])
def test_margins_and_the_fail_correction_from_a_file_are_one_line_naming_the_file(tmp_path, text, message):
    config = tmp_path / "audit.toml"
    config.write_text(text)
    with pytest.raises(ValueError) as err:
        resolve_settings(BASE, config)
    assert str(err.value).startswith(message) and str(config) in str(err.value) and "\n" not in str(err.value)


def test_a_margin_is_absolute_or_relative_and_a_map_of_the_margins_table_wins():
    from audit.verdicts.margins import DEFAULT_MARGINS, FALLBACK_MARGIN, Margin, margin_for

    assert margin_for("grad@0", {}, None) == (Margin(float(DEFAULT_MARGINS["grad@0"][:-1]) / 100, True),
                                              "built-in default for this map")
    assert margin_for("cam@encoder", {}, None) == (Margin(FALLBACK_MARGIN), "built-in default")
    assert margin_for("grad@0", {}, "0.1") == (Margin(0.1), "margin")
    assert margin_for("grad@0", {"grad@0": "40%"}, "0.1") == (Margin(0.4, True), "margins.grad@0")
    assert Margin(0.4, True).resolve(0.25) == pytest.approx(0.1) and Margin(0.1).resolve(0.9) == 0.1
