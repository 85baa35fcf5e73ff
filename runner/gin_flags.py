"""Gin at the edge: t5x-style `--gin_file=F` (repeatable) and `--gin.NAME=VALUE` bindings,
parsed into config objects (a Run, a ModelConfig, a DecodeConfig) with gin cleared again,
so nothing past here reads global gin state. runner/configurables.py says what gin can bind.

The flags themselves are split off argv by runner/gin_args.py (no TensorFlow, no registry).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import logging
import os
import re

import gin
from gin import config_parser

from runner import configurables

# The shipped gin/ as installed: a data package, since `gin` is the gin-config library's name
# (setup.py, pyproject.toml's package-dir). GIN_ROOT is its directory.
SHIPPED = "t5pod_gin.gin"


@functools.cache
def shipped_gin_root() -> str:
    """The directory of the shipped gin files, found by import: site-packages/t5pod_gin/gin in
    a wheel, the checkout's gin/ in an editable install (setuptools maps the package there).
    Not `importlib.resources.files`: on Python 3.11 it refuses the namespace path of an
    editable install (it holds setuptools' placeholder entry)."""
    try:
        spec = importlib.util.find_spec(SHIPPED)
    except ModuleNotFoundError:
        spec = None
    locations = (spec.submodule_search_locations or []) if spec else []
    found = [p for p in locations if os.path.isdir(p)]
    if not found:
        raise ModuleNotFoundError(
            f"t5pod's shipped gin configs (package {SHIPPED}) are not installed: install t5pod "
            "(`pip install -e .` in a checkout, as `make` does) again after pulling this change")
    return found[0]


def __getattr__(name: str):
    """GIN_ROOT, found when first read: without the shipped configs, only what needs them fails."""
    if name == "GIN_ROOT":
        return shipped_gin_root()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_gin_file(path: str) -> str:
    """The gin file `path` names (as given, or under gin/, with or without `.gin`)."""
    if os.path.isfile(path):
        return path
    root = shipped_gin_root()
    candidates = (path, os.path.join(root, path), os.path.join(root, path + ".gin"))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    directory = next((c for c in candidates if os.path.isdir(c)), None)
    if directory is not None:
        inside = _gin_files_under(directory)
        raise IsADirectoryError(
            f"--gin_file={path!r} is a directory ({os.path.abspath(directory)}), not a gin file; "
            + (f"give one of the {len(inside)} gin files under it, e.g. "
               f"{[os.path.join(path, f) for f in inside[:5]]}" if inside
               else "there is no .gin file under it"))
    shipped = _gin_files_under(root)
    close = difflib.get_close_matches(path, shipped, n=3, cutoff=0.4)
    raise FileNotFoundError(f"gin file {path!r} not found" +
                            (f"; did you mean {close}?" if close else f"; shipped: {shipped}"))


def _gin_files_under(directory: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), directory)
                  for d, _, fs in os.walk(directory) for f in fs if f.endswith(".gin"))


@functools.cache  # once: gin keeps its search paths through clear_config
def add_search_paths() -> None:
    """The directory holding gin/, then gin/: the shipped files include each other as
    'gin/runs/x.gin', a user's may say 'runs/x.gin'."""
    gin.add_config_file_search_path(os.path.dirname(shipped_gin_root()))
    gin.add_config_file_search_path(shipped_gin_root())


def parse(files: list[str], bindings: list[str]) -> None:
    """Parse gin files then bindings, turning gin's errors into ones that suggest a fix."""
    gin.clear_config()
    add_search_paths()
    quiet = _QuietSearch()
    logging.getLogger().addFilter(quiet)
    try:
        gin.parse_config_files_and_bindings([resolve_gin_file(f) for f in files], bindings,
                                            finalize_config=False)
    except ValueError as e:
        raise ValueError(_suggest(str(e))) from None
    finally:
        logging.getLogger().removeFilter(quiet)


