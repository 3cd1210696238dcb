"""The labelled CSV of `modelctl publish --eval-data`: columns by name in any order,
labels mapped to class indices, and each problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InvalidInput
from common.registry import Feature
from modelctl.eval_data import read_labelled_csv

FEATURES = [Feature(name="a"), Feature(name="b b"), Feature(name="flag", type="bool")]


def csv_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "holdout.csv"
    path.write_text(text)
    return path


def test_columns_in_any_order_come_back_in_feature_order(tmp_path: Path) -> None:
    path = csv_file(
        tmp_path,
        "id,target,flag,b b,a\n7,benign,true,2.5,1\n8,malignant,0,-1e3,0.25\n\n",
    )
    rows = read_labelled_csv(path, FEATURES, ["malignant", "benign"], "target")
    assert rows.x == [[1.0, 2.5, 1.0], [0.25, -1000.0, 0.0]]
    assert rows.y == [1, 0]


def test_integer_classes_match_their_numbers_however_written(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "a,b b,flag,y\n1,2,1,1\n1,2,0,0.0\n1,2,1, 2 \n")
    rows = read_labelled_csv(path, FEATURES, [0, 1, 2], "y")
    assert rows.y == [1, 0, 2]


def test_a_byte_order_mark_does_not_hide_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("a,b b,flag,target\n1,2,1,x\n".encode("utf-8-sig"))
    assert read_labelled_csv(path, FEATURES, ["x", "z"], "target").x == [[1.0, 2.0, 1.0]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty: it needs a header row"),
        ("a,flag,target\n1,1,x\n", "lacks the feature columns ['b b'] (1 of the model's 3"),
        ("a,b b,flag\n1,2,1\n", "has no label column 'target'; name it with --label-column"),
        ("a,b b,flag,target\n", "has a header but no rows to evaluate on"),
        ("a,b b,flag,target\n1,2,1,x\n1,2,1,maybe\n", "line 3: unknown label 'maybe' in column"),
        ("a,b b,flag,target\n1,,1,x\n", "line 2, column 'b b': '' is not a finite number"),
        ("a,b b,flag,target\nnan,2,1,x\n", "column 'a': 'nan' is not a finite number"),
        ("a,b b,flag,target\n1,2,yes,x\n", "column 'flag': 'yes' is not a finite number"),
        ("a,b b,flag,target\n1,2,1\n", "line 2 has 3 fields; the header has 4"),
        ("a,a,b b,flag,target\n1,1,2,1,x\n", "names the columns ['a'] more than once"),
    ],
)
def test_each_problem_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        read_labelled_csv(csv_file(tmp_path, text), FEATURES, ["x", "z"], "target")
    assert message in caught.value.message


def test_an_unknown_label_names_the_classes(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "a,b b,flag,target\n1,2,1,3\n")
    with pytest.raises(InvalidInput) as caught:
        read_labelled_csv(path, FEATURES, [0, 1], "target")
    assert "unknown label '3'" in caught.value.message
    assert "the model's classes are [0, 1]" in caught.value.message


def test_many_missing_columns_are_named_up_to_ten(tmp_path: Path) -> None:
    features = [Feature(name=f"f{i}") for i in range(30)]
    path = csv_file(tmp_path, "target\nx\n")
    with pytest.raises(InvalidInput) as caught:
        read_labelled_csv(path, features, ["x", "z"], "target")
    assert "['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7', 'f8', 'f9'] and more" in str(
        caught.value
    )
    assert "(30 of the model's 30" in str(caught.value)
