"""The search rows that can see ASHA's quality: one full search recorded, ASHA replayed offline on it.

A trial trained rung by rung (paused at each rung's step and resumed from its checkpoint) has, at every rung,
the weights a straight-through trial has there, so one full search holds every number ASHA needs:

1. `record_curves` trains every trial of a random search to its full budget, rung by rung through the same
   `fine_tune(stop_at_step=...)` and `evaluate_rung` calls the search workflow makes, keeping each rung's
   per-row predictions on the search slice, each training call's seconds, and each final model's validation
   accuracy.
2. `replay` runs the real `Ladder` (the search's own promotion logic) over many random subsets of the
   trials in random arrival orders, each with the slice's rows resampled (bootstrap): the regret is the full
   search's winner's validation accuracy (same subset, same resample) minus ASHA's winner's, with the
   training steps and seconds each spent. Optuna's `SuccessiveHalvingPruner` runs on the same curves, side by
   side, and so does a variant of the ladder that also promotes a trial whose slice accuracy is not
   significantly below the rung's cut-off (McNemar, α = 0.05): whether keeping trials within noise pays.
3. `fixed_cost` fits seconds = F + s * steps over the recorded training calls: F, the fixed cost of a call.
4. `live_matches` compares a live bert-eval ASHA search of the same trials (same sampler, seed and rows)
   with the offline replay of all trials: the same promotions and winner, or the replay is not what runs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState as OptunaState
from pydantic import PrivateAttr
from scipy import stats
from scipy.special import log_softmax

from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot
from bert_eval.core.evaluation.batched import evaluate
from bert_eval.core.search.asha import Ladder, TrialState
from bert_eval.core.search.rungs import evaluate_rung, rung_file
from bert_eval.core.search.sampling import suggest
from bert_eval.core.statistics.mcnemar import paired_accuracy
from bert_eval.core.storage.layout import RunLayout
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
from bert_eval.experiment import parse_experiment
from bert_eval.search import max_steps, rung_steps, search_holdout, trial_id, trial_spec

__all__ = [
    "REPLAY_CPU",
    "REPLAY_MINI",
    "REPLAY_SMALL",
    "Curves",
    "curves_from_record",
    "ReplaySizes",
    "fixed_cost",
    "live_matches",
    "record_curves",
    "replay",
    "replay_document",
]


@dataclass(frozen=True)
class ReplaySizes:
    trials: int  # recorded (the full search)
    subset: int  # trials per replayed search
    replicates: int  # subsets x arrival orders x slice resamples
    train_rows: int  # trained on
    slice_rows: int  # the search slice, held out of the selected rows
    batch_size: int
    min_steps: int
    reduction_factor: int
    epochs: float
    max_seq_length: int = 32
    warmup_high: float = 0.1
    eval_rows: int | None = None  # validation rows each final model is scored on (None: all 872)


# 16 trials of 162 steps (2,592 training rows at batch 16), rungs 18/54/162, a 500-row slice.
REPLAY_CPU = ReplaySizes(
    trials=16,
    subset=12,
    replicates=1000,
    train_rows=2592,
    slice_rows=500,
    batch_size=16,
    min_steps=18,
    reduction_factor=3,
    epochs=1,
)
# A third of the steps: 54-step trials (864 rows), rungs 6/18/54, a 300-row slice.
REPLAY_SMALL = ReplaySizes(
    trials=16,
    subset=12,
    replicates=1000,
    train_rows=864,
    slice_rows=300,
    batch_size=16,
    min_steps=6,
    reduction_factor=3,
    epochs=1,
)
# For a loaded machine: 8 trials of 27 steps (432 rows), rungs 3/9/27, a 200-row slice, 400 validation rows.
REPLAY_MINI = ReplaySizes(
    trials=8,
    subset=6,
    replicates=500,
    train_rows=432,
    slice_rows=200,
    batch_size=16,
    min_steps=3,
    reduction_factor=3,
    epochs=1,
    eval_rows=400,
)


def replay_document(sizes: ReplaySizes, model: str, experiment_id: str, *, concurrent: int = 1) -> dict[str, Any]:
    """The recorded search as an experiment file: random sampling (trial i's params depend on the seed and
    i alone, so the live search samples the recorded trials), ASHA at the sizes' rungs."""
    selected = sizes.train_rows + sizes.slice_rows
    space = {
        "train.learning_rate": {"loguniform": [1.0e-5, 3.0e-4]},
        "train.warmup_ratio": {"uniform": [0.0, sizes.warmup_high]},
    }
    return {
        "experiment_id": experiment_id,
        "defaults": {
            "model": model,
            "dataset": "glue/sst2",
            "train": {
                "epochs": sizes.epochs,
                "batch_size": sizes.batch_size,
                "max_seq_length": sizes.max_seq_length,
                "max_train_samples": selected,
                "seed": 1,
                "checkpoint_every_steps": None,
                "checkpoint_every_seconds": None,
            },
            "eval": {"split": "validation", "max_eval_samples": sizes.eval_rows},
        },
        "search": {
            "space": space,
            "sampler": "random",
            "trials": sizes.trials,
            "max_concurrent": concurrent,
            "seed": 0,
            "objective": {
                "metric": "accuracy",
                "mode": "max",
                "split": "search",
                "holdout": sizes.slice_rows / selected,
            },
            "scheduler": {"type": "asha", "min_steps": sizes.min_steps, "reduction_factor": sizes.reduction_factor},
        },
    }


