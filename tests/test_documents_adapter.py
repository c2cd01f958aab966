"""The documents adapter on the real PDFs and scans in ../shared/data/documents, and on bad files written here."""

import math
import resource
import shutil
import warnings
from pathlib import Path

import pypdf
import pypdfium2 as pdfium
import pytest
import torch
from conftest import SHARED
from PIL import Image

import mimsdk.adapters.documents as documents
from mimsdk import ConfigError, DataConfig, DataError, ModelConfig, create_model, load_recipe, pretrain
from mimsdk.adapter import get_adapter
from mimsdk.adapters.documents import DocumentOptions, Page, document_options, read_page, scan_documents

DOCS = SHARED / "documents"
SCANS = DOCS / "ocrmypdf_scans"
MODEL = ModelConfig(size="tiny", input_size=[64, 64], patch_size=8, in_chans=1, masker="block", mask_ratio=0.4)
TINY = dict(depth=2, decoder_dim=64, decoder_depth=1, decoder_heads=2)


@pytest.fixture(scope="module")
def docs():
    if not DOCS.is_dir():
        pytest.fail(f"shared sample data missing at {DOCS}: tests expect ../shared beside the checkout")
    return DOCS


def data(**options) -> DataConfig:
    return DataConfig(modality="documents", options=options)


def write_pdf(path, sizes):
    """A PDF with blank pages of the given (width, height) in points, written by pdfium itself."""
    pdf = pdfium.PdfDocument.new()
    for w, h in sizes:
        pdf.new_page(w, h)
    pdf.save(path)
    pdf.close()
    return path


def test_page_counts_come_from_the_page_tree_without_rendering(docs, tmp_path, monkeypatch):
    def no_render(*args, **kwargs):
        raise AssertionError("scanning rendered a page")

    monkeypatch.setattr(pdfium.PdfPage, "render", no_render)
    pages, labels, classes = scan_documents(docs, DocumentOptions())
    assert len(pages) == 26 and classes == ["ocrmypdf_scans", "publaynet_pmc_pages"]  # sub-folders as classes
    assert labels.count(0) == 6 and labels.count(1) == 20
    assert sum(p.is_pdf for p in pages) == 3  # c02-22, epson, masks: one page each

    write_pdf(tmp_path / "three.pdf", [(612, 792), (792, 612), (300, 400)])
    frames = [Image.new("L", (120 + 10 * i, 200), 255) for i in range(4)]
    frames[0].save(tmp_path / "scan.tiff", save_all=True, append_images=frames[1:])
    pages, _, _ = scan_documents(tmp_path, DocumentOptions())
    assert [(p.path.name, p.index) for p in pages] == [("scan.tiff", i) for i in range(4)] + [
        ("three.pdf", i) for i in range(3)
    ]
    assert [p.size for p in pages if p.is_pdf] == [(612, 792), (792, 612), (300, 400)]
    assert [p.size[0] for p in pages if not p.is_pdf] == [120, 130, 140, 150]

    picked, _, _ = scan_documents(tmp_path, DocumentOptions(pages="2-3,9"))
    assert [(p.path.suffix, p.index) for p in picked] == [(".tiff", 1), (".tiff", 2), (".pdf", 1), (".pdf", 2)]


@pytest.mark.parametrize("dpi", [72, 100, 150])
def test_rendered_size_follows_the_dpi(docs, dpi):
    (page,) = [p for p in scan_documents(SCANS, DocumentOptions(dpi=dpi))[0] if p.path.name == "epson.pdf"]
    width_pt, height_pt = page.size  # 595 × 841 pt: A4
    gray = read_page(page, "gray")
    assert gray.dtype == torch.uint8 and gray.shape[0] == 1
    assert abs(gray.shape[2] - width_pt / 72 * dpi) <= 1 and abs(gray.shape[1] - height_pt / 72 * dpi) <= 1
    assert read_page(page, "rgb").shape == (3, *gray.shape[1:])
    assert gray.float().mean() > 128  # a printed page: mostly paper, not a black render


