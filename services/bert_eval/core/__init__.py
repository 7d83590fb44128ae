"""Pure ML core: data, snapshots, checkpoints, training, evaluation. No Temporal imports here."""
