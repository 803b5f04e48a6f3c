"""Which code runs a study's ``task``: the built-in tasks by name, your own by ``file.py:Class`` or
``package.module:Class`` (a subclass of ``freezelab.Task``, docs/plugins.md).

Everything the engine asks of a task goes through here: its run config model (validation, ``freezelab
fields``, the config hash), the keys that define comparability between arms, and the object that
inspects and runs one config. Built-in tasks are imported when first asked for, so a study of one task
never imports another.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from freezelab.config.fields import hash_view as _hash_view
from freezelab.errors import ConfigError
from freezelab.tasks.base import Task

BUILTIN = ("lm", "timeseries", "classify")


def task_config(task: str, where: Path | None = None) -> type[BaseModel]:
    """The pydantic model of a task's resolved run config.

    Args:
        task: the study's ``task`` value.
        where: the study file's folder (a plugin path is relative to it).

    Raises:
        ConfigError: a plugin that cannot be loaded (see ``load_plugin``).
    """
    if task == "lm":
        from freezelab.tasks.lm.config import LMConfig

        return LMConfig
    if task == "timeseries":
        from freezelab.tasks.timeseries.config import TSConfig

        return TSConfig
    return _plugin(task, where).run_config_model()


def protected_keys(task: str, where: Path | None = None) -> tuple[str, ...]:
    """Dotted keys (and prefixes) that arms may change only via ``allow_confound``."""
    if task == "lm":
        from freezelab.tasks.lm.config import PROTECTED_KEYS

        return PROTECTED_KEYS
    if task == "timeseries":
        from freezelab.tasks.timeseries.config import PROTECTED_KEYS as ts_keys

        return tuple(ts_keys)
    from freezelab.engine.config import PROTECTED_KEYS as engine_keys

    return engine_keys


def tuning_keys(task: str) -> tuple[str, str]:
    """(learning-rate key, epoch-budget key) a study's ``tune:`` sets in each trial: the LM's Phase 2 is the
    trained phase; the time-series task's base lr is ``optim.lr``; every plugin trains under ``train``."""
    if task == "lm":
        return "phase2.lr", "phase2.max_epochs"
    return ("optim.lr" if task == "timeseries" else "train.lr"), "train.max_epochs"


def hash_view(task: str, config: dict[str, Any], where: Path | None = None) -> dict[str, Any]:
    """The resolved config as the config hash sees it (``config.fields.hash_view`` of the task's model)."""
    return _hash_view(task_config(task, where), config)


def get_task(name: str, where: Path | None = None) -> Task:
    """The object that inspects and runs one resolved config of task ``name``."""
    if name == "lm":
        from freezelab.tasks.lm.task import LMTask

        return LMTask()
    if name == "timeseries":
        from freezelab.tasks.timeseries.task import TSTask

        return TSTask()
    from freezelab.engine.runner import PluginRunner

    return PluginRunner(_plugin(name, where))


def _plugin(spec: str, where: Path | None) -> Any:
    if spec == "classify":
        from freezelab.tasks.classify.task import ClassifyTask

        return ClassifyTask()
    return load_plugin(spec, where)()


def load_plugin(spec: str, where: Path | None = None) -> type:
    """The ``freezelab.Task`` subclass named by ``path/to/file.py:ClassName`` (relative to ``where``, the study
    file's folder) or ``package.module:ClassName``.

    Raises:
        ConfigError: the file or module does not exist or fails to import, the class is missing, or it is not
            a subclass of ``freezelab.Task`` — one line saying which and how to fix it.
    """
    from freezelab.engine.task import Task as PublicTask

    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ConfigError(f"task: {spec!r} is not path/to/file.py:ClassName or package.module:ClassName.")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_absolute() and where is not None:
            path = Path(where) / path
        if not path.is_file():
            raise ConfigError(f"task: {spec!r}: file {path} does not exist. Give the path relative to the study "
                              "file, e.g. task: my_task.py:MyTask.")
        module_name = f"freezelab_plugin_{abs(hash(str(path.resolve()))):x}"
        module = sys.modules.get(module_name)
        if module is None:
            loader = importlib.util.spec_from_file_location(module_name, path)
            if loader is None or loader.loader is None:
                raise ConfigError(f"task: {spec!r}: {path} cannot be imported as Python.")
            module = importlib.util.module_from_spec(loader)
            sys.modules[module_name] = module
            try:
                loader.loader.exec_module(module)
            except Exception as err:  # the user's code: say where it failed, in one line
                del sys.modules[module_name]
                raise ConfigError(f"task: {spec!r}: importing {path} failed: {type(err).__name__}: {err}") from err
        where_text = str(path)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise ConfigError(f"task: {spec!r}: module {target!r} cannot be imported ({err}). Install the package "
                              "or give a file path, e.g. task: my_task.py:MyTask.") from err
        where_text = f"module {target}"
    cls = getattr(module, name, None)
    if cls is None:
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, PublicTask)
                       and v is not PublicTask)
        hint = f" Task classes there: {', '.join(found)}." if found else " It defines no freezelab.Task subclass."
        raise ConfigError(f"task: {spec!r}: {where_text} has no class {name!r}.{hint}")
    if not (isinstance(cls, type) and issubclass(cls, PublicTask)):
        raise ConfigError(f"task: {spec!r}: {name} in {where_text} is not a subclass of freezelab.Task. "
                          f"Write `class {name}(freezelab.Task):` (docs/plugins.md).")
    missing = cls.missing_methods()
    if missing:
        raise ConfigError(f"task: {spec!r}: {name} does not define {', '.join(missing)} (freezelab.Task needs "
                          f"them; docs/plugins.md).")
    return cls
