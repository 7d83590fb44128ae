"""An experiment's winner as an MLflow model version, and its alias moved only for a significant improvement.

The winner is a search's best trial, or else the best configuration's best seed (the configuration marked
`best` by the experiment's statistics; within it, the seed with the best headline metric). Its final model
directory is logged as artifacts (`model/`) of its MLflow run and registered from there, tagged with its
metrics and intervals. The alias (e.g. `champion`) moves to the new version only when a paired comparison on
the same evaluation rows (`core.statistics.compare_runs`) finds it significantly better than the version the
alias names now; otherwise the alias stays and the result says why.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.evaluation.predictions import load_predictions
from bert_eval.core.records import ExperimentSummary
from bert_eval.core.search.outcome import SearchOutcome
from bert_eval.core.statistics.comparisons import compare_runs, higher_is_better
from bert_eval.core.storage.layout import RunLayout, experiment_file

__all__ = ["Registration", "choose_winner", "register_winner"]


@dataclass(frozen=True)
class Registration:
    """What registering did: the version made (or found), and whether the alias moved, with the reason."""

    name: str
    version: str
    run_id: str
    alias: str
    alias_moved: bool
    sentence: str

    def to_json(self) -> dict[str, Any]:
        """The registration as JSON-ready data."""
        return asdict(self)


def choose_winner(runs_dir: Path, experiment_id: str) -> tuple[str, str]:
    """The run an experiment ends with, and why: a search's best trial, else the best configuration's best seed.

    Raises:
        InvalidInputError: the experiment has no completed run to choose from.
    """
    base = experiment_file(runs_dir, experiment_id)
    search_file = base.with_name(f"{experiment_id}.search.json")
    if search_file.is_file():
        search = SearchOutcome.model_validate_json(search_file.read_text())
        if search.best is None:
            raise InvalidInputError(
                f"experiment {experiment_id}: register: the search has no completed trial to register"
            )
        return search.best, f"the search's best trial ({search.metric} on the search slice)"
    summary_file = base.with_name(f"{experiment_id}.summary.json")
    if not summary_file.is_file():
        raise InvalidInputError(
            f"experiment {experiment_id}: register: no completed configuration to choose a winner from"
        )
    summary = ExperimentSummary.model_validate_json(summary_file.read_text())
    best_configs = [c for c in summary.configs if c.mark in ("best", None)]
    if not best_configs:
        raise InvalidInputError(
            f"experiment {experiment_id}: register: no completed configuration to choose a winner from"
        )
    config = max(best_configs, key=lambda c: c.mean if higher_is_better(c.metric) else -c.mean)
    values = {r.run_id: r.value for r in summary.runs if r.config == config.config and r.metric == config.metric}
    sign = 1.0 if higher_is_better(config.metric) else -1.0
    run_id = max(values, key=lambda r: sign * values[r])
    return run_id, f"the best configuration {config.config}'s best seed ({config.metric} on {summary.split})"


def register_winner(
    runs_dir: Path,
    experiment_id: str,
    *,
    uri: str,
    mlflow_run_id: str,
    winner: str,
    reason: str,
    name: str,
    alias: str,
    split: str,
) -> Registration:
    """Register `winner`'s final model as a version of `name`; move `alias` to it if it is significantly better.

    Parameters:
        runs_dir, experiment_id: where the winner's model, evaluation and predictions are.
        uri: the tracking (and registry) URI; mlflow_run_id: the winner's MLflow run (from `log_experiment`).
        winner, reason: the bert-eval run to register and why it was chosen (`choose_winner`).
        name, alias: the registered model and the alias to move.
        split: the evaluation split the comparison with the alias's holder uses.

    Returns:
        the version (an existing one when this run was registered before) and what happened to the alias.

    Raises:
        InvalidInputError: the winner has no final model on the runs volume.
        mlflow.exceptions.MlflowException: the registry failed; registering again is harmless.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    layout = RunLayout(Path(runs_dir), winner)
    if not (layout.model_dir / "config.json").is_file():
        raise InvalidInputError(
            f"run {winner}: register: no final model under {layout.model_dir}; the run has not finished"
        )
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description=f"bert-eval winners; alias {alias!r} moves only on a significant gain"
            )
        except MlflowException:
            client.get_registered_model(name)  # created meanwhile
    version = _version_of(client, name, winner)
    if version is None:
        client.log_artifacts(mlflow_run_id, str(layout.model_dir), artifact_path="model")
        source = f"{client.get_run(mlflow_run_id).info.artifact_uri}/model"
        created = client.create_model_version(
            name,
            source,
            run_id=mlflow_run_id,
            tags=_version_tags(layout, experiment_id, winner, reason, split),
            description=f"{winner}: {reason}",
        )
        version = str(created.version)
    moved, sentence = _maybe_move_alias(client, Path(runs_dir), name, alias, version, winner, split)
    return Registration(name=name, version=version, run_id=winner, alias=alias, alias_moved=moved, sentence=sentence)


