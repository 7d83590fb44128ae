"""What the sampling gate costs: a discrete-event simulation of a search's wall time, driving the real `Ladder`.

Each rung of a trial holds one of `max_concurrent` training slots for F + s * (its steps - the previous
rung's), then is measured on the search slice for E seconds off the slot (the eval pool), and a trial's last
rung is also evaluated on the eval split (another E); only then is its result recorded. Whenever a slot is
free the runner starts the ladder's next promotion, else samples a new trial if the ladder allows it, as
`temporal/search.py` does. Durations vary by +-25% (seeded), objectives are random curves.

Rows: the ladder with the original gate (trial i waits for trial i - c's evaluated rung-0 result), with the
fixed lag and random sampling (no wait), and with the lag and TPE (no wait for its random start-up trials,
then the lag), each as a ratio of the wall time of ASHA's Algorithm 2 (Li et al. 2020: results taken as
they arrive, a new trial whenever nothing can be promoted) on the same durations and objectives.

`python benchmarks/search_gate_sim.py [--trials 16 81] [--concurrent 1 2 4 8] [--repeats 30]`
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from bert_eval.core.search.asha import Job, Ladder
from bert_eval.core.search.sampling import TPE_STARTUP_TRIALS

__all__ = ["Durations", "algorithm2_wall", "ladder_wall"]


@dataclass(frozen=True)
class Durations:
    """Seconds: F per training call, s per step, E per evaluation; rung steps; η."""

    rungs: tuple[int, ...] = (18, 54, 162)
    eta: int = 3
    fixed: float = 1.76
    per_step: float = 0.25
    evaluation: float = 3.0
    jitter: float = 0.25
    seed: int = 0
    _rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def table(
        self, trials: int
    ) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float], dict[tuple[int, int], float]]:
        """Per (trial, rung): training seconds, evaluation seconds, objective."""
        rng = random.Random(self.seed)
        train, measure, value = {}, {}, {}
        for t in range(trials):
            quality = rng.random()
            for r, steps in enumerate(self.rungs):
                before = self.rungs[r - 1] if r else 0
                train[(t, r)] = (self.fixed + self.per_step * (steps - before)) * rng.uniform(
                    1 - self.jitter, 1 + self.jitter
                )
                last = r == len(self.rungs) - 1
                measure[(t, r)] = self.evaluation * (2 if last else 1) * rng.uniform(1 - self.jitter, 1 + self.jitter)
                value[(t, r)] = quality + 0.3 * rng.random() * (r + 1) / len(self.rungs)
        return train, measure, value


def ladder_wall(
    durations: Durations, trials: int, concurrent: int, *, lag: int | None, free: int
) -> tuple[float, float]:
    """The wall time of a search driven by `Ladder` (`lag` None: the original gate), and the slot-seconds
    spent idle while work remained."""
    train, measure, value = durations.table(trials)
    ladder = Ladder(trials_wanted=trials, max_concurrent=concurrent, reduction_factor=durations.eta, maximize=True)
    ladder.sampling_lag, ladder.free_samples = lag, free
    now, training, idle = 0.0, 0, 0.0
    events: list[tuple[float, int, str, Job]] = []
    counter = 0
    while not ladder.finished():
        while training < concurrent:
            job = ladder.next_promotion()
            if job is None and ladder.can_sample():
                job = ladder.add_trial(f"t{len(ladder.trials)}", {"x": len(ladder.trials)}, durations.rungs)
            if job is None:
                break
            training += 1
            counter += 1
            heapq.heappush(events, (now + train[(job.trial, job.rung)], counter, "trained", job))
        assert events, "the ladder stalled"
        at, _, kind, job = heapq.heappop(events)
        if ladder.unstarted:
            idle += (concurrent - training) * (at - now)
        now = at
        if kind == "trained":
            training -= 1
            counter += 1
            heapq.heappush(events, (now + measure[(job.trial, job.rung)], counter, "measured", job))
        else:
            ladder.record(job, value[(job.trial, job.rung)])
    return now, idle


def algorithm2_wall(durations: Durations, trials: int, concurrent: int) -> float:
    """ASHA's Algorithm 2 on the same durations: a free slot promotes the first paused trial in its rung's
    top 1/η (highest rung first) among the results that have arrived, else starts a new trial; when nothing
    is left and no trial completed, the highest rung's leader trains on (as the ladder does)."""
    train, measure, value = durations.table(trials)
    top = len(durations.rungs) - 1
    results: list[dict[int, float]] = [{} for _ in durations.rungs]
    promoted: list[set[int]] = [set() for _ in durations.rungs]
    sampled, training, running, completed = 0, 0, 0, False
    now, counter = 0.0, 0
    events: list[tuple[float, int, str, int, int]] = []

    def next_job() -> tuple[int, int] | None:
        nonlocal sampled
        for k in range(top - 1, -1, -1):
            ranked = sorted(results[k], key=lambda t: (-results[k][t], t))[: len(results[k]) // durations.eta]
            for t in ranked:
                if t not in promoted[k]:
                    promoted[k].add(t)
                    return t, k + 1
        if sampled < trials:
            sampled += 1
            return sampled - 1, 0
        if running == 0 and not completed:
            for k in range(top - 1, -1, -1):
                waiting = [t for t in results[k] if t not in promoted[k]]
                if waiting:
                    t = max(waiting, key=lambda t: (results[k][t], -t))
                    promoted[k].add(t)
                    return t, k + 1
        return None

    while True:
        while training < concurrent and (job := next_job()) is not None:
            training += 1
            running += 1
            counter += 1
            heapq.heappush(events, (now + train[job], counter, "trained", *job))
        if not events:
            return now
        now, _, kind, t, r = heapq.heappop(events)
        if kind == "trained":
            training -= 1
            counter += 1
            heapq.heappush(events, (now + measure[(t, r)], counter, "measured", t, r))
        else:
            running -= 1
            results[r][t] = value[(t, r)]
            completed = completed or r == top


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[16, 81])
    parser.add_argument("--concurrent", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    print(
        f"{'trials':>6} {'c':>3} {'original gate':>14} {'lag, random':>12} {'lag, TPE':>9}   "
        f"(wall time / Algorithm 2's, "
        f"mean over {args.repeats} seeds; idle slot-share in brackets)"
    )
    for trials in args.trials:
        for c in args.concurrent:
            ratios: dict[str, list[float]] = {"gate": [], "random": [], "tpe": []}
            idles: dict[str, list[float]] = {"gate": [], "random": [], "tpe": []}
            for seed in range(args.repeats):
                durations = Durations(seed=seed)
                reference = algorithm2_wall(durations, trials, c)
                variants = {
                    "gate": (None, 0),
                    "random": (c + 1, trials),
                    "tpe": (c + 1, min(TPE_STARTUP_TRIALS + c, trials)),
                }
                for name, (lag, free) in variants.items():
                    wall, idle = ladder_wall(durations, trials, c, lag=lag, free=free)
                    ratios[name].append(wall / reference)
                    idles[name].append(idle / (wall * c))
            cells = [
                f"{statistics.mean(ratios[n]):.3f} ({statistics.mean(idles[n]):.0%})" for n in ("gate", "random", "tpe")
            ]
            print(f"{trials:>6} {c:>3} {cells[0]:>14} {cells[1]:>12} {cells[2]:>9}")


if __name__ == "__main__":
    main()
