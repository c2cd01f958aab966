"""Probing on labelled data: the label column of a CSV, and the warning when a class has a single sample.

The models are saved untrained (no pre-training needed to read labels or to warn), so each test takes seconds.
"""

import json
import warnings

import pytest
from conftest import SHARED
from PIL import Image
from safetensors import safe_open

from mimsdk import create_model, load_recipe, save_model
from mimsdk.adapter import get_adapter
from mimsdk.cli import main
from mimsdk.probe import SingleSampleWarning, probe_model

DOCS = SHARED / "documents"
DOC_LABELS = DOCS / "labels.csv"  # path,doc_type,source: no column "label"
ONE_PAGE = ["book_page", "government_record", "product_brochure", "typewritten_text"]  # one page each


@pytest.fixture(scope="module")
def documents_model(tmp_path_factory):
    """documents-tiny with one block, as saved after pre-training (its stored options in the metadata)."""
    if not DOCS.is_dir():
        pytest.fail(f"shared sample data missing at {DOCS}: tests expect ../shared beside the checkout")
    recipe = load_recipe("documents-tiny")
    recipe.model.metadata = get_adapter("documents").metadata(recipe.data, recipe.model)
    model = create_model(recipe.model, depth=1, decoder_depth=1)
    return save_model(model, tmp_path_factory.mktemp("docs") / "model")


def single_sample_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, SingleSampleWarning)]


def test_probe_reads_the_documents_label_column_and_warns_once(documents_model, capsys):
    args = ["probe", str(documents_model), "--data", str(DOCS), "--labels", str(DOC_LABELS)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*args, "--label-column", "doc_type", "--compare-random"]) == 0
    out, said = capsys.readouterr()
    assert "| pre-trained |" in out and "| random init |" in out
    # minutes of work say what is under way, on stderr, for each encoder
    assert "probing the pre-trained encoder: features of" in said and "probing the random init encoder" in said
    (message,) = single_sample_warnings(caught)  # once, though two encoders were probed
    assert "\n" not in message and "cannot be read" in message and "4 of 6 classes" in message
    assert all(name in message for name in ONE_PAGE) and "scientific_article_page" not in message

    # Without the column: one line that names the columns found and how to choose one.
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and "\n" not in err and "needs columns 'path' and 'label'" in err and "doc_type" in err
    assert "--label-column" in err


def test_embed_takes_the_label_column(documents_model, tmp_path, capsys):
    out = tmp_path / "pages.safetensors"
    args = ["embed", str(documents_model), "--data", str(DOCS), "--labels", str(DOC_LABELS), "-o", str(out)]
    assert main([*args, "--label-column", "doc_type"]) == 0
    with safe_open(str(out), "pt") as f:
        classes = json.loads(f.metadata()["classes"])
        labels = f.get_tensor("labels")
    assert len(classes) == 6 and "book_page" in classes and labels.shape == (26,) and labels.min() >= 0


def test_a_label_column_is_refused_where_it_cannot_apply(documents_model, tiny_kwargs, cifar, tmp_path, capsys):
    # a column without a CSV to read it from
    assert main(["probe", str(documents_model), "--data", str(DOCS), "--label-column", "doc_type"]) == 2
    assert "give the CSV (--labels)" in capsys.readouterr().err
    # an adapter without the option reads 'label' only, and says so rather than ignoring the name
    images = save_model(create_model(**tiny_kwargs), tmp_path / "images")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,kind\n")
    args = ["probe", str(images), "--data", str(cifar / "test"), "--labels", str(csv), "--label-column", "kind"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'kind'" in err and "images adapter reads labels from a CSV's 'label' column only" in err


def write_images(root, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(root / name / f"{i}.png")


def test_a_class_with_a_single_sample_is_named_in_one_warning(tiny_kwargs, tmp_path):
    model = create_model(**tiny_kwargs).eval()
    six = tmp_path / "six"  # six samples of six classes, as six video clips were: kNN 0.000
    write_images(six, {f"class{i}": 1 for i in range(6)})
    with pytest.warns(SingleSampleWarning, match=r"6 of 6 classes have a single sample \(class0, .*class5\)"):
        assert probe_model(model, six, methods=["knn"]) == {"knn": 0.0}

    mixed = tmp_path / "mixed"
    write_images(mixed, {"many": 5, "lone": 1, "few": 2})
    with pytest.warns(SingleSampleWarning, match=r"1 of 3 classes have a single sample \(lone\)"):
        probe_model(model, mixed, methods=["knn"])

    enough = tmp_path / "enough"
    write_images(enough, {"a": 3, "b": 2})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe_model(model, enough, methods=["knn"])
    assert not single_sample_warnings(caught)
