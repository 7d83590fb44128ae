"""The fixed cost F of a search rung call (seconds = F + s * steps), measured part by part.

A search trains each trial rung by rung: every rung is one `fine_tune(..., stop_at_step=N)` call (load the
model, load the tokenized rows, build the Trainer, load the previous rung's checkpoint, train, write the rung's
checkpoint) and one `evaluate_rung` call. This script times, with MiniLM-L6 on an SST-2 slice, in one process:

  a. a first rung: from pretrained to step `--steps` (and to step 1, the low-step variant);
  b. a resume from that rung's checkpoint for `--steps` more steps (and for 1 more step);
  c. the rung evaluation on the search slice.

Each call is split into spans by wrapping core functions from the outside (no hook in the core): model and
tokenizer load, tokenized rows, Trainer construction, checkpoint load (weights, optimizer, scheduler, RNG),
the training steps, the checkpoint (host copy + write + fsync + publish), the evaluation's model load and
inference; "other" is the call's time not in any span. The per-step time s is the median of the measured
steps after a call's first; F = call - steps * s, per call, so F is measured, not fitted. Under load s
varies from step to step, so "outside steps" (the call less its measured step spans) is printed too: it
does not depend on s, but counts what a call's first step pays beyond s as steps.

`--against DIR` runs a second source tree (e.g. /work/main/services) as the baseline: the two run in
alternating child processes (A/B/A/B), each child doing one unmeasured warm-up repetition and then `--reps`
measured ones, so the ratios are taken under the same machine load.

    PYTHONPATH=services BERT_EVAL_DATA_DIR=/work/shared/data \\
        python benchmarks/fixed_cost.py --against /work/main/services --rounds 2 --reps 3 --json out.json
    python benchmarks/fixed_cost.py --summarize out.json   # the tables again, from the saved spans
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

MINILM = "sentence-transformers/all-MiniLM-L6-v2"

# The parts of a call, in the order they are printed.
PARTS = (
    "model_load",  # tokenizer + model (pretrained, or the skeleton a checkpoint is loaded into)
    "data_load",  # tokenized training rows (read, verify, tokenize or read the tokenization cache)
    "trainer_build",  # TrainingArguments, callbacks, the Trainer
    "ckpt_load",  # weights, optimizer + scheduler, RNG states from the previous rung's checkpoint
    "steps",  # the training steps, step begin to step end (the rung's checkpoint excluded)
    "ckpt_copy",  # the training state copied to host memory
    "ckpt_write",  # serialize, fsync, publish (the writer; the call waits for it at the rung)
    "eval_model_load",  # the rung evaluation's tokenizer + model
    "eval_data_load",  # the rung evaluation's tokenized search slice
    "eval_infer",  # the rest of the rung evaluation: inference, metrics, the rung record
    "other",  # the call's time in no span above (claim, resolve, Trainer.train set-up, summary)
)


class Spans:
    """perf_counter spans by part, for the call being measured."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.steps: list[float] = []
        self._step_started: float | None = None

    def reset(self) -> None:
        self.totals, self.steps, self._step_started = defaultdict(float), [], None

    @contextmanager
    def span(self, part: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.totals[part] += time.perf_counter() - started

    def wrap(self, owner: Any, name: str, part: str) -> None:
        """Time every call of `owner.name` as `part` (nothing if this source tree has no such attribute)."""
        original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if original is None:
            return
        function: Callable[..., Any] = original

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.span(part):
                return function(*args, **kwargs)

        setattr(owner, name, timed)

    def step_begin(self) -> None:
        self._step_started = time.perf_counter()

    def step_end(self) -> None:
        if self._step_started is not None:
            self.steps.append(time.perf_counter() - self._step_started)
            self._step_started = None


def instrument(spans: Spans) -> None:
    """Wrap the core's functions (module attributes, looked up at call time) with spans."""
    from transformers import Trainer

    from bert_eval.core.evaluation import batched
    from bert_eval.core.search import rungs
    from bert_eval.core.training import callbacks, checkpoint_writer, finetuning

    spans.wrap(finetuning, "load_for_classification", "model_load")
    spans.wrap(finetuning, "_load_model", "model_load")  # the cached loader, where the tree has one
    spans.wrap(finetuning, "tokenized_split", "data_load")
    spans.wrap(finetuning, "_trainer", "trainer_build")
    for name in ("_load_from_checkpoint", "_load_optimizer_and_scheduler", "_load_rng_state"):
        spans.wrap(Trainer, name, "ckpt_load")
    spans.wrap(callbacks, "capture_host_state", "ckpt_copy")
    spans.wrap(checkpoint_writer.BackgroundCheckpointWriter, "_write", "ckpt_write")
    spans.wrap(rungs, "_load_checkpoint", "eval_model_load")
    spans.wrap(rungs, "_rung_model", "eval_model_load")
    spans.wrap(batched, "tokenized_split", "eval_data_load")
    spans.wrap(rungs, "infer", "eval_total")

    # Step spans: ProgressEvents is the first callback, so its step end comes before the checkpoint policy's save.
    progress = callbacks.ProgressEvents
    original_end = progress.on_step_end

    def on_step_begin(self: Any, *args: Any, **kwargs: Any) -> None:
        spans.step_begin()

    def on_step_end(self: Any, *args: Any, **kwargs: Any) -> None:
        spans.step_end()
        original_end(self, *args, **kwargs)

    progress.on_step_begin = on_step_begin  # type: ignore[method-assign]
    progress.on_step_end = on_step_end  # type: ignore[method-assign]


def setup(work: Path, data_dir: Path, *, batch_size: int, seq: int, rows: int) -> tuple[Any, Any]:
    """One trial's spec (search holdout) and its snapshot."""
    from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot
    from bert_eval.experiment import parse_experiment
    from bert_eval.search import search_holdout, trial_spec

    document = {
        "experiment_id": "fixed-cost",
        "defaults": {
            "model": MINILM,
            "dataset": "glue/sst2",
            "train": {
                "epochs": 1,
                "batch_size": batch_size,
                "max_seq_length": seq,
                "max_train_samples": rows,
                "seed": 1,
            },
            "eval": {"split": "validation", "max_eval_samples": 64},
        },
        "search": {
            "space": {"train.learning_rate": {"loguniform": [1.0e-5, 3.0e-4]}},
            "trials": 1,
            "objective": {"metric": "accuracy", "mode": "max", "split": "search", "holdout": 0.1},
            "scheduler": {"type": "asha", "min_steps": 4, "reduction_factor": 3},
        },
    }
    experiment = parse_experiment(document)
    assert experiment.search is not None
    template = experiment.runs[0].model_copy(update={"holdout": search_holdout(experiment.search)})
    snapshot = create_snapshot(SnapshotInput.for_run(template), runs_dir=work, data_dir=data_dir)
    spec = trial_spec(template, {"train.learning_rate": 5e-5}, run_id="fixed-cost-t0", holdout=template.holdout)
    return spec, snapshot


def one_repetition(
    spec: Any, snapshot: Any, spans: Spans, work: Path, steps: int, *, evaluate: bool = False
) -> list[dict[str, Any]]:
    """The measured calls of one repetition: first rungs (to 1 and to `steps`), resumes (+1, +steps), the
    rung evaluation; each in a fresh run directory so every call does its full work."""
    from bert_eval.core.search.rungs import evaluate_rung

    records = []

    def call(label: str, kind: str, n_steps: int, function: Callable[[], Any]) -> Any:
        spans.reset()
        started = time.perf_counter()
        result = function()
        total = time.perf_counter() - started
        parts = dict(spans.totals)
        parts["steps"] = sum(spans.steps)
        if "eval_total" in parts:  # the evaluation's inference: its whole span less its loads
            parts["eval_infer"] = (
                parts.pop("eval_total") - parts.get("eval_model_load", 0.0) - parts.get("eval_data_load", 0.0)
            )
        parts["other"] = total - sum(parts.values())
        records.append({"call": label, "kind": kind, "steps": n_steps, "total": total, "parts": parts,
                        "step_times": list(spans.steps)})  # fmt: skip
        return result

    for first, more in ((1, 1),) if steps == 1 else ((1, 1), (steps, steps)):
        runs_dir = work / f"runs-{first}"
        shutil.rmtree(runs_dir, ignore_errors=True)
        runs_dir.mkdir()
        call(f"first rung to {first}", "train", first, partial(_train, spec, snapshot, runs_dir, first))
        summary = call(f"resume +{more}", "train", more, partial(_train, spec, snapshot, runs_dir, first + more))
        if first == steps or evaluate:
            rung = partial(
                evaluate_rung, spec, first + more, model_dir=summary.model_dir, snapshot=snapshot, runs_dir=runs_dir
            )
            call("rung evaluation", "eval", 0, rung)
    return records


def _train(spec: Any, snapshot: Any, runs_dir: Path, stop: int) -> Any:
    from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune

    return fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir, stop_at_step=stop))