class _QuietSearch(logging.Filter):
    """Drops the error gin logs for each search path an included file is not under before the
    one it is (run outside a checkout, every include); a file under none raises anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.module == "resource_reader"
                    and str(record.msg).startswith("Path not found"))


MOVED = {("ByteEncoderConfig", "frozen"):
         "freezing is spelled one way now: model_zoo.model.frozen = ['byte_shared', "
         "'byte_encoder'] (names of top-level params, 'encoder' for the token encoder)"}


def _suggest(message: str) -> str:
    known = configurables.known_configurables()
    missing = re.search(r"No configurable matching '([^']+)'", message)
    if missing:
        close = difflib.get_close_matches(missing.group(1), list(known), n=3, cutoff=0.5)
        return (f"unknown configurable {missing.group(1)!r}"
                + (f"; did you mean {close}?" if close else f"; t5pod's: {sorted(known)}")
                + f"\n(gin: {message})")
    param = re.search(r"Configurable '([^']+)' (?:doesn't have a parameter named|has "
                      r"denylisted kwarg) '([^']+)'", message)
    if param:
        name = param.group(1)
        moved = MOVED.get((name.split(".")[-1], param.group(2)))
        if moved:
            return f"{name}.{param.group(2)} is gone: {moved}\n(gin: {message})"
        if (name.split(".")[-1], param.group(2)) == ("FeedConfig", "task_settings"):
            settings = sorted(k for k in known if k.startswith("tasks.") and k != name)
            return (f"{name}.task_settings is not bound itself: bind each setting, e.g. "
                    f"tasks.mmlu.data_dir = '/data'; settings: {settings}\n(gin: {message})")
        matches = [k for k in known if name in (k, k.split(".")[-1])]
        names = known[matches[0]] if matches else []
        close = difflib.get_close_matches(param.group(2), names, n=3, cutoff=0.5)
        return (f"{name} has no parameter {param.group(2)!r}"
                + (f"; did you mean {close}?" if close else "")
                + (f" valid: {names}" if names else "") + f"\n(gin: {message})")
    return message


def require_macros(names: list[str]) -> None:
    for name in names:
        try:
            gin.query_parameter(f"%{name}")
        except ValueError:
            raise ValueError(f"required macro {name} is not set: define it in a gin file or "
                             f"pass --gin.{name}=VALUE") from None


def check_macros_defined(files: list[str], names: list[str]) -> None:
    """Each name must be a macro the gin files define (gin itself accepts any macro name)."""
    configurables.register_tasks_configurables()
    try:
        parse(files, [])
        defined = sorted(set(re.findall(r"%([A-Za-z_]\w*)", gin.config_str())))
        for name in names:
            try:
                gin.query_parameter(f"%{name}")
            except ValueError:
                close = difflib.get_close_matches(name, defined, n=3, cutoff=0.5)
                raise ValueError(f"sweep binds {name!r}, which is neither a configurable "
                                 f"parameter (configurable.parameter) nor a macro of {files}"
                                 + (f"; did you mean {close}?" if close else
                                    f"; its macros: {defined}")) from None
    finally:
        gin.clear_config()


REQUIRED_MACROS = ["MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "BATCH_SIZE", "TRAIN_STEPS",
                   "INITIAL_CHECKPOINT_PATH"]


class _Macro(str):
    """A `%NAME` inside a bound value, as gin's parser hands it to its delegate."""


class _Reading(config_parser.ParserDelegate):
    """Parser delegate that keeps macro references and drops configurable ones."""

    def configurable_reference(self, scoped_configurable_name, evaluate):
        return None

    def macro(self, macro_name):
        return _Macro(macro_name)


def _bindings() -> list[config_parser.BindingStatement]:
    """Every binding gin holds now, read back from its public text form (`gin.config_str`):
    a macro definition has `arg_name == ""` and its name as the selector."""
    return list(config_parser.ConfigParser(gin.config_str(), _Reading()))


def _macros_read_by(value) -> set[str]:
    """Names of the macros (`%NAME`) a bound value refers to, nested containers included."""
    if isinstance(value, _Macro):
        return {str(value)}
    if isinstance(value, dict):
        return set().union(*map(_macros_read_by, value.values()), set())
    if isinstance(value, (list, tuple)):
        return set().union(*map(_macros_read_by, value), set())
    return set()