@dataclass
class TrialCurve:
    params: dict[str, float | int]
    steps: list[int]  # per rung
    seconds: list[float]  # per rung: the training call's seconds
    correct: list[np.ndarray]  # per rung: per slice row, whether the prediction was right
    row_loss: list[np.ndarray]  # per rung: per slice row, the log-loss
    validation: float  # the final model's validation accuracy

    def add_rung_rows(self, layout: RunLayout, step: int) -> None:
        """Append the rung's per-row results on the slice, read from the outputs the rung evaluation kept."""
        rows = np.load(rung_file(layout, step).with_suffix(".npz"))
        logits, labels = rows["logits"], rows["labels"].astype(int)
        self.correct.append(np.argmax(logits, axis=-1) == labels)
        self.row_loss.append(-log_softmax(logits, axis=-1)[np.arange(len(labels)), labels])


@dataclass
class Curves:
    trials: list[TrialCurve] = field(default_factory=list)
    eval_seconds: float = 0.0

    @property
    def calls(self) -> list[tuple[int, float]]:
        """(steps trained, seconds) of every recorded training call."""
        out = []
        for trial in self.trials:
            before = 0
            for steps, seconds in zip(trial.steps, trial.seconds, strict=True):
                out.append((steps - before, seconds))
                before = steps
        return out


def record_curves(document: dict[str, Any], runs_dir: Path, data_dir: Path) -> Curves:
    """Train every trial of the document's search to its budget, rung by rung, and record its curve."""
    experiment = parse_experiment(document)
    search = experiment.search
    assert search is not None
    template = experiment.runs[0].model_copy(update={"holdout": search_holdout(search)})
    snapshot = create_snapshot(SnapshotInput.for_run(template), runs_dir=runs_dir, data_dir=data_dir)
    curves = Curves()
    for index in range(search.trials):
        params = suggest(search, index, [], [])
        spec = trial_spec(template, params, run_id=trial_id(experiment.id, index), holdout=template.holdout)
        rungs = rung_steps(search.scheduler, max_steps(spec.train, snapshot.splits["train"]))
        curve = TrialCurve(params=params, steps=list(rungs), seconds=[], correct=[], row_loss=[], validation=math.nan)
        for step in rungs:
            final = step == rungs[-1]
            summary = fine_tune(
                FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir, stop_at_step=None if final else step)
            )
            rung = evaluate_rung(spec, step, model_dir=summary.model_dir, snapshot=snapshot, runs_dir=runs_dir)
            curve.seconds.append(summary.call_seconds or 0.0)
            curve.add_rung_rows(RunLayout(runs_dir, spec.id), step)
            curves.eval_seconds += rung.seconds
        result = evaluate(
            run_id=spec.id, model_dir=summary.model_dir, snapshot=snapshot, request=spec.primary_eval, runs_dir=runs_dir
        )
        curve.validation = result.metrics["accuracy"]
        curves.eval_seconds += result.duration_s
        curves.trials.append(curve)
        print(f"  recorded trial {index}: slice {[round(float(c.mean()), 3) for c in curve.correct]}, "
              f"validation {curve.validation:.4f}, {sum(curve.seconds):.1f} s", flush=True)  # fmt: skip
    return curves


