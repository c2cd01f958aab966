"""Document shard sets on the shared PDFs and page images: the stored half is the page as read at the recipe's DPI
(uint8, C×H×W), so a folder and its shards train alike; a set made at another DPI (or with another label
column) is refused; a big folder's scan reads image headers only. The loader's read rate, folder and shards, is
printed (``pytest -s``)."""

import warnings

import numpy as np
import pypdfium2 as pdfium
import pytest
import torch
from conftest import SHARED
from PIL import Image

import mimsdk.adapters.documents.pages as pages
from mimsdk import DataConfig, DataError, load_recipe, pretrain
from mimsdk.adapter import get_adapter
from mimsdk.data import SeededDataset
from mimsdk.pretraining import measure_data
from mimsdk.sharding import shard
from mimsdk.shards import ShardReader, read_manifest

DOCS = SHARED / "documents"  # 20 PubLayNet JPEG pages, 3 one-page PDFs, 3 scans (PNG, JPEG)
SCANS = DOCS / "ocrmypdf_scans"
SMALL = ["model.depth=1", "data.num_workers=0", "train.log_every=1", "train.ckpt_every=1000000",
         "train.recon_every=1000000"]  # fmt: skip
LABELS = ["data.options.label_column=doc_type"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    if not DOCS.is_dir():
        pytest.fail(f"shared sample data missing at {DOCS}: tests expect ../shared beside the checkout")
    out = tmp_path_factory.mktemp("shards") / "documents"
    return shard("documents-tiny", data=DOCS, out=out, workers=1, labels=str(DOCS / "labels.csv"), overrides=LABELS)


def losses(result) -> list[float]:
    return [row["loss"] for row in result.history]


def test_stored_pages_are_uint8_at_the_recipe_dpi_with_labels(shards):
    manifest = read_manifest(shards)
    assert manifest.count == 26 and len(manifest.classes) == 6 and "book_page" in manifest.classes
    assert manifest.preparation == {"dpi": 100.0, "color": "gray", "pages": "all", "max_pixels": 25_000_000,
                                    "label_column": "doc_type"}  # fmt: skip
    labelled = {"data": {"labels": str(DOCS / "labels.csv"), "options": {"label_column": "doc_type"}}}
    recipe = load_recipe("documents-tiny", labelled)
    folder = get_adapter("documents").dataset(DOCS, recipe.data, recipe.model, train=False)
    stored = ShardReader(shards, manifest)
    assert manifest.classes == folder.classes
    for i, page in enumerate(folder.pages):
        sample = stored[i]
        assert sample["page"].dtype == np.uint8 and sample["page"].shape == (1, page.pixels[1], page.pixels[0])
        assert sample["label"] == folder.labels[i] and sample["page_index"] == page.index
        assert bytes(sample["source"]).decode() == str(page.path.relative_to(DOCS))  # litdata gives a memoryview
        if page.path.name == "epson.pdf":  # A4, 595 × 842 pt, rendered at 100 DPI
            assert sample["page"].shape == (1, 1169, 827)
            assert np.array_equal(sample["page"], folder.page(i).numpy())


def test_training_on_shards_equals_training_on_the_folder(shards, tmp_path):
    run = dict(max_steps=2, labels=str(DOCS / "labels.csv"), overrides=SMALL + LABELS)
    on_folder = pretrain("documents-tiny", data=DOCS, out=tmp_path / "folder", **run)
    on_shards = pretrain("documents-tiny", data=shards, out=tmp_path / "shards", **run)
    assert len(losses(on_shards)) == 2
    assert max(abs(a - b) for a, b in zip(losses(on_folder), losses(on_shards))) < 1e-6


def test_shards_made_at_another_dpi_are_refused_naming_both_values(shards, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "c02-22.pdf").symlink_to(SCANS / "c02-22.pdf")
    other = shard("documents-tiny", data=one, out=tmp_path / "dpi50", workers=1, options={"dpi": 50})
    assert ShardReader(other, read_manifest(other))[0]["page"].shape[1] < 600  # a letter page at 50 DPI: 550 rows
    with pytest.raises(DataError, match=r"prepared with dpi = 50\.0, the recipe asks for 100\.0"):
        pretrain("documents-tiny", data=other, out=tmp_path / "run", max_steps=2, overrides=SMALL)
    # The label column decides the stored labels: a recipe reading another column is refused too.
    with pytest.raises(DataError, match=r"prepared with label_column = 'doc_type', the recipe asks for 'label'"):
        pretrain("documents-tiny", data=shards, out=tmp_path / "labels", max_steps=2, overrides=SMALL)


def test_rgb_pages_give_the_same_crops_and_fits_from_folder_and_shards(tmp_path):
    one = tmp_path / "two"
    one.mkdir()
    for name in ("c02-22.pdf", "congress.jpg"):
        (one / name).symlink_to(SCANS / name)
    rgb = {"model": {"in_chans": 3}, "data": {"options": {"dpi": 40, "color": "rgb"}}}
    out = shard(load_recipe("documents-tiny", rgb), data=one, out=tmp_path / "rgb", workers=1)
    assert ShardReader(out, read_manifest(out))[1]["page"].shape == (3, 1520, 1000)  # a JPEG at its own size
    recipe = load_recipe("documents-tiny", rgb)
    for fit, train in (("crop", True), ("pad", True), ("pad", False)):
        recipe.data.options["fit"] = fit
        views = [get_adapter("documents").dataset(p, recipe.data, recipe.model, train) for p in (one, out)]
        folder, shards = (SeededDataset(v, seed=0) for v in views)
        for key in ((0, 0), (0, 1), (3, 1)):
            assert torch.equal(folder[key][0].nan_to_num(-9.0), shards[key][0].nan_to_num(-9.0)), (fit, key)


def test_a_big_folder_is_checked_by_headers_and_a_bad_page_skipped_when_read(tmp_path, monkeypatch):
    root = tmp_path / "docs"
    root.mkdir()
    for name in ("c02-22.pdf", "linn.png", "typewriter.png"):
        (root / name).symlink_to(SCANS / name)
    png = (SCANS / "typewriter.png").read_bytes()
    (root / "cut.png").write_bytes(png[: len(png) // 2])  # its header is whole: found only when decoded
    gray = np.asarray(Image.open(SCANS / "congress.jpg").convert("L"), dtype=np.float32)
    Image.fromarray(np.full_like(gray, np.nan)).save(root / "nan.tif")  # a float TIFF, every pixel NaN
    (root / "fake.pdf").write_bytes(b"this is a text file, not a PDF")  # pdfium refuses it at the scan
    monkeypatch.setattr(pages, "FULL_CHECK_UP_TO", 3)
    model = load_recipe("documents-tiny").model

    def no_render(*args, **kwargs):
        raise AssertionError("the scan of a big folder decoded a page")

    data = DataConfig(modality="documents", options={"dpi": 30, "cache_mb": 0})
    with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patch.setattr(pdfium.PdfPage, "render", no_render)
        patch.setattr(Image.Image, "load", no_render)
        ds = get_adapter("documents").dataset(root, data, model, train=True)
    assert [str(w.message) for w in caught if "fake.pdf" in str(w.message) and "not a PDF" in str(w.message)]
    assert [p.path.name for p in ds.pages] == ["c02-22.pdf", "cut.png", "linn.png", "nan.tif", "typewriter.png"]
    for index, name, why in ((1, "cut.png", "cannot be read"), (3, "nan.tif", "pixels are NaN or infinite")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x, _ = ds[index]  # replaced by the next good page
        assert x.shape == (1, 64, 64) and torch.isfinite(x).all()
        (message,) = [str(w.message) for w in caught]
        assert name in message and why in message and "replaced by the next good sample" in message
    assert ds.skipped == 2


def test_read_rate_folder_and_shards_with_one_worker(shards):
    # cache_mb 0: the folder renders every page it serves, as it does for a corpus larger than its cache.
    run = dict(batches=6, num_workers=1, labels=str(DOCS / "labels.csv"), overrides=LABELS)
    rates = {}
    for kind, path in (("folder", DOCS), ("shards", shards)):
        rates[kind] = measure_data("documents-tiny", data=path, options={"cache_mb": 0}, **run)
    for kind, rate in rates.items():
        print(f"documents-tiny {kind}: {rate}")
        assert rate.samples_per_s > 0 and rate.workers == 1