def check_macros_read() -> None:
    """Every macro set must be read by some binding: gin itself accepts `TRAIN_STEP = 5`
    beside `TRAIN_STEPS` and ignores it, so a misspelled macro would pass silently."""
    bound = _bindings()
    defined = {b.selector if not b.scope else f"{b.scope}/{b.selector}"
               for b in bound if not b.arg_name}
    read = set(REQUIRED_MACROS).union(*(_macros_read_by(b.value) for b in bound))
    unread = sorted(defined - read)
    if unread:
        name = unread[0]
        close = difflib.get_close_matches(name, sorted(read), n=3, cutoff=0.5)
        raise ValueError(f"macro {name} is set but nothing reads it (no binding says "
                         f"%{name})" + (f"; did you mean {close}?" if close else
                                        f"; the macros read are {sorted(read)}")
                         + (f" (also unread: {unread[1:]})" if unread[1:] else ""))


def _with_macro(e: Exception) -> Exception:
    """The config error, plus the macro bound to the field it names (`TRAIN_STEPS=10.5`
    shows up as `ScheduleConfig.decay_steps=10.5`)."""
    message = str(e)
    field = re.match(r"([\w.]+)\.(\w+)=", message)
    if not field:
        return e
    owner, name = field.groups()
    named = sorted(set().union(*(
        _macros_read_by(b.value) for b in _bindings()
        if b.arg_name == name and (b.selector == owner or b.selector.endswith("." + owner))),
        set()))
    if not named:
        return e
    first, *rest = message.splitlines()
    return (ValueError if isinstance(e, ValueError) else TypeError)(
        f"{first} (set by the macro {', '.join(named)})" + "".join(f"\n{x}" for x in rest))


def run_from_gin(files: list[str], bindings: list[str]):
    """`run, records = run_from_gin(files, bindings)`: the one place a run is parsed.

    `run` is the Run, a plain value: everything t5pod's runner, training and input pipeline
    use comes from it (the task settings too, in `run.feed.task_settings`), and gin is
    cleared before it returns. `records` is what a model_dir keeps: config.gin (as given)
    and operative_config.gin (what building the run read).
    """
    configurables.register_tasks_configurables()
    try:
        parse(files, bindings)
        require_macros(REQUIRED_MACROS)
        check_macros_read()
        try:
            run = configurables.train()
        except (ValueError, TypeError) as e:
            hinted = _with_macro(e)
            if hinted is e:
                raise
            raise hinted from None
        return run, {"config.gin": gin.config_str(),
                     "operative_config.gin": gin.operative_config_str()}
    finally:
        gin.clear_config()


def task_settings_from_gin(files: list[str], bindings: list[str]):
    """The TaskSettings the gin files and bindings give (`tasks.mmlu.data_dir = %MMLU_DIR`),
    for tools that read a task's data without a Run (tools.eval)."""
    configurables.register_tasks_configurables()
    return _built(files, bindings, configurables.task_settings)


def _built(files: list[str], bindings: list[str], make):
    """`make()` with the gin files and bindings parsed, and gin cleared after."""
    try:
        parse(files, bindings)
        return make()
    finally:
        gin.clear_config()


def model_from_gin(files: list[str], bindings: list[str]):
    """The ModelConfig of model gin files (`model_zoo.model`), no run around it."""
    return _built(files, bindings, configurables.model)


def decode_config_from_gin(files: list[str], bindings: list[str]):
    """The DecodeConfig the gin files and bindings give."""
    return _built(files, bindings, configurables.decode_config)


def model_from_gin_for(path: str, gin_files: list[str], gin_bindings: list[str]):
    """The ModelConfig gin binds (`model_zoo.model`) for a t5x checkpoint, which stores none;
    None for other sources or when the gin files bind no model (a t5x checkpoint is then
    read as its shapes and config.gin say)."""
    from training.checkpoints import kinds

    if not (gin_files or gin_bindings):
        return None
    try:
        if kinds.detect(path) != "t5x":
            return None
    except FileNotFoundError:
        return None  # not a t5x checkpoint: `load` names what the path is
    try:
        parse(gin_files, gin_bindings)
        try:
            gin.query_parameter("model_zoo.model.preset_name")
        except ValueError:
            return None
        return configurables.model()
    finally:
        gin.clear_config()