def curves_from_record(runs_dir: Path, record: dict[str, Any], experiment_id: str = "search-replay") -> Curves:
    """The curves of an earlier recording, without training again: each rung's per-row slice outputs from the
    runs directory `record_curves` wrote, the calls' seconds and the validation accuracies from its raw record
    (`search.replay` in the benchmark's raw figures). Parameters are not kept (the replay does not use them)."""
    curves, calls = Curves(), iter(record["calls"])
    for index, validation in enumerate(record["validation"]):
        layout = RunLayout(runs_dir, trial_id(experiment_id, index))
        steps = sorted(int(path.stem.removeprefix("step-")) for path in rung_file(layout, 0).parent.glob("*.npz"))
        curve = TrialCurve(params={}, steps=steps, seconds=[], correct=[], row_loss=[], validation=validation)
        for step in steps:
            curve.seconds.append(float(next(calls)[1]))
            curve.add_rung_rows(layout, step)
        curves.trials.append(curve)
    return curves


def fixed_cost(calls: list[tuple[int, float]]) -> tuple[float, float]:
    """(F, s): least-squares fit of seconds = F + s * steps over training calls."""
    steps = np.array([c[0] for c in calls], dtype=float)
    seconds = np.array([c[1] for c in calls], dtype=float)
    fit = stats.linregress(steps, seconds)
    return float(fit.intercept), float(fit.slope)


@dataclass
class Replayed:
    winner: int  # index into the recorded trials
    steps: int
    seconds: float
    promotions: list[str]


class WithinNoiseLadder(Ladder):
    """The search's ladder, plus: a trial paused at a rung below the cut-off (the last of the rung's top 1/η so
    far) is promoted too when its slice accuracy is not significantly below the cut-off's (McNemar's test on
    the slice rows, α = 0.05; too few differing rows to test counts as not significant). Replayed only, to
    measure whether keeping trials within noise pays; the product's ladder does not do it."""

    _correct: Callable[[int, int], np.ndarray] = PrivateAttr()

    def _promote(self, rung: int) -> None:
        super()._promote(rung)
        ranked, keep = self._ranked(rung)
        if not keep:
            return
        cutoff = self._correct(ranked[keep - 1].index, rung)
        for trial in ranked[keep:]:
            if trial.state is TrialState.paused and trial.rung == rung:
                p_value = paired_accuracy(self._correct(trial.index, rung), cutoff).p_value
                if p_value is None or p_value >= 0.05:
                    self._promote_to_next(trial, rung)


def asha_on(curves: Curves, order: list[int], rows: np.ndarray, eta: int, *, within_noise: bool = False) -> Replayed:
    """The search's ladder over the recorded trials `order` (arrival order), on the slice rows `rows`;
    `within_noise`: the `WithinNoiseLadder` variant."""
    kind = WithinNoiseLadder if within_noise else Ladder
    ladder = kind(trials_wanted=len(order), max_concurrent=1, reduction_factor=eta, maximize=True, loss_ties=True)
    if isinstance(ladder, WithinNoiseLadder):
        ladder._correct = lambda trial, rung: curves.trials[order[trial]].correct[rung][rows]
    ladder.sampling_lag, ladder.free_samples = 2, len(order)
    while not ladder.finished():
        job = ladder.next_promotion()
        if job is None and ladder.can_sample():
            job = ladder.add_trial(
                str(order[len(ladder.trials)]), {}, tuple(curves.trials[order[len(ladder.trials)]].steps)
            )
        assert job is not None, "the ladder stalled"
        curve = curves.trials[order[job.trial]]
        ladder.record(
            job, float(curve.correct[job.rung][rows].mean()), loss=float(curve.row_loss[job.rung][rows].mean())
        )
    ladder.stop_paused()
    best = ladder.best()
    assert best is not None
    reached = [(order[t.index], t.rung) for t in ladder.trials]
    return Replayed(
        winner=order[best.index],
        steps=sum(curves.trials[i].steps[r] for i, r in reached),
        seconds=sum(sum(curves.trials[i].seconds[: r + 1]) for i, r in reached),
        promotions=list(ladder.promotions),
    )


def optuna_on(curves: Curves, order: list[int], rows: np.ndarray, eta: int) -> Replayed:
    """Optuna's `SuccessiveHalvingPruner` over the same curves, trials reporting at the same rungs in `order`."""
    first = curves.trials[order[0]].steps[0]
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first, reduction_factor=eta, min_early_stopping_rate=0
        ),
    )
    steps = seconds = 0.0
    for index in order:
        curve, trial = curves.trials[index], study.ask()
        for rung, step in enumerate(curve.steps):
            value = float(curve.correct[rung][rows].mean())
            trial.report(value, step)
            steps, seconds = steps + step - (curve.steps[rung - 1] if rung else 0), seconds + curve.seconds[rung]
            if rung < len(curve.steps) - 1 and trial.should_prune():
                study.tell(trial, state=OptunaState.PRUNED)
                break
        else:
            study.tell(trial, value)
    complete = [t for t in study.trials if t.state is OptunaState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number))
    return Replayed(winner=order[best.number], steps=int(steps), seconds=seconds, promotions=[])