def _version_of(client: Any, name: str, run_id: str) -> str | None:
    """The version already registered for this bert-eval run (a retried registration), or None."""
    found = client.search_model_versions(f"name = '{name}' and tags.`bert_eval.run_id` = '{run_id}'")
    return str(found[0].version) if found else None


def _version_tags(layout: RunLayout, experiment_id: str, run_id: str, reason: str, split: str) -> dict[str, str]:
    tags = {"bert_eval.run_id": run_id, "bert_eval.experiment_id": experiment_id, "bert_eval.chosen_as": reason}
    evaluation = json.loads(layout.eval_file(split).read_text()) if layout.eval_file(split).is_file() else {}
    for metric, value in (evaluation.get("metrics") or {}).items():
        tags[f"{split}_{metric}"] = f"{value:.6g}"
    summary_file = experiment_file(layout.runs_dir, experiment_id).with_name(f"{experiment_id}.summary.json")
    if summary_file.is_file():
        summary = ExperimentSummary.model_validate_json(summary_file.read_text())
        for interval in summary.runs:
            if interval.run_id == run_id and interval.low is not None and interval.high is not None:
                tags[f"{split}_{interval.metric}_ci"] = f"[{interval.low:.6g}, {interval.high:.6g}]"
        for config in summary.configs:
            if run_id in config.runs:
                tags["bert_eval.config"] = config.config
                tags[f"config_{config.metric}_mean"] = f"{config.mean:.6g}"
                if config.low is not None and config.high is not None:
                    tags[f"config_{config.metric}_ci"] = f"[{config.low:.6g}, {config.high:.6g}]"
    return tags


def _maybe_move_alias(
    client: Any, runs_dir: Path, name: str, alias: str, version: str, run_id: str, split: str
) -> tuple[bool, str]:
    from mlflow.exceptions import MlflowException

    try:
        holder = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        holder = None
    if holder is None:
        client.set_registered_model_alias(name, alias, version)
        return True, f"{name} version {version} ({run_id}) is the first {alias!r}"
    if str(holder.version) == version:
        return False, f"{name} version {version} ({run_id}) already is {alias!r}"
    holder_run = (holder.tags or {}).get("bert_eval.run_id")
    if not holder_run:
        return (
            False,
            f"{alias!r} stays on version {holder.version}: it was not registered by bert-eval, "
            "so it cannot be compared",
        )
    try:
        new = load_predictions(RunLayout(runs_dir, run_id), split)
        old = load_predictions(RunLayout(runs_dir, holder_run), split)
        comparison = compare_runs(new, old, a_name=run_id, b_name=holder_run)
    except (InvalidInputError, ValueError) as exc:
        return False, f"{alias!r} stays on version {holder.version} ({holder_run}): the two cannot be compared ({exc})"
    better = comparison.difference.value > 0 if higher_is_better(comparison.metric) else comparison.difference.value < 0
    if comparison.significant and better:
        client.set_registered_model_alias(name, alias, version)
        return True, f"{alias!r} moves from version {holder.version} to {version}: {comparison.sentence}"
    return False, f"{alias!r} stays on version {holder.version} ({holder_run}): {comparison.sentence}"
