"""The pytest plugin: options, parametrisation, fixtures and the results file. Thin: the work is in the library.

Registered through its ``pytest11`` entry point wherever vit-audit is installed (``-p audit.plugin`` names the same
plugin). It only acts on runs that collect the packaged checks (:mod:`audit.checks`) or pass a vit-audit option, so a
project's own test suite is left alone.

The fixtures a check may use (documentation: "Write your own check"):

- ``audit_session`` (session scope): the run's :class:`~audit.run.session.AuditSession`: its settings, models,
  images and every record and verdict computed once for the run.
- ``audit_run``: the results record (:class:`RunRecord`) of the test's (model, image), made once for the run.
- Parametrising fixtures, one test per value: ``audit_model`` (a model id, ``str``), ``audit_case``
  (:class:`~audit.run.work.Case`), ``audit_map`` and ``audit_model_map`` (every map, or every map but the
  baselines), ``audit_gate``, ``audit_region``, ``audit_region_pair`` and ``audit_comparison`` (gated maps), all a
  :class:`~audit.run.work.MapKey`; ``audit_probe`` (:class:`~audit.run.work.ProbeKey`).
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import pytest

from .config.policy import policy_lines
from .config.settings import LIST_OPTIONS, OPTIONS, resolve_settings, run_inputs
from .errors import AuditError, ExecutorError
from .maps.registry import names as map_names
from .run.outputs import check_outputs, write_outputs, write_stopped_run
from .run.progress import Progress, RecordWatcher, make_records
from .run.work import Case, MapKey, ProbeKey

if TYPE_CHECKING:
    from .run.session import AuditSession

__all__ = ["Case", "MapKey", "ProbeKey", "RunRecord", "audit_run", "audit_session"]


#: The keys of a (model, image) record a check reads most: the results file's ``runs[]`` (every key is described in
#: ``docs/results-schema.md``). ``class`` is the explained class (the top-1), ``error`` None unless the record failed.
RunRecord = TypedDict("RunRecord", {
    "model_id": str, "image_id": str, "model": str, "image": str, "image_name": str, "class": int,
    "class_name": str, "label": int, "prob": float, "removed_prob": float, "error": "str | None",
    "maps": "dict[str, dict[str, Any]]", "restorations": "dict[str, Any]", "figures": "dict[str, Any]",
}, total=False)

SESSION = pytest.StashKey["AuditSession"]()
STATE = pytest.StashKey["_State"]()
WORKDIR_KEY = "vit_audit_workdir"


@dataclass
class _State:
    workdir: str
    owns_workdir: bool
    checks: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    written: list[str] = field(default_factory=list)
    interrupted: str | None = None  # 'SIGTERM' or 'SIGINT' when the run was stopped by one
    sigterm_before: Any = None  # the SIGTERM handler to restore, once ours is installed
    finishing: bool = False  # the outputs are being written: a SIGTERM no longer interrupts


def _dest(name: str) -> str:
    return f"vit_audit_{name}"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vit-audit", "Vision Transformer explainability audit (vit-audit)")
    for name, (help_text, metavar) in OPTIONS.items():
        if name == "strict":
            continue  # pytest's own --strict; vit-audit also reads it (inconclusive gates fail)
        flag = "--" + name.replace("_", "-")
        if name in LIST_OPTIONS:
            group.addoption(flag, action="append", dest=_dest(name), default=None, metavar=metavar, help=help_text)
        elif metavar is None:  # a switch
            group.addoption(flag, action="store_true", dest=_dest(name), default=None, help=help_text)
        else:
            group.addoption(flag, action="store", dest=_dest(name), default=None, metavar=metavar, help=help_text)
    group.addoption("--audit-config", dest=_dest("config"), default=None, metavar="TOML",
                    help="TOML file of vit-audit options (its [tool.vit-audit] table, or the whole file)")


#: Where the embedded default's regions come from: its sample images' exact object masks.
EMBEDDED_MASKS = "embedded default (the sample images' object masks)"

def _checks_dir() -> Path:
    import audit.checks as checks

    return Path(checks.__file__).resolve().parent


def _active(config: pytest.Config) -> bool:
    """Whether this run is an audit: it collects the checks package or passes a vit-audit option."""
    if any(config.getoption(_dest(name)) is not None for name in OPTIONS if name != "strict"):
        return True
    if config.getoption(_dest("config")) is not None:
        return True
    try:
        checks_dir = _checks_dir()
    except ImportError:
        return False
    for arg in config.args:
        path = Path(str(arg).split("::", 1)[0]).resolve()
        if path == checks_dir or checks_dir in path.parents:
            return True
    return False


def _embedded_default(settings) -> bool:
    """With no --model: the embedded default model (and its images, unless images are given)."""
    if settings.model:
        if not settings.images:
            raise ValueError("images: no --images given; pass image files or folders to audit the model on")
        return False
    try:
        from .zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images
    except ImportError:
        raise ValueError("model: no --model given; pass --model NAME --checkpoint FILE --images DIR") from None
    settings.model, settings.checkpoint = [EMBEDDED_MODEL], [str(embedded_checkpoint())]
    if not settings.images:
        from .zoo import embedded_masks

        settings.images = [str(embedded_images())]
        if not settings.regions:  # its sample images' exact object masks: localisation shown
            settings.regions = str(embedded_masks())
            settings.origins["regions"] = EMBEDDED_MASKS
    return True


def pytest_configure(config: pytest.Config) -> None:
    if not _active(config):
        return
    cli = {name: config.getoption(_dest(name)) for name in OPTIONS if name != "strict"}
    cli["strict"] = bool(config.getoption("strict", False))
    pyproject = _policy_file(config.rootpath)
    workerinput = getattr(config, "workerinput", None)
    collect_only = bool(config.getoption("collectonly", False))
    workdir, owns = None, False
    try:
        settings = resolve_settings(cli, config.getoption(_dest("config")), pyproject)
        if workerinput is None:
            check_outputs(settings, create=not collect_only,
                          inputs=run_inputs(settings, config.getoption(_dest("config")), pyproject))
        embedded = _embedded_default(settings)
        if workerinput is not None:
            import torch

            workdir = workerinput[WORKDIR_KEY]
            torch.set_num_threads(max(1, torch.get_num_threads() // int(workerinput.get("workercount", 1))))
        else:
            workdir, owns = tempfile.mkdtemp(prefix="vit-audit-"), True
        from .run.session import AuditSession

        session = AuditSession(settings, workdir, embedded=embedded)
        if workerinput is None and not collect_only:
            if settings.executor != "local" and getattr(config.option, "dist", "no") != "no":
                raise ValueError(f"executor: {settings.executor} makes the records itself; drop pytest-xdist's -n "
                                 "or use --executor local")
            session.executor.start()
        config.stash[SESSION] = session
    except (ValueError, AuditError) as err:
        if owns and workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        message = str(err)
        if workerinput is None and not collect_only:  # the controller writes what the run has: the error
            message += write_stopped_run(message, cli, config.getoption(_dest("config")), pyproject)
        raise pytest.UsageError(message) from None
    state = config.stash[STATE] = _State(workdir=workdir, owns_workdir=owns)
    if workerinput is None:
        _stop_on_sigterm(state)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "vit-audit-xdist")


def _policy_file(rootpath: Path) -> Path | None:
    """The pyproject.toml of the project the run is in, or None.

    The current folder's, else pytest's rootdir's when the current folder is inside it; never that of wherever the
    checks are installed (an editable install of vit-audit run from a model's repository must not apply this
    project's own policy).
    """
    here = Path.cwd().resolve()
    for folder in (here, rootpath.resolve()):
        if (folder == here or folder in here.parents) and (folder / "pyproject.toml").is_file():
            return folder / "pyproject.toml"
    return None


class _XdistHooks:
    """Hands the shared folder to pytest-xdist workers."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        node.workerinput[WORKDIR_KEY] = node.config.stash[STATE].workdir


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    session = config.stash.get(SESSION, None)
    if session is None:
        return None
    s = session.settings
    models = ", ".join([f"{m.name} ({m.checkpoint or 'no checkpoint'})" for m in session.models.values()]
                       + [f"{e['name']} (NOT loaded: see test_model_loads)" for e in session.model_errors.values()])
    lines = [f"vit-audit: {models}; {len(session.images)} images; device {session.device}; seed {s.seed}; "
             f"executor {session.executor.describe()}"]
    lines.extend(session.precision.header_lines())  # --amp auto's choice, or bfloat16 emulated on this device
    lines.extend(f"vit-audit: {line}" for line in policy_lines(s))
    if session.baseline is not None:
        agreement = "not gated" if s.min_map_agreement is None else f"gated at {s.min_map_agreement:g}"
        lines.append(f"vit-audit: baseline {session.baseline.source} (map agreement {agreement}); an inconclusive "
                     "comparison fails: the candidate must show it is no worse")
        lines.extend(f"vit-audit: {line}" for line in session.comparison_plan_lines())
    for model_id, loaded in session.models.items():
        lines.extend(f"vit-audit: {model_id}: {note}" for note in loaded.notes)
        lines.extend(f"vit-audit: {model_id}: {line}" for line in session.plan_lines(model_id))
    left_out = session.image_set.left_out
    if left_out:
        shown = "; ".join(f"{e['path']}: {e['reason']}, same as {e['same_as']}" for e in left_out[:3])
        more = f"; ... (+{len(left_out) - 3} more, see the results file)" if len(left_out) > 3 else ""
        lines.append(f"vit-audit: {len(left_out)} image file(s) left out: {shown}{more}")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    session = metafunc.config.stash.get(SESSION, None)
    names = metafunc.fixturenames
    if session is None:
        if {"audit_model", "audit_case", "audit_map", "audit_model_map", "audit_gate", "audit_comparison",
                                "audit_region", "audit_region_pair", "audit_probe"} & set(names):
            raise pytest.UsageError("the vit-audit checks need the vit-audit plugin active: run them as "
                                    "`pytest checks` from the project root or with `vit-audit`")
        return
    if "audit_model" in names:
        metafunc.parametrize("audit_model", session.model_ids, ids=session.model_ids)
    if "audit_case" in names:
        cases = session.cases()
        metafunc.parametrize("audit_case", cases, ids=[c.id for c in cases])
    if "audit_map" in names:
        keys = session.map_keys()
        metafunc.parametrize("audit_map", keys, ids=[f"{m}-{method}@{stage}" for m, method, stage in keys])
    if "audit_model_map" in names:  # maps that depend on the model: every method but the baselines
        keys = [key for key in session.map_keys() if key[1] not in map_names(baseline=True)]
        metafunc.parametrize("audit_model_map", keys, ids=[f"{m}-{method}@{stage}" for m, method, stage in keys])
    if "audit_gate" in names:
        keys = session.gate_keys()
        metafunc.parametrize("audit_gate", keys, ids=[f"{m}-{method}@{stage}" for m, method, stage in keys])
    if "audit_region" in names:
        keys = session.region_keys()
        metafunc.parametrize("audit_region", keys, ids=[f"{m}-{method}@{stage}" for m, method, stage in keys])
    if "audit_region_pair" in names:  # the regions against a baseline: only with one
        keys = session.region_keys() if session.baseline is not None else []
        metafunc.parametrize("audit_region_pair", keys, ids=[f"{m}-{method}@{stage}" for m, method, stage in keys])
    if "audit_probe" in names:
        probes = session.probe_keys()
        metafunc.parametrize("audit_probe", probes, ids=[f"{m}-{spec}" for m, spec in probes])
    if "audit_comparison" in names:
        keys = session.comparison_keys()
        baseline = session.baseline.model.get("id") if session.baseline is not None else "baseline"
        metafunc.parametrize("audit_comparison", keys,
                             ids=[f"{m}-vs-{baseline}-{method}@{stage}" for m, method, stage in keys])


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The comparison checks are collected only when the run has a baseline."""
    session = config.stash.get(SESSION, None)
    if session is not None and session.baseline is None and collection_path.name == "test_compare.py":
        try:
            if collection_path.resolve().parent == _checks_dir():
                return True
        except ImportError:
            return None
    return None


#: Checks parametrised by what a run may not have (a probe, regions with a baseline): with none, they are left out
#: of the run (deselected), not reported as skipped.
OPTIONAL_PARAMETERS = ("audit_probe", "audit_region_pair")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    if config.stash.get(SESSION, None) is None:
        return
    def unset(item) -> bool:  # pytest's item for an empty parameter set holds NOTSET as the parameter
        params = getattr(getattr(item, "callspec", None), "params", {})
        return any(name in params and type(params[name]).__name__ == "NotSetType" for name in OPTIONAL_PARAMETERS)

    empty = [item for item in items if unset(item)]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [item for item in items if item not in empty]


@pytest.fixture(scope="session")
def audit_session(request: pytest.FixtureRequest) -> AuditSession:
    """The run's :class:`audit.run.session.AuditSession`."""
    return request.config.stash[SESSION]


@pytest.fixture
def audit_run(audit_session: AuditSession, audit_case: Case) -> RunRecord:
    """The results record of this test's (model, image), computed once for the whole run."""
    return audit_session.run(audit_case)  # type: ignore[return-value]


def _outcome(report: pytest.TestReport) -> dict[str, Any] | None:
    if report.when == "call" or (report.when == "setup" and not report.passed):
        message = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2])
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            message = crash.message if crash is not None else str(report.longrepr)
        outcome = "error" if report.when == "setup" and report.failed else report.outcome
        return {"nodeid": report.nodeid, "outcome": outcome, "when": report.when, "message": message,
                "duration": report.duration}
    return None