def test_pages_keep_their_aspect(docs):
    ds = get_adapter("documents").dataset(docs, data(fit="pad"), MODEL, train=False)
    for i in range(len(ds)):
        h, w = ds.page(i).shape[1:]
        x, _ = ds[i]
        real = ~torch.isnan(x[0])
        rows, cols = real.any(1).sum().item(), real.any(0).sum().item()
        assert real.sum() == rows * cols  # one rectangle of page, padding around it
        assert max(rows, cols) == 64 and abs(cols / rows - w / h) <= 1.5 / min(rows, cols)
    torch.manual_seed(0)
    crops = get_adapter("documents").dataset(docs, data(fit="crop"), MODEL, train=True)
    for i in range(len(crops)):
        page = crops.page(i)
        crop = crops._crop(page, 1.0)
        assert 1 / 1.1 - 0.02 <= crop.shape[2] / crop.shape[1] <= 1.1 + 0.02  # a square output: square-ish crops
        x, _ = crops[i]
        assert x.shape == (1, 64, 64) and not torch.isnan(x).any()


def test_padding_is_left_out_of_the_loss(docs):
    ds = get_adapter("documents").dataset(SCANS / "epson.pdf", data(fit="pad"), MODEL, train=False)
    x = ds[0][0][None]  # a portrait A4 page fitted into a square: NaN columns left and right
    padding = torch.isnan(x)
    assert 0.1 < padding.float().mean() < 0.5
    torch.manual_seed(0)
    model = create_model(MODEL, **TINY).eval()
    noise = model.masker.noise(1, model.num_tokens, torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x, noise=noise)
        zeros = model(x.nan_to_num(0.0), noise=noise)  # the encoder sees NaN as 0: same input, same prediction
    assert torch.equal(out.pred, zeros.pred) and not torch.isclose(out.loss, zeros.loss)

    # The loss recomputed by hand over the real pixels of masked patches only.
    patches = model.tokenizer.patchify(x.nan_to_num(0.0))[0]
    real = model.tokenizer.patchify((~padding).float())[0]
    count = real.sum(1, keepdim=True)
    mean = (patches * real).sum(1, keepdim=True) / count.clamp_min(1)
    var = (real * (patches - mean) ** 2).sum(1, keepdim=True) / (count - 1).clamp_min(1)
    target = (patches - mean) / (var + 1e-6) ** 0.5
    weights = real * out.mask[0][:, None]
    manual = (((out.pred[0] - target) ** 2) * weights).sum() / weights.sum()
    assert torch.allclose(out.loss, manual, rtol=1e-5)


def test_block_masks_on_a_document_batch_are_exact_and_seeded(docs):
    ds = get_adapter("documents").dataset(docs, data(), MODEL, train=True)
    torch.manual_seed(0)
    x = torch.stack([ds[i][0] for i in range(8)])
    model = create_model(MODEL, **TINY)
    masks = [model(x, generator=torch.Generator().manual_seed(s)).mask for s in (7, 7, 8)]
    assert (masks[0].sum(1) == 26).all()  # round(64 · 0.4) tokens of the 8×8 grid, every page
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    grid = masks[0].view(8, 8, 8)
    # blockwise, not scattered: most masked tokens have a masked 4-neighbour
    neighbours = torch.zeros_like(grid)
    neighbours[:, 1:] += grid[:, :-1]
    neighbours[:, :-1] += grid[:, 1:]
    neighbours[:, :, 1:] += grid[:, :, :-1]
    neighbours[:, :, :-1] += grid[:, :, 1:]
    assert ((neighbours > 0) & (grid > 0)).sum() >= 0.9 * grid.sum()


