"""Experiment files (YAML): parsing, `defaults:`/`grid:`/`seeds:` expansion, validation with precise errors."""

from __future__ import annotations

import copy
import itertools
import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.events import AliasEvent

from bert_eval.core.storage.fsutil import read_capped
from bert_eval.search import check_search
from bert_eval.spec import Experiment, RunSpec, SearchSpec, TrainHyperparameters, normalize_id, short

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_RUNS",
    "MAX_SEEDS",
    "ExperimentFileError",
    "describe_validation_error",
    "expand_grid",
    "expand_seeds",
    "load_experiment",
    "load_yaml_file",
    "parse_experiment",
    "short",
]

# A configuration's replicates: enough for a tight interval, few enough that a typo is not 10,000 runs.
MAX_SEEDS = 100
# Runs in one experiment (after `grid:` and `seeds:`), as `Experiment.runs` allows.
MAX_RUNS = 1000
# An experiment file is a page of settings; anything larger is refused before it is parsed.
MAX_FILE_BYTES = 1 << 20
# Nesting of mappings and lists; an experiment file needs four or five levels.
_MAX_DEPTH = 32

_TOP_LEVEL_KEYS = {"experiment_id", "defaults", "runs", "grid", "search", "tracking", "register"}


class ExperimentFileError(ValueError):
    """The experiment file is invalid; the message names the file, the run and the field."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what a settings file never needs: aliases (`*name`, the way a few
    hundred bytes expand to gigabytes), keys given twice in one mapping (the later one would win silently),
    and nesting deeper than `_MAX_DEPTH`."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            event = self.get_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"alias *{str(event.anchor)[:30]} found: aliases are not allowed; write the values out "
                "(shared settings go under defaults:)",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {_MAX_DEPTH} levels deep", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the base class names it
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {short(key, 40)} is given twice (first on line {first.start_mark.line + 1}); keep one",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def load_yaml_file(path: str | Path, *, what: str = "experiment file", max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Parse a YAML file a user gives, safely: at most `max_bytes` read (larger files are refused before
    parsing), UTF-8 only, no aliases, no key given twice, bounded nesting.

    Returns the parsed document. Raises ExperimentFileError, one line naming the file, the place
    (line and column) and the cause."""
    path = Path(path)
    try:
        raw = read_capped(path, max_bytes)
    except OSError as exc:
        raise ExperimentFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if raw is None:
        raise ExperimentFileError(
            f"{path}: larger than {max_bytes // 1024} KiB, the limit for an {what}; "
            "use grid: and seeds: rather than listing runs one by one"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExperimentFileError(f"{path}: not UTF-8 text (byte {exc.start}); save the {what} as UTF-8") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ExperimentFileError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ExperimentFileError(f"{path}: not valid YAML: nested too deep") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: the problem and where it is (line, column), without the quoted snippet."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "invalid"
        return where + " ".join(str(problem).split())[:200]
    return " ".join(str(exc).split())[:200]


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment file (`load_yaml_file`, then `parse_experiment`).

    Raises ExperimentFileError, one line naming the file, the run and the field."""
    return parse_experiment(load_yaml_file(path), source=str(Path(path)))


def parse_experiment(document: Any, *, source: str = "experiment") -> Experiment:
    """Validate a parsed document into a canonical Experiment (ids assigned, unique)."""
    if not isinstance(document, dict):
        raise ExperimentFileError(f"{source}: expected a mapping with a 'runs:' list at the top level")
    unknown = set(document) - _TOP_LEVEL_KEYS
    if unknown:
        raise ExperimentFileError(
            f"{source}: unknown top-level key(s) {short(sorted(map(str, unknown)))}; allowed: {sorted(_TOP_LEVEL_KEYS)}"
        )
    defaults = document.get("defaults") or {}
    runs = document.get("runs")
    if runs is None:
        runs = [{}] if defaults else []
    if not isinstance(runs, list) or not runs:
        raise ExperimentFileError(f"{source}: 'runs:' must be a non-empty list of run configs")
    if not isinstance(defaults, dict):
        raise ExperimentFileError(f"{source}: 'defaults:' must be a mapping")

    if len(runs) > MAX_RUNS:
        raise ExperimentFileError(f"{source}: 'runs:' lists {len(runs)} runs; an experiment holds at most {MAX_RUNS}")
    _refuse_non_numbers(defaults, where=f"{source}: defaults")
    merged = []
    for index, run in enumerate(runs):
        if not isinstance(run, dict):
            raise ExperimentFileError(f"{source}: runs[{index}] must be a mapping, got {type(run).__name__}")
        _refuse_non_numbers(run, where=f"{source}: runs[{index}]")
        merged.append(_deep_merge(defaults, run))
    grid = document.get("grid")
    _refuse_non_numbers(grid, where=f"{source}: grid")
    _check_run_count(merged, grid, source=source)
    if grid is not None:
        merged = expand_grid(merged, grid, source=source)
    merged, replicates = expand_seeds(merged, source=source)

    specs = []
    for index, run in enumerate(merged):
        label = f"runs[{index}]" + _run_id_note(run)
        try:
            spec = RunSpec.model_validate(run)
        except ValidationError as exc:
            raise ExperimentFileError(f"{source}: {label}: {describe_validation_error(exc)}") from None
        if index in replicates and spec.config is None:
            # Unnamed replicates: the configuration is named after everything but the seed.
            seedless = spec.model_copy(update={"train": spec.train.model_copy(update={"seed": 0})})
            spec = spec.model_copy(update={"config": f"cfg-{seedless.fingerprint()[:10]}"})
        specs.append(spec)
    search = _search(document.get("search"), specs, source=source)
    try:
        experiment_id = document.get("experiment_id")
        # `register:` is read under its own name, so an error in it names `register.…`.
        return Experiment.model_validate(
            {
                "experiment_id": experiment_id,
                "runs": tuple(specs),
                "search": search,
                "tracking": document.get("tracking"),
                "register": document.get("register"),
            }
        ).canonical()
    except ValidationError as exc:
        raise ExperimentFileError(f"{source}: {describe_validation_error(exc)}") from None
    except ValueError as exc:
        raise ExperimentFileError(f"{source}: {exc}") from None


def _search(section: Any, specs: list[RunSpec], *, source: str) -> SearchSpec | None:
    """The `search:` section, checked against the template run as far as the file allows (the task when
    dataset.task is given, the training rows when train.max_train_samples is)."""
    if section is None:
        return None
    try:
        search = SearchSpec.model_validate(section)
    except ValidationError as exc:
        problem = describe_validation_error(exc).removeprefix("value: ").replace("space: ", "space.", 1)
        raise ExperimentFileError(f"{source}: search.{problem}") from None
    if len(specs) != 1:
        raise ExperimentFileError(
            f"{source}: search: needs exactly one run, the trials' template (got {len(specs)}); drop grid: and seeds:"
        )
    template = specs[0].with_canonical_id()
    try:
        check_search(search, template, task=template.dataset.task, train_rows=template.train.max_train_samples)
    except ValueError as exc:
        raise ExperimentFileError(f"{source}: {exc}") from None
    return search


def expand_grid(runs: list[dict[str, Any]], grid: Any, *, source: str = "experiment") -> list[dict[str, Any]]:
    """Cartesian product of `grid:` values (dotted paths, e.g. `train.learning_rate: [1e-5, 3e-5]`) per run."""
    if not isinstance(grid, dict) or not grid:
        raise ExperimentFileError(f"{source}: 'grid:' must map dotted field paths to non-empty lists")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ExperimentFileError(f"{source}: grid.{short(key, 40)} must be a non-empty list, got {short(values)}")
    points = math.prod(len(values) for values in grid.values())
    if len(runs) * points > MAX_RUNS:
        raise ExperimentFileError(
            f"{source}: grid: {len(runs)} run(s) x {points} combinations = {len(runs) * points} runs; "
            f"an experiment holds at most {MAX_RUNS}"
        )
    keys = list(grid)
    expanded = []
    for run in runs:
        for combo in itertools.product(*(grid[key] for key in keys)):
            variant = copy.deepcopy(run)
            for key, value in zip(keys, combo, strict=True):
                _set_dotted(variant, key, value)
            if isinstance(run.get("run_id"), str):
                variant["run_id"] = _grid_run_id(run["run_id"], keys, combo, source=source)
            expanded.append(variant)
    return expanded


def expand_seeds(runs: list[dict[str, Any]], *, source: str = "experiment") -> tuple[list[dict[str, Any]], set[int]]:
    """One run per seed for each run with `seeds:` (a count N: the run's train.seed and the N-1 after it; or
    a list of seeds), all of one configuration. Returns the runs and the indices of the replicates."""
    expanded: list[dict[str, Any]] = []
    replicates: set[int] = set()
    for index, run in enumerate(runs):
        if "seeds" not in run:
            expanded.append(run)
            continue
        where = f"{source}: runs[{index}]" + _run_id_note(run)
        train = run.get("train")
        base = (train if isinstance(train, dict) else {}).get("seed", TrainHyperparameters.model_fields["seed"].default)
        seeds = _seed_list(run["seeds"], base, where=where)
        for seed in seeds:
            variant = copy.deepcopy(run)
            del variant["seeds"]
            _set_dotted(variant, "train.seed", seed)
            if isinstance(run.get("run_id"), str):
                variant["run_id"] = _seeded_run_id(run["run_id"], seed, where=where)
                variant.setdefault("config", run["run_id"])
            replicates.add(len(expanded))
            expanded.append(variant)
    return expanded, replicates


def _seed_list(value: Any, base: Any, *, where: str) -> list[int]:
    if isinstance(value, bool) or not isinstance(value, (int, list)):
        raise ExperimentFileError(
            f"{where}: seeds must be a count from 1 to {MAX_SEEDS} or a list of seeds, got {short(value)}"
        )
    if isinstance(value, int):
        if not 1 <= value <= MAX_SEEDS:
            raise ExperimentFileError(f"{where}: seeds must be from 1 to {MAX_SEEDS}, got {short(value, 20)}")
        if isinstance(base, bool) or not isinstance(base, int):
            raise ExperimentFileError(
                f"{where}: train.seed must be a whole number to count seeds from, got {short(base)}"
            )
        return [base + offset for offset in range(value)]
    if not 1 <= len(value) <= MAX_SEEDS or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in value):
        raise ExperimentFileError(f"{where}: seeds must list 1 to {MAX_SEEDS} whole numbers >= 0, got {short(value)}")
    if len(set(value)) != len(value):
        raise ExperimentFileError(f"{where}: seeds lists a seed twice: {short(value)}")
    return list(value)


def _seeded_run_id(base: str, seed: int, *, where: str) -> str:
    try:
        return normalize_id(f"{base}-s{seed}")
    except ValueError as exc:
        raise ExperimentFileError(f"{where}: the run id of seed {seed}: {exc} (shorten run_id)") from None


def _grid_run_id(base: str, keys: list[str], combo: tuple[Any, ...], *, source: str) -> str:
    parts = [base] + [f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in zip(keys, combo, strict=True)]
    slug = re.sub(r"[^a-z0-9.-]+", "-", "-".join(parts).lower()).strip("-.")
    slug = re.sub(r"-{2,}", "-", slug).replace("..", ".")
    try:
        return normalize_id(slug[:63].rstrip("-._"))
    except ValueError as exc:
        raise ExperimentFileError(f"{source}: grid run id from {short(base)}: {exc}") from None


def _run_id_note(run: dict[str, Any]) -> str:
    """` (run_id '...')` when the run names its id (quoted short), for messages about the run."""
    return f" (run_id {short(run['run_id'], 70)})" if isinstance(run.get("run_id"), str) else ""


def _check_run_count(runs: list[dict[str, Any]], grid: Any, *, source: str) -> None:
    """Refuse, before anything is expanded, an experiment of more than MAX_RUNS runs, and `seeds:` together
    with a grid over train.seed (both would set the seed: the same run twice under two names)."""
    points = math.prod(len(v) for v in grid.values() if isinstance(v, list)) if isinstance(grid, dict) else 1
    seeded_grid = isinstance(grid, dict) and "train.seed" in grid
    total = 0
    for index, run in enumerate(runs):
        seeds = run.get("seeds")
        if seeds is not None and seeded_grid:
            raise ExperimentFileError(
                f"{source}: runs[{index}] has seeds: and grid: sets train.seed; both set the seed (the same run "
                "twice under two names): drop one"
            )
        count = min(seeds, MAX_SEEDS) if isinstance(seeds, int) and not isinstance(seeds, bool) else 1
        count = len(seeds) if isinstance(seeds, list) else count
        total += max(count, 1) * max(points, 1)
    if total > MAX_RUNS:
        raise ExperimentFileError(
            f"{source}: grid: and seeds: expand to {total} runs; an experiment holds at most {MAX_RUNS}"
        )


def _refuse_non_numbers(value: Any, *, where: str) -> None:
    """NaN and infinities, named as such (a bound check would call `.nan` "not less than 1")."""
    if isinstance(value, float) and not math.isfinite(value):
        named = "NaN (not a number)" if math.isnan(value) else f"{value}, not a finite number"
        raise ExperimentFileError(f"{where}: {named}; give a number")
    if isinstance(value, dict):
        for key, child in value.items():
            name = key if isinstance(key, str) and len(key) <= 40 else short(key, 40)
            _refuse_non_numbers(child, where=f"{where}.{name}")
    elif isinstance(value, list):
        for position, child in enumerate(value):
            _refuse_non_numbers(child, where=f"{where}[{position}]")


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = target
    for part in parents:
        child = node.get(part)
        if child is None or isinstance(child, str):
            # `dataset: glue/sst2` written as a string expands to its mapping form.
            child = {} if child is None else {"name": child}
            node[part] = child
        node = child
    node[leaf] = value


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as one line: `field.path: message; ...`, each message cut to a few hundred characters."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "value"
        message = " ".join(error["msg"].removeprefix("Value error, ").split())
        problems.append(f"{where}: {message[:300]}")
    return "; ".join(problems)