def child(args: argparse.Namespace) -> None:
    """Measure in this process; print one JSON line per repetition (the first, the warm-up, marked)."""
    from bert_eval.telemetry import configure_logging

    configure_logging(level="WARNING")
    spans = Spans()
    instrument(spans)
    work = Path(tempfile.mkdtemp(prefix="fixed-cost-"))
    try:
        spec, snapshot = setup(work, Path(args.data_dir), batch_size=args.batch_size, seq=args.seq, rows=args.rows)
        # Warm-up: imports, lazy initialisation and the tokenization cache, paid once per worker process.
        records = one_repetition(spec, snapshot, spans, work, 1, evaluate=True)
        print(json.dumps({"warm_up": True, "records": records}), flush=True)
        for _ in range(args.reps):
            records = one_repetition(spec, snapshot, spans, work, args.steps)
            print(json.dumps({"warm_up": False, "records": records}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_child(source: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": source}
    command = [sys.executable, __file__, "--child", "--reps", str(args.reps), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--seq", str(args.seq), "--rows", str(args.rows),
               "--data-dir", args.data_dir]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"child for {source} failed:\n{done.stderr[-4000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def per_step_time(reps: list[dict[str, Any]]) -> float:
    """The median training step, over every call's steps after its first (the first step pays warm-up)."""
    times = [t for rep in reps for r in rep["records"] for t in r["step_times"][1:]]
    return statistics.median(times)


def summarize(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Per call: the median total, F and parts over the measured repetitions, with min and max."""
    measured = [rep for rep in reps if not rep["warm_up"]]
    s = per_step_time(measured)
    for rep in measured:  # each call's F takes its own repetition's step time (the load drifts)
        rep_s = per_step_time([rep])
        for record in rep["records"]:
            record["step_s"] = rep_s
    by_call: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rep in measured:
        for record in rep["records"]:
            by_call[record["call"]].append(record)
    calls = {}
    for name, records in by_call.items():
        fixed = [r["total"] - r["steps"] * r["step_s"] for r in records]
        # The steps part also counts as F what the first step pays beyond s (warm-up).
        parts = {p: [r["parts"].get(p, 0.0) for r in records] for p in PARTS}
        calls[name] = {
            "n": len(records),
            "steps": records[0]["steps"],
            "total": _stats([r["total"] for r in records]),
            "F": _stats(fixed),
            "outside steps": _stats([r["total"] - r["parts"].get("steps", 0.0) for r in records]),
            "parts": {p: _stats(v) for p, v in parts.items()},
        }
    return {"step_s": s, "calls": calls}


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def report(results: dict[str, dict[str, Any]], baseline: str | None) -> None:
    names = list(results)
    print("per-step time s: " + ", ".join(f"{n} {results[n]['step_s']:.3f} s" for n in names))
    for call in results[names[0]]["calls"]:
        print(f"\n{call} ({results[names[0]]['calls'][call]['steps']} steps)")
        header = f"  {'part':<16}" + "".join(f"{n:>28}" for n in names) + ("   ratio" if baseline else "")
        print(header)
        rows = [
            ("total", lambda c: c["total"]),
            ("F", lambda c: c["F"]),
            ("outside steps", lambda c: c["outside steps"]),
        ] + [
            (p, lambda c, p=p: c["parts"][p])
            for p in PARTS  # type: ignore[misc]
        ]
        for label, pick in rows:
            cells, medians = [], []
            for n in names:
                st = pick(results[n]["calls"][call])
                medians.append(st["median"])
                cells.append(f"{st['median']:8.3f} [{st['min']:.3f}-{st['max']:.3f}]")
            line = f"  {label:<16}" + "".join(f"{c:>28}" for c in cells)
            if baseline and len(medians) == 2:
                line += f"   {medians[0] / medians[1]:.2f}x" if medians[1] > 1e-4 else "      -"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--against", help="a baseline source tree (its PYTHONPATH), run alternately with this one")
    parser.add_argument("--rounds", type=int, default=2, help="child processes per tree, alternating")
    parser.add_argument("--reps", type=int, default=3, help="measured repetitions per child (after one warm-up)")
    parser.add_argument("--steps", type=int, default=4, help="the rung's steps (first rung and resume)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--rows", type=int, default=600, help="training rows before the search holdout")
    parser.add_argument("--data-dir", default=os.environ.get("BERT_EVAL_DATA_DIR", "/work/shared/data"))
    parser.add_argument("--json", help="write the raw repetitions and the summary here")
    parser.add_argument("--summarize", help="print the summary of a --json file written earlier, measuring nothing")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.summarize:
        raw = json.loads(Path(args.summarize).read_text())["raw"]
        report({name: summarize(reps) for name, reps in raw.items()}, baseline="baseline" if len(raw) == 2 else None)
        return
    here = os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[1] / "services")
    trees = {"this tree": here} if not args.against else {"baseline": args.against, "this tree": here}
    print(f"load before: {os.getloadavg()}; {os.cpu_count()} CPUs; trees {trees}", flush=True)
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        for name, source in trees.items():
            started = time.perf_counter()
            raw[name] += run_child(source, args)
            print(
                f"round {round_ + 1}, {name}: {time.perf_counter() - started:.0f} s, load {os.getloadavg()}", flush=True
            )
    results = {name: summarize(reps) for name, reps in raw.items()}
    # Ratios read baseline / this tree: above 1 is faster.
    report(results, baseline="baseline" if args.against else None)
    print(f"\nload after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "raw": raw, "summary": results}, indent=1))


if __name__ == "__main__":
    main()