def bad_folder(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "good.pdf").write_bytes((SCANS / "c02-22.pdf").read_bytes())
    (root / "page.png").write_bytes((SCANS / "linn.png").read_bytes())
    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    writer.encrypt("secret", algorithm="AES-128" if _has_aes() else "RC4-128")
    with (root / "encrypted.pdf").open("wb") as f:
        writer.write(f)
    write_pdf(root / "empty.pdf", [])
    good = (SCANS / "epson.pdf").read_bytes()
    (root / "truncated.pdf").write_bytes(good[: len(good) // 3])
    (root / "fake.pdf").write_bytes(b"this is a text file, not a PDF")
    png = (SCANS / "typewriter.png").read_bytes()
    (root / "cut.png").write_bytes(png[: len(png) // 2])
    return root


def _has_aes() -> bool:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return False
    return True


EXPECTED = {
    "encrypted.pdf": "encrypted",
    "empty.pdf": "no pages",
    "truncated.pdf": "damaged or truncated",
    "fake.pdf": "not a PDF",
    "cut.png": "cannot be decoded",
}


def test_bad_files_warn_once_each_naming_the_file_and_the_rest_is_used(tmp_path):
    root = bad_folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pages, _, _ = scan_documents(root, DocumentOptions())
    messages = [str(w.message) for w in caught]
    for name, why in EXPECTED.items():
        about = [m for m in messages if str(root / name) in m]
        assert len(about) == 1 and why in about[0], (name, about)
    assert any("skipped 5 of 7 documents" in m for m in messages)
    assert sorted(p.path.name for p in pages) == ["good.pdf", "page.png"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_strict_mode_stops_at_a_bad_file_naming_it(tmp_path, name):
    root = bad_folder(tmp_path)
    only = tmp_path / "one"
    only.mkdir()
    (root / name).rename(only / name)
    with pytest.raises(DataError, match=rf"{only / name}.*{EXPECTED[name]}"):
        get_adapter("documents").dataset(only, DataConfig(modality="documents", strict=True), MODEL, train=True)


def test_a_huge_page_renders_at_a_capped_size(tmp_path):
    side = 5.0 / 0.0254 * 72  # 5 m in points
    path = write_pdf(tmp_path / "huge.pdf", [(side, side)])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (page,) = scan_documents(path, DocumentOptions(dpi=150, max_pixels=4_000_000))[0]
    (message,) = [str(w.message) for w in caught]
    assert str(path) in message and "page 1" in message and "max_pixels" in message
    rendered = read_page(page, "gray")
    h, w = rendered.shape[1:]
    assert h * w <= 4_000_000 and min(h, w) >= 1990  # capped, not collapsed
    # Uncapped, 5 m at 150 DPI is 29528² ≈ 872 M pixels: at least 872 MB for the bitmap alone.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300 * 1024
    assert math.isclose(page.scale * 72 * 5 / 0.0254, 2000, rel_tol=0.01)


@pytest.mark.parametrize(
    "options, key",
    [
        ({"dpi": -10}, "data.options.dpi"),
        ({"fit": "stretch"}, "data.options.fit"),
        ({"colour": "gray"}, "data.options.colour"),
        ({"pages": "first"}, "data.options.pages"),
        ({"pages": "3-1"}, "data.options.pages"),
        ({"color": "rgb"}, "data.options.color"),  # MODEL has one channel
        ({"max_pixels": 10}, "data.options.max_pixels"),
        ({"aspect_jitter": 1.5}, "data.options.aspect_jitter"),
    ],
)
def test_option_errors_name_the_key(docs, options, key):
    with pytest.raises(ConfigError, match=key):
        get_adapter("documents").dataset(docs, data(**options), MODEL, train=True)


def test_labels_from_the_shared_csv(docs):
    labelled = DataConfig(modality="documents", labels=str(docs / "labels.csv"), options={"label_column": "doc_type"})
    ds = get_adapter("documents").dataset(docs, labelled, MODEL, train=False)
    assert len(ds.classes) == 6 and "book_page" in ds.classes
    names = {p.path.name: ds.classes[y] for p, y in zip(ds.pages, ds.labels)}
    assert names["c02-22.pdf"] == "book_page" and names["PMC3576793_00004.jpg"] == "scientific_article_page"
    with pytest.raises(DataError, match=r"labels.csv.*'label'"):
        get_adapter("documents").dataset(docs, DataConfig(modality="documents", labels=labelled.labels), MODEL, True)


def test_rendered_pages_are_cached_per_process(docs, monkeypatch):
    calls = []

    def counting(page: Page, color: str) -> torch.Tensor:
        calls.append(page.path.name)
        return read_page(page, color)

    monkeypatch.setattr(documents, "read_page", counting)
    for cache_mb, renders in ((64, 1), (0, 3)):
        calls.clear()
        ds = get_adapter("documents").dataset(SCANS / "masks.pdf", data(cache_mb=cache_mb), MODEL, train=True)
        for _ in range(3):
            ds[0]
        assert calls == ["masks.pdf"] * renders


def test_model_remembers_how_pages_were_read(docs):
    meta = get_adapter("documents").metadata(data(dpi=50, fit="pad"), MODEL)
    assert meta["document_options"]["dpi"] == 50 and meta["channel_names"] == ["gray"]
    stored = ModelConfig(**{**MODEL.__dict__, "metadata": meta})
    ds = get_adapter("documents").dataset(SCANS, DataConfig(modality="documents"), stored, train=True)
    assert all(p.scale == 50 / 72 for p in ds.pages if p.is_pdf) and ds.opts.fit == "pad"


def test_pretrain_documents_tiny_writes_reconstructions(docs, tmp_path):
    result = pretrain("documents-tiny", data=docs, out=tmp_path / "run", max_steps=2, num_workers=0, depth=1,
                      recon_every=2, ckpt_every=2, log_every=1, options={"fit": "pad"})  # fmt: skip
    assert len(result.history) == 2 and math.isfinite(result.history[-1]["loss"])
    picture = Image.open(tmp_path / "run" / "recon" / "latest.png").convert("RGB")
    assert picture.width > 3 * 64  # original | masked | reconstruction
    # Padding (NaN) shows pale blue: present in the pictures of portrait pages fitted into a square.
    pale = [round(c * 255) for c in documents.PADDING_RGB]
    assert any(all(abs(a - b) <= 2 for a, b in zip(px, pale)) for px in picture.getdata())


@pytest.mark.parametrize("name", ["documents", "documents-tiny"])
def test_shipped_recipes_options_are_valid(name):
    recipe = load_recipe(name)
    opts = document_options(recipe.data, recipe.model)
    assert recipe.model.masker == "block" and recipe.model.mask_ratio == 0.4 and not recipe.data.hflip
    assert opts.color == {1: "gray", 3: "rgb"}[recipe.model.in_chans]


def test_scans_are_cached_by_path_size_mtime_and_the_settings_pages_depend_on(tmp_path, monkeypatch):
    import mimsdk.adapters.documents.pages as pages

    monkeypatch.setenv("MIMSDK_CACHE", str(tmp_path / "cache"))
    (tmp_path / "docs").mkdir()
    pdf = write_pdf(tmp_path / "docs" / "two.pdf", [(612, 792)] * 2)
    scan_image = shutil.copy(next(SCANS.glob("*.png")), tmp_path / "docs")
    looked = []
    inspect = pages.inspect
    monkeypatch.setattr(pages, "inspect", lambda path, *args: looked.append(path.name) or inspect(path, *args))
    first, _, _ = scan_documents(tmp_path / "docs", document_options(data(dpi=72), MODEL))
    assert sorted(looked) == sorted([pdf.name, Path(scan_image).name]) and len(first) == 3
    looked.clear()
    again, _, _ = scan_documents(tmp_path / "docs", document_options(data(dpi=72), MODEL))
    assert looked == [] and again == first  # the same pages, sizes and scales, nothing opened
    at_150, _, _ = scan_documents(tmp_path / "docs", document_options(data(dpi=150), MODEL))  # looked at again
    assert sorted(looked) == sorted([pdf.name, Path(scan_image).name])
    assert [p.scale for p in at_150 if p.is_pdf] == [150 / 72] * 2
    looked.clear()
    write_pdf(pdf, [(612, 792)] * 3)  # rewritten: three pages now
    third, _, _ = scan_documents(tmp_path / "docs", document_options(data(dpi=72), MODEL))
    assert looked == [pdf.name] and len(third) == 4