class _Collector:
    """Keeps every check's outcome on the controller (pytest-xdist forwards workers' reports to it), and whether a
    Ctrl-C stopped the run (a SIGTERM records itself); with xdist, shows how many records the workers finished."""

    def __init__(self, state: _State):
        self.state = state
        self.watcher: RecordWatcher | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = _outcome(report)
        if outcome is not None:
            self.state.checks.append(outcome)
        if self.watcher is not None:
            self.watcher.poll()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session):
        """Before the checks run: the records they read, with a progress line (xdist: the workers make them)."""
        audit = session.config.stash.get(SESSION, None)
        if audit is not None and not session.config.getoption("collectonly", False):
            if session.config.pluginmanager.has_plugin("dsession"):  # the controller collects nothing
                progress = Progress.for_config(session.config, len(audit.cases()), live=False)
                self.watcher = RecordWatcher(self.state.workdir, progress)
            elif session.items:
                try:
                    make_records(audit, session.items, session.config)
                except ExecutorError as err:  # the executor lost its cluster: what is done is kept
                    raise pytest.UsageError(str(err)) from None
        return (yield)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.state.checks.append({"nodeid": report.nodeid, "outcome": "error", "when": "collect",
                                      "message": str(report.longrepr)[:2000], "duration": 0.0})

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        if self.state.interrupted is None and excinfo.errisinstance(KeyboardInterrupt):
            self.state.interrupted = "SIGINT"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE, None)
    if state is not None and not hasattr(session.config, "workerinput"):
        session.config.pluginmanager.register(_Collector(state), "vit-audit-collector")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    audit = config.stash.get(SESSION, None)
    state = config.stash.get(STATE, None)
    if audit is None or state is None or hasattr(config, "workerinput"):
        return  # the controller alone writes the results
    state.finishing = True
    s = audit.settings
    if not (s.audit_json or s.report):
        return
    if config.getoption("collectonly", False):
        state.written.append("nothing audited (--collect-only): the results file and the report were not written")
        return
    results = audit.results(checks=state.checks)
    results["seconds"] = time.perf_counter() - state.started
    if state.interrupted:
        results["interrupted"] = state.interrupted
    for name, target, path, detail in write_outputs(results, s.audit_json, s.report, s.report_thumbnail,
                                                     s.report_max_mb):
        if path is None:
            state.written.append(f"{name}: NOT written to {target} ({detail})")
            if session.exitstatus == pytest.ExitCode.OK:  # a run whose outputs are missing did not pass
                session.exitstatus = pytest.ExitCode.USAGE_ERROR
        else:
            state.written.append(f"{name}: {path}" + (f" ({detail})" if detail else ""))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    audit = config.stash.get(SESSION, None)
    state = config.stash.get(STATE, None)
    if audit is None or state is None or hasattr(config, "workerinput"):
        return
    terminalreporter.section("vit-audit")
    if state.interrupted:
        terminalreporter.write_line(f"interrupted by {state.interrupted}: the outputs hold the checks done before it")
    if not audit.settings.gate:
        terminalreporter.write_line("NO GATE       the run gated nothing (--gate none): nothing vouches for the model")
    for gate in audit.gate_records():
        terminalreporter.write_line(
            f"{gate['verdict'].upper():<13} {gate['model_id']} {gate['method']}@{gate['stage']}: mean ABPC "
            f"{gate['statistic'] if gate['statistic'] is not None else float('nan'):+.3f} "
            f"[{_num(gate['ci95'][0])}, {_num(gate['ci95'][1])}] vs {gate['threshold']:+g}, n={gate['n_images']}")
    for record in audit.comparison_records():
        drift = record["drift"]
        terminalreporter.write_line(
            f"{record['verdict'].upper():<13} {record['model_id']} vs baseline {record['method']}@{record['stage']}: "
            f"mean ABPC difference {_num(record['statistic'])} [{_num(record['ci95'][0])}, {_num(record['ci95'][1])}] "
            f"vs -{record['margin']:g}, n={record['n_pairs']}; maps: median Spearman {_num(drift['statistic'])} "
            f"[{_num(drift['ci95'][0])}, {_num(drift['ci95'][1])}] ({drift['verdict']}), same class on "
            f"{_percent(drift['top1_agreement'])} of the images"
            + ("; fails: the candidate has not shown it is no worse" if record["verdict"] == "inconclusive" else ""))
    for line in _reasons_summary(audit):
        terminalreporter.write_line(line)
    for line in audit.records.cache_lines() + audit.executor.summary_lines():
        terminalreporter.write_line(line)
    for line in state.written:
        terminalreporter.write_line(line)


