"""Experiment files (YAML): parsing, `defaults:`/`grid:`/`seeds:` expansion, validation with precise errors."""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bert_eval.search import check_search
from bert_eval.spec import Experiment, RunSpec, SearchSpec, TrainHyperparameters, normalize_id

__all__ = ["MAX_SEEDS", "ExperimentFileError", "describe_validation_error", "expand_grid", "expand_seeds", "load_experiment", "parse_experiment"]

# A configuration's replicates: enough for a tight interval, few enough that a typo is not 10,000 runs.
MAX_SEEDS = 100

_TOP_LEVEL_KEYS = {"experiment_id", "defaults", "runs", "grid", "search", "tracking", "register"}


class ExperimentFileError(ValueError):
    """The experiment file is invalid; the message names the file, the run and the field."""


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ExperimentFileError(f"cannot read experiment file {path}: {exc.strerror or exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExperimentFileError(f"{path}: not valid YAML: {exc}") from exc
    return parse_experiment(document, source=str(path))


def parse_experiment(document: Any, *, source: str = "experiment") -> Experiment:
    """Validate a parsed document into a canonical Experiment (ids assigned, unique)."""
    if not isinstance(document, dict):
        raise ExperimentFileError(f"{source}: expected a mapping with a 'runs:' list at the top level")
    unknown = set(document) - _TOP_LEVEL_KEYS
    if unknown:
        raise ExperimentFileError(
            f"{source}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TOP_LEVEL_KEYS)}"
        )
    defaults = document.get("defaults") or {}
    runs = document.get("runs")
    if runs is None:
        runs = [{}] if defaults else []
    if not isinstance(runs, list) or not runs:
        raise ExperimentFileError(f"{source}: 'runs:' must be a non-empty list of run configs")
    if not isinstance(defaults, dict):
        raise ExperimentFileError(f"{source}: 'defaults:' must be a mapping")

    merged = []
    for index, run in enumerate(runs):
        if not isinstance(run, dict):
            raise ExperimentFileError(f"{source}: runs[{index}] must be a mapping, got {type(run).__name__}")
        merged.append(_deep_merge(defaults, run))
    grid = document.get("grid")
    if grid is not None:
        merged = expand_grid(merged, grid, source=source)
    merged, replicates = expand_seeds(merged, source=source)

    specs = []
    for index, run in enumerate(merged):
        label = f"runs[{index}]" + (f" (run_id {run['run_id']!r})" if isinstance(run.get("run_id"), str) else "")
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
        return Experiment.model_validate({
            "experiment_id": experiment_id,
            "runs": tuple(specs),
            "search": search,
            "tracking": document.get("tracking"),
            "register": document.get("register"),
        }).canonical()
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
        raise ExperimentFileError(f"{source}: search: needs exactly one run, the trials' template (got {len(specs)}); drop grid: and seeds:")
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
            raise ExperimentFileError(f"{source}: grid.{key} must be a non-empty list, got {values!r}")
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
        where = f"{source}: runs[{index}]" + (f" (run_id {run['run_id']!r})" if isinstance(run.get("run_id"), str) else "")
        base = run.get("train", {}).get("seed", TrainHyperparameters.model_fields["seed"].default)
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
        raise ExperimentFileError(f"{where}: seeds must be a count from 1 to {MAX_SEEDS} or a list of seeds, got {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= MAX_SEEDS:
            raise ExperimentFileError(f"{where}: seeds must be from 1 to {MAX_SEEDS}, got {value}")
        if isinstance(base, bool) or not isinstance(base, int):
            raise ExperimentFileError(f"{where}: train.seed must be a whole number to count seeds from, got {base!r}")
        return [base + offset for offset in range(value)]
    if not 1 <= len(value) <= MAX_SEEDS or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in value):
        raise ExperimentFileError(f"{where}: seeds must list 1 to {MAX_SEEDS} whole numbers >= 0, got {value!r}")
    if len(set(value)) != len(value):
        raise ExperimentFileError(f"{where}: seeds lists a seed twice: {value!r}")
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
        raise ExperimentFileError(f"{source}: grid run id from {base!r}: {exc}") from None


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
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "value"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "; ".join(problems)
