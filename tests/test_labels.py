import pytest

from mimsdk.errors import DataError
from mimsdk.labels import label_files


def test_one_csv_gives_two_folders_the_same_class_indices(tmp_path):
    for split, names in {"train": ["a.png", "b.png", "c.png"], "test": ["d.png"]}.items():
        (tmp_path / split).mkdir()
        for name in names:
            (tmp_path / split / name).write_bytes(b"")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\ntrain/a.png,zebra\ntrain/b.png,ant\ntrain/c.png,moth\ntest/d.png,zebra\n")
    train, classes_train = label_files(sorted((tmp_path / "train").iterdir()), tmp_path / "train", csv)
    test, classes_test = label_files([tmp_path / "test" / "d.png"], tmp_path / "test", csv)
    assert classes_train == classes_test == ["ant", "moth", "zebra"]
    assert train == [2, 0, 1] and test == [2]


def test_class_folders_and_unlabelled_files(tmp_path):
    for name in ["dog/1.png", "cat/2.png", "cat/3.png"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    files = sorted(tmp_path.rglob("*.png"))
    assert label_files(files, tmp_path) == ([0, 0, 1], ["cat", "dog"])
    assert label_files([tmp_path / "cat" / "2.png"], tmp_path / "cat") == ([-1], [])
    # a scene stored as a folder of files, given as the root itself, is one unlabelled item
    assert label_files([tmp_path / "cat"], tmp_path / "cat") == ([-1], [])


def test_missing_rows_and_columns_name_the_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nother.png,cat\n")
    with pytest.raises(DataError, match=r"x.png has no row in labels file .*labels.csv"):
        label_files([tmp_path / "x.png"], tmp_path, csv)
    csv.write_text("name,label\nx.png,cat\n")
    with pytest.raises(DataError, match="needs columns 'path' and 'label'"):
        label_files([tmp_path / "x.png"], tmp_path, csv)


def test_a_file_column_serves_as_the_path_column(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "labels.csv").write_text("file,label\nx.png,cat\n")
    assert label_files([tmp_path / "x.png"], tmp_path, tmp_path / "labels.csv") == ([0], ["cat"])
