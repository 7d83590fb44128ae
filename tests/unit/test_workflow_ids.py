"""Workflow ids per release: two releases on one Temporal namespace never share a workflow."""

from __future__ import annotations

import pytest

from bert_eval.settings import Settings, task_queues
from bert_eval.temporal.names import coordinator_workflow_id, eval_workflow_id, release_prefix, training_workflow_id


def test_without_a_prefix_the_ids_are_the_ones_running_workflows_already_have() -> None:
    prefix = release_prefix(task_queues(Settings())[1])
    assert prefix == ""
    assert coordinator_workflow_id("exp", prefix=prefix) == "experiment-exp"
    assert training_workflow_id("r", prefix=prefix) == "train-r"
    assert eval_workflow_id("r", "validation", prefix=prefix) == "eval-r-validation"


@pytest.mark.parametrize("team", ["team-a", "team-b"])
def test_a_release_prefix_reaches_every_id_from_the_eval_queue_alone(team: str) -> None:
    # The coordinator knows only the queue it runs on; the submitter knows the setting: both give one prefix.
    eval_queue = task_queues(Settings(task_queue_prefix=team))[1]
    assert eval_queue == f"{team}-bert-eval-task-queue"
    prefix = release_prefix(eval_queue)
    assert coordinator_workflow_id("sst2-minilm", prefix=prefix) == f"{team}-experiment-sst2-minilm"
    assert training_workflow_id("r", prefix=prefix) == f"{team}-train-r"
    assert release_prefix("some-other-queue") == ""
