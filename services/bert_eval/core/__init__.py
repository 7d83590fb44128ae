"""The pure ML core: no Temporal, no metrics registry, callable from a test or a notebook with plain arguments.

Subpackages, lowest first (each may import only those listed before it, and the root modules):

- `storage`: where everything lives on the runs volume (`RunLayout`, `CellLayout`), atomic writes, the
  per-run journal, attempt fencing and the manifest-sealed checkpoint store.
- `data`: dataset loading and schema inference, content-addressed snapshots, tokenization, batching.
- `training`: `fine_tune` and its named steps (arguments, callbacks, checkpoint writer, progress observer).
- `evaluation`: batched evaluation, per-example predictions, shared evaluation cells, task metrics, inference.
- `search`: ASHA's ladder, rung evaluation on checkpoints, parameter sampling.
- `statistics`: intervals and comparisons of runs and configurations, and an experiment's summary.

At the root: `records` (the results that cross process boundaries), `errors` (what a bad input raises) and
`modeling` (resolving and loading the model a run starts from).
"""