def _reasons_summary(audit) -> list[str]:
    """The terminal's lines of the regions, probes and class-agreement gates evaluated in this run."""
    lines = []
    for record in audit.store.read_all("regions"):
        lines.append(f"{record['verdict'].upper():<13} {record['model_id']} {record['map']} on the objects: "
                     f"mass - chance {_num(record['statistic'])} [{_num(record['ci95'][0])}, "
                     f"{_num(record['ci95'][1])}], n={record['n_images']}")
        paired = record.get("paired")
        if paired is not None and paired["verdict"] != "not applicable":
            obj = paired["object"]
            lines.append(f"{paired['verdict'].upper():<13} {record['model_id']} vs baseline {record['map']} on the "
                         f"regions: object mass difference {_num(obj.get('statistic'))} "
                         f"[{_num((obj.get('ci95') or [None, None])[0])}, {_num((obj.get('ci95') or [None, None])[1])}]"
                         f" vs -{paired['margin']:g}")
    for record in audit.store.read_all("probes"):
        attraction = record["attraction"]
        paired = record.get("paired")
        verdict = paired["verdict"] if paired is not None else record["verdict"]
        line = (f"{verdict.upper():<13} {record['model_id']} probe {record['probe']}: largest attraction "
                f"{attraction['max']:.3f}, flip rate {_percent(attraction['flip_rate'])}")
        if paired is not None:
            a = paired["attraction"]
            line += (f"; vs baseline {_num(a['statistic'])} [{_num(a['ci95'][0])}, {_num(a['ci95'][1])}] vs "
                     f"+{a['margin']:g}")
        lines.append(line)
    for record in audit.store.read_all("classes"):
        worst = record.get("worst") or {}
        lines.append(f"{record['verdict'].upper():<13} {record['model_id']} class agreement with the baseline "
                     f"{_percent(record['agreement'])}; lowest {worst.get('class_name') or worst.get('class')} "
                     f"{worst.get('agree')}/{worst.get('n')}")
    return lines


def _num(value: float | None) -> str:
    return "nan" if value is None else f"{value:+.3f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _stop_on_sigterm(state: _State) -> None:
    """Make SIGTERM stop the run as Ctrl-C does (the controller's main thread only; workers are left alone).

    pytest's interrupt path then writes the outputs with what is done (``pytest_sessionfinish``), removes the
    temporary folder (``pytest_unconfigure``) and exits with status 2; once the outputs are being written, a
    SIGTERM lets them be finished. A second SIGTERM gets the handler there was before (by default: end at once).
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame) -> None:
        signal.signal(signal.SIGTERM, state.sigterm_before)
        if not state.finishing:
            state.interrupted = "SIGTERM"
            raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, stop)
    state.sigterm_before = signal.SIG_DFL if before is None else before  # None: set outside Python


def pytest_unconfigure(config: pytest.Config) -> None:
    audit = config.stash.get(SESSION, None)
    if audit is not None:
        audit.executor.close()
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if state.sigterm_before is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, state.sigterm_before)
    if state.owns_workdir:
        shutil.rmtree(state.workdir, ignore_errors=True)