def full_on(curves: Curves, order: list[int], rows: np.ndarray) -> int:
    """The full search's winner: the best slice objective at the full budget (ties: the lower loss, then the
    earlier trial), as the ladder ranks them."""
    return min(
        order,
        key=lambda i: (
            -curves.trials[i].correct[-1][rows].mean(),
            curves.trials[i].row_loss[-1][rows].mean(),
            order.index(i),
        ),
    )


def replay(curves: Curves, sizes: ReplaySizes, *, seed: int = 0) -> dict[str, Any]:
    """ASHA and Optuna's pruner against the full search over `sizes.replicates` random subsets, arrival orders
    and slice resamples: regret in validation points (mean, its 95% interval, and the share above 0), and
    steps and seconds as ratios to the full search's. The full search's seconds are its recorded calls less
    the extra fixed costs of training in rungs (one call per trial)."""
    rng = random.Random(seed)
    rows_rng = np.random.default_rng(seed)
    fixed, _ = fixed_cost(curves.calls)
    n_rows = len(curves.trials[0].correct[0])
    sides = ("asha", "optuna", "noise")
    keys = [f"{side}_{figure}" for side in sides for figure in ("regret", "steps", "s")]
    out: dict[str, list[float]] = {k: [] for k in (*keys, "full_s", "full_steps", "oracle_gap")}
    for _ in range(sizes.replicates):
        order = rng.sample(range(len(curves.trials)), sizes.subset)
        rows = rows_rng.integers(0, n_rows, size=n_rows)
        full = full_on(curves, order, rows)
        replayed = {
            "asha": asha_on(curves, order, rows, sizes.reduction_factor),
            "optuna": optuna_on(curves, order, rows, sizes.reduction_factor),
            "noise": asha_on(curves, order, rows, sizes.reduction_factor, within_noise=True),
        }
        validation = {i: curves.trials[i].validation for i in order}
        for side, found in replayed.items():
            out[f"{side}_regret"].append(100 * (validation[full] - validation[found.winner]))
            out[f"{side}_steps"].append(found.steps)
            out[f"{side}_s"].append(found.seconds)
        out["oracle_gap"].append(100 * (max(validation.values()) - validation[full]))
        out["full_steps"].append(sum(curves.trials[i].steps[-1] for i in order))
        out["full_s"].append(
            sum(sum(curves.trials[i].seconds) - fixed * (len(curves.trials[i].steps) - 1) for i in order)
        )
    summary: dict[str, Any] = {"replicates": sizes.replicates, "subset": sizes.subset, "fixed_cost_s": fixed}
    for side in sides:
        regret = np.array(out[f"{side}_regret"])
        if np.ptp(regret) == 0:  # every replay the same: the bootstrap has nothing to resample
            low = high = float(regret[0])
        else:
            interval = stats.bootstrap((regret,), np.mean, confidence_level=0.95, random_state=seed).confidence_interval
            low, high = float(interval.low), float(interval.high)
        summary[side] = {
            "regret_mean_pt": float(regret.mean()),
            "regret_ci_pt": (low, high),
            "regret_above_0": float((regret > 0).mean()),
            "steps_ratio": float(np.sum(out[f"{side}_steps"]) / np.sum(out["full_steps"])),
            "seconds_ratio": float(np.sum(out[f"{side}_s"]) / np.sum(out["full_s"])),
        }
    summary["full_oracle_gap_pt"] = float(np.mean(out["oracle_gap"]))
    return summary


def live_matches(curves: Curves, outcome: Any, eta: int) -> dict[str, Any]:
    """Whether a live search of the recorded trials made the offline replay's decisions (all trials, in
    order, every slice row)."""
    rows = np.arange(len(curves.trials[0].correct[0]))
    offline = asha_on(curves, list(range(len(curves.trials))), rows, eta)
    live_best = next(t.trial for t in outcome.trials if t.run_id == outcome.best)
    same_params = all(
        all(math.isclose(float(t.params[k]), float(curves.trials[t.trial].params[k])) for k in t.params)
        for t in outcome.trials
    )
    return {
        "same_params": same_params,
        "same_promotions": list(outcome.promotions) == offline.promotions,
        "same_winner": live_best == offline.winner,
        "live_promotions": list(outcome.promotions),
        "replay_promotions": offline.promotions,
    }
