"""Model sources for evaluation: digests, `run:` references, and the reference design's model_path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from support.evaluation import saved_head_model
from support.models import finished_run, with_label_names

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.modeling import (
    describe_model,
    load_trained,
    model_digest,
    resolve_reference_model_path,
    run_model_source,
)
from bert_eval.core.records import DatasetSchema
from bert_eval.spec import TaskType


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, data_dir: Path) -> Path:
    return saved_head_model(tiny_model_dir, tmp_path_factory.mktemp("models") / "classifier", data_dir, seed=1)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    path = tmp_path / "mirror"
    path.mkdir()
    return path


def test_the_digest_follows_the_files_not_the_directory(tmp_path: Path, classifier: Path) -> None:
    copy = shutil.copytree(classifier, tmp_path / "elsewhere" / "copy")
    assert model_digest(classifier) == model_digest(copy) == model_digest(classifier)
    assert len(model_digest(copy)) == 16 and int(model_digest(copy), 16) >= 0

    (copy / ".gitattributes").write_text("*.safetensors filter=lfs")  # repository metadata, not the model
    assert model_digest(copy) == model_digest(classifier)

    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert model_digest(copy) != model_digest(classifier)

    renamed = shutil.copytree(classifier, tmp_path / "renamed")
    (renamed / "tokenizer.json").rename(renamed / "tokenizer-copy.json")
    assert model_digest(renamed) != model_digest(classifier)


def test_a_local_classifier_is_described_from_its_config(tmp_path: Path, runs_dir: Path, classifier: Path) -> None:
    info = describe_model(str(classifier), runs_dir=runs_dir, models_dir=None)
    assert info.path == str(classifier.resolve()) and info.digest == model_digest(classifier) and info.run_id is None
    # A hub-style model without class names keeps the generic ones, in class-id order.
    assert info.task is TaskType.classification and info.label_names == ("LABEL_0", "LABEL_1") and info.num_labels == 2
    assert info.max_position_embeddings == 128

    named = with_label_names(shutil.copytree(classifier, tmp_path / "named"), ("negative", "positive"))
    assert describe_model(str(named), runs_dir=runs_dir, models_dir=None).label_names == ("negative", "positive")


def test_a_regressor_is_described_as_regression(
    tmp_path: Path, runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    regressor = saved_head_model(tiny_model_dir, tmp_path / "regressor", data_dir, seed=1, num_labels=1)
    info = describe_model(str(regressor), runs_dir=runs_dir, models_dir=None)
    assert info.task is TaskType.regression and info.label_names == () and info.num_labels == 1


def test_models_without_a_classification_head_or_files_are_refused(
    runs_dir: Path, tiny_model_dir: Path, models_dir: Path
) -> None:
    # A bare encoder (and the bundled sentence-embedding model) would get a random head on every load.
    with pytest.raises(
        InvalidInputError, match=r"has no trained sequence-classification head \(architectures \['BertModel'\]\)"
    ):
        describe_model(str(tiny_model_dir), runs_dir=runs_dir, models_dir=None)
    with pytest.raises(InvalidInputError, match="no trained sequence-classification head"):
        describe_model("sentence-transformers/all-MiniLM-L6-v2", runs_dir=runs_dir, models_dir=None)
    with pytest.raises(
        InvalidInputError, match=rf"model 'org/absent' is not a run .* in the models mirror {models_dir}"
    ):
        describe_model("org/absent", runs_dir=runs_dir, models_dir=models_dir)
    with pytest.raises(InvalidInputError, match="none is configured: BERT_EVAL_MODELS_DIR"):
        describe_model("org/absent", runs_dir=runs_dir, models_dir=None)


def test_a_mirrored_model_is_found_by_its_hub_name(runs_dir: Path, classifier: Path, models_dir: Path) -> None:
    shutil.copytree(classifier, models_dir / "org" / "classifier")
    info = describe_model("org/classifier", runs_dir=runs_dir, models_dir=models_dir)
    assert info.path == str((models_dir / "org" / "classifier").resolve()) and info.digest == model_digest(classifier)


def test_a_run_reference_is_its_finished_model(runs_dir: Path, classifier: Path) -> None:
    layout = finished_run(runs_dir, "trained", classifier)
    info = describe_model(run_model_source("trained"), runs_dir=runs_dir, models_dir=None)
    assert run_model_source("trained") == "run:trained"
    assert (
        info.run_id == "trained"
        and info.path == str(layout.model_dir.resolve())
        and info.digest == model_digest(classifier)
    )
    # The run's model directory given as a path is the same run's model.
    assert describe_model(str(layout.model_dir), runs_dir=runs_dir, models_dir=None) == info


def test_run_references_that_cannot_be_evaluated_say_why(runs_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"run ghost: no such run under .* check the id"):
        describe_model("run:ghost", runs_dir=runs_dir, models_dir=None)
    (runs_dir / "runs" / "training").mkdir(parents=True)  # no attempt recorded, no final model
    with pytest.raises(InvalidInputError, match=r"run training: training has not finished .*: it has not started"):
        describe_model("run:training", runs_dir=runs_dir, models_dir=None)
    with pytest.raises(InvalidInputError, match=r"model 'run:\.\./etc': invalid run_id"):
        describe_model("run:../etc", runs_dir=runs_dir, models_dir=None)


def test_loading_a_model_for_other_labels_names_the_run_and_the_model(runs_dir: Path, classifier: Path) -> None:
    three = DatasetSchema(
        text_columns=("text",), label_column="label", task=TaskType.classification, label_names=("a", "b", "c")
    )
    with pytest.raises(
        InvalidInputError,
        match=rf"run r1: the model at {classifier} has 2 outputs but the data has 3 \(classes \['a', 'b', 'c'\]\)",
    ):
        load_trained(classifier, three, run_id="r1")
    with pytest.raises(InvalidInputError, match=r"run r1: no trained model at"):
        load_trained(runs_dir / "nothing", three, run_id="r1")


@pytest.mark.parametrize(
    "shape",
    [
        "{id}",
        "./bert_runs/{id}",
        "bert_runs/{id}",
        "bert_runs/{id}/",
        "/anywhere/bert_runs/{id}",
        "{runs}/{id}",
        "{runs}/runs/{id}",
        "{runs}/runs/{id}/model",
    ],
)
def test_reference_model_paths_that_name_a_run(runs_dir: Path, classifier: Path, models_dir: Path, shape: str) -> None:
    layout = finished_run(runs_dir, "ref-run", classifier)
    model_path = shape.format(id="ref-run", runs=runs_dir)
    assert resolve_reference_model_path(model_path, runs_dir=runs_dir, models_dir=models_dir) == str(
        layout.model_dir.resolve()
    )


def test_reference_model_paths_use_the_runs_directory_name_too(tmp_path: Path, classifier: Path) -> None:
    volume = tmp_path / "volume"
    layout = finished_run(volume, "ref-run", classifier)
    assert resolve_reference_model_path("volume/ref-run", runs_dir=volume, models_dir=None) == str(
        layout.model_dir.resolve()
    )


def test_reference_model_paths_inside_the_roots_are_accepted(
    runs_dir: Path, classifier: Path, models_dir: Path
) -> None:
    mirrored = shutil.copytree(classifier, models_dir / "org" / "classifier")
    assert resolve_reference_model_path(str(mirrored), runs_dir=runs_dir, models_dir=models_dir) == str(
        mirrored.resolve()
    )
    inside = shutil.copytree(classifier, runs_dir / "exported" / "classifier")
    assert resolve_reference_model_path(str(inside), runs_dir=runs_dir, models_dir=None) == str(inside.resolve())


def test_reference_model_paths_of_unfinished_runs_are_refused(runs_dir: Path, models_dir: Path) -> None:
    (runs_dir / "runs" / "half").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="run half: training has not finished"):
        resolve_reference_model_path("./bert_runs/half", runs_dir=runs_dir, models_dir=models_dir)
    with pytest.raises(InvalidInputError, match="run nobody: no such run"):
        resolve_reference_model_path("nobody", runs_dir=runs_dir, models_dir=models_dir)


def test_reference_model_paths_outside_both_roots_are_refused(
    tmp_path: Path, runs_dir: Path, classifier: Path, models_dir: Path
) -> None:
    outside = shutil.copytree(classifier, tmp_path / "elsewhere" / "model")
    allowed = rf"outside the runs directory {runs_dir.resolve()} or the models mirror {models_dir.resolve()}"
    for model_path in (
        str(outside),
        f"{models_dir}/../elsewhere/model",  # `..` out of the mirror
        f"{runs_dir}/runs/x/../../../elsewhere/model",  # `..` out of the runs directory
    ):
        with pytest.raises(InvalidInputError, match=rf"resolves to {outside.resolve()}, {allowed}; give a run id"):
            resolve_reference_model_path(model_path, runs_dir=runs_dir, models_dir=models_dir)
    with pytest.raises(
        InvalidInputError,
        match=r"outside the runs directory .* \(no models mirror is configured: BERT_EVAL_MODELS_DIR\)",
    ):
        resolve_reference_model_path(str(outside), runs_dir=runs_dir, models_dir=None)
    with pytest.raises(
        InvalidInputError, match=r"model_path 'bert_runs/\.\.' names a run in the runs directory, but invalid run_id"
    ):
        resolve_reference_model_path("bert_runs/..", runs_dir=runs_dir, models_dir=models_dir)
    with pytest.raises(InvalidInputError, match="model_path is empty"):
        resolve_reference_model_path("  ", runs_dir=runs_dir, models_dir=models_dir)


def test_symbolic_links_out_of_the_roots_are_refused(
    tmp_path: Path, runs_dir: Path, classifier: Path, models_dir: Path
) -> None:
    outside = shutil.copytree(classifier, tmp_path / "elsewhere" / "model")
    os.symlink(outside, models_dir / "linked")
    with pytest.raises(InvalidInputError, match=rf"resolves to {outside.resolve()}, outside"):
        resolve_reference_model_path(str(models_dir / "linked"), runs_dir=runs_dir, models_dir=models_dir)
    with pytest.raises(InvalidInputError, match=r"leads outside the models mirror .* \(a symbolic link\)"):
        describe_model("linked", runs_dir=runs_dir, models_dir=models_dir)

    # A run directory that is a link to a finished run elsewhere.
    elsewhere = finished_run(tmp_path / "other-volume", "evil", classifier)
    (runs_dir / "runs").mkdir()
    os.symlink(elsewhere.root, runs_dir / "runs" / "evil")
    for model_path in ("evil", "./bert_runs/evil"):
        with pytest.raises(InvalidInputError, match=r"run evil: .* is a symbolic link"):
            resolve_reference_model_path(model_path, runs_dir=runs_dir, models_dir=models_dir)
    with pytest.raises(InvalidInputError, match=r"run evil: .* is a symbolic link"):
        describe_model("run:evil", runs_dir=runs_dir, models_dir=None)
    assert json.loads((elsewhere.model_dir / "config.json").read_text())  # untouched
