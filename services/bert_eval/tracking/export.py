"""A finished run as a Hugging Face model folder: weights, tokenizer, `config.json` with `id2label`, and a
model card (`README.md`) stating the base model, the dataset and rows, the hyperparameters, the metrics with
their intervals and the seed. `push_to_hub` uploads such a folder with `huggingface_hub`."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bert_eval.core.records import ExperimentSummary, RunInterval
from bert_eval.core.storage.fsutil import fsync_tree
from bert_eval.core.storage.layout import RunLayout

__all__ = ["ExportError", "export_run", "hub_token", "model_card", "push_to_hub"]


class ExportError(ValueError):
    """The run cannot be exported (or pushed); the message names the run or the field and what to do."""


def export_run(runs_dir: Path, run_id: str, out_dir: Path) -> Path:
    """Write run `run_id`'s final model and its model card to `out_dir` (which must not exist or be empty).

    Returns:
        `out_dir`.

    Raises:
        ExportError: the run has not finished (no final model, summary or evaluation), or `out_dir` holds files.
        Nothing is written then.
    """
    layout = RunLayout(Path(runs_dir), run_id)
    if not layout.root.is_dir():
        raise ExportError(f"run {run_id}: no such run under {runs_dir}; check the run id and BERT_EVAL_RUNS_DIR")
    training = _read_json(layout.summary_file)
    evaluations = [e for f in sorted(layout.root.glob("eval-*.json")) if (e := _read_json(f)) is not None]
    if training is None or not (layout.model_dir / "config.json").is_file() or not evaluations:
        raise ExportError(
            f"run {run_id}: has not finished (it needs its final model, training-summary.json and an evaluation); "
            f"wait for it (bert-eval wait {run_id}) and export again"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"export: {out_dir} exists and is not an empty directory; choose a new directory")
    spec = (_read_json(layout.spec_file) or {}).get("spec") or {}
    card = model_card(run_id, spec, training.get("summary", training), evaluations, _intervals(layout, run_id))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        for item in layout.model_dir.iterdir():
            if item.is_file() and not item.name.startswith("."):
                shutil.copy2(item, staging / item.name)
        (staging / "README.md").write_text(card)
        fsync_tree(staging)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def push_to_hub(folder: Path, repo_id: str, *, token: str | None = None) -> str:
    """Upload an exported folder to the Hugging Face Hub repository `repo_id` (created if missing); its URL.

    Raises:
        ExportError: no token is configured (`HF_TOKEN` or `huggingface-cli login`).
    """
    import huggingface_hub

    api = huggingface_hub.HfApi(token=token or hub_token(repo_id))
    api.create_repo(repo_id, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="bert-eval export")
    return str(commit.commit_url)


def hub_token(repo_id: str) -> str:
    """The Hugging Face token configured here (`HF_TOKEN`, or a saved login).

    Raises:
        ExportError: none is configured; the message names `--push-to-hub REPO`.
    """
    import huggingface_hub

    token = huggingface_hub.get_token()
    if not token:
        raise ExportError(
            f"--push-to-hub {repo_id}: no Hugging Face token configured; set HF_TOKEN or run `hf auth login`, "
            "then export again"
        )
    return str(token)


def model_card(
    run_id: str,
    spec: dict[str, Any],
    training: dict[str, Any],
    evaluations: list[dict[str, Any]],
    intervals: dict[str, RunInterval],
) -> str:
    """The model card (`README.md`) of an exported run: YAML metadata, then what it was trained on and how it scores."""
    dataset = spec.get("dataset") or {}
    dataset_name = dataset.get("name") or dataset.get("path") or "a local dataset"
    train = spec.get("train") or {}
    metrics_yaml = []
    rows = []
    for evaluation in evaluations:
        split = evaluation.get("split", "?")
        interval = intervals.get(split)
        for metric, value in (evaluation.get("metrics") or {}).items():
            metrics_yaml.append(f"      - type: {metric}\n        value: {value:.6g}\n        name: {metric} ({split})")
            bounds = ""
            if (
                interval is not None
                and interval.metric == metric
                and interval.low is not None
                and interval.high is not None
            ):
                bounds = f"[{interval.low:.4f}, {interval.high:.4f}]"
            rows.append(f"| {split} | {metric} | {value:.4f} | {bounds} | {evaluation.get('examples', '')} |")
    hyper = "\n".join(f"| {key} | {value} |" for key, value in sorted(train.items()) if key != "report_to")
    front = "\n".join(
        [
            "---",
            "library_name: transformers",
            "pipeline_tag: text-classification",
            f"base_model: {spec.get('model', '')}",
            f"datasets:\n  - {dataset_name}",
            "tags:\n  - bert-eval",
            "model-index:",
            f"  - name: {run_id}",
            "    results:",
            "      - task:\n          type: text-classification",
            f"        dataset:\n          name: {dataset_name}\n          type: {dataset_name}",
            "        metrics:",
            *["  " + line.replace("\n", "\n  ") for line in metrics_yaml],
            "---",
        ]
    )
    train_rows = training.get("train_samples")
    return f"""{front}

# {run_id}

Fine-tuned from `{spec.get("model", "")}` on `{dataset_name}` (split `{dataset.get("train_split", "train")}`, \
{train_rows if train_rows is not None else "all"} training rows, snapshot `{training.get("snapshot_id", "")}`), \
seed {train.get("seed", "")}, {training.get("steps", "")} steps ({training.get("epochs", "")} epochs), \
final training loss {training.get("final_loss")}.

## Evaluation

Interval: 95% percentile bootstrap over the evaluation examples.

| split | metric | value | 95% interval | examples |
|---|---|---|---|---|
{chr(10).join(rows)}

## Hyperparameters

| name | value |
|---|---|
{hyper}

Exported by bert-eval from run `{run_id}`.
"""


def _intervals(layout: RunLayout, run_id: str) -> dict[str, RunInterval]:
    """The run's headline interval per split, from the summary of any experiment that holds it."""
    found: dict[str, RunInterval] = {}
    for path in sorted((Path(layout.runs_dir) / "experiments").glob("*.summary.json")):
        try:
            summary = ExperimentSummary.model_validate_json(path.read_text())
        except (OSError, ValueError):
            continue
        for interval in summary.runs:
            if interval.run_id == run_id and interval.split is not None:
                found[interval.split] = interval
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
