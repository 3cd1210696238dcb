"""The Open Inference Protocol codec: tensors in (JSON and binary), rows out, responses
that tritonclient's own parser reads."""

from __future__ import annotations

import struct
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from tritonclient.http import InferInput, InferRequestedOutput, InferResult
from tritonclient.http._utils import _get_inference_request

from common.errors import InvalidInput, MalformedBody
from common.oip import binary
from common.oip.metadata import repository_index, server_metadata
from common.oip.responses import check_outputs, render
from common.oip.rows import rows_from
from common.oip.tensors import parse_request
from common.registry import Catalog, RegistryState
from tests.common.metadata import make_metadata

FLOATS = make_metadata([("a", "float"), ("b", "float"), ("c", "float")])


def triton_body(inputs: list[InferInput], outputs: list[InferRequestedOutput] | None = None):
    """What tritonclient sends: (JSON header, binary data after it)."""
    body, json_size = _get_inference_request(inputs, "", outputs, 0, False, False, 0, None, None)
    if json_size is None:
        return orjson.loads(body), b""
    return orjson.loads(body[:json_size]), body[json_size:]


@pytest.mark.parametrize(
    "datatype,values",
    [
        ("FP64", [1.5, -2.25, 1e300]),
        ("FP32", [1.5, -2.25, 3.0]),
        ("FP16", [1.5, -2.25, 3.0]),
        ("INT64", [1, -2, 2**62]),
        ("INT8", [1, -2, 127]),
        ("UINT32", [1, 2, 2**32 - 1]),
        ("BOOL", [True, False, True]),
    ],
)
def test_binary_round_trip(datatype: str, values: list[Any]) -> None:
    raw = binary.encode(values, datatype) if datatype != "FP16" else struct.pack("<3e", *values)
    assert len(raw) == 3 * binary.element_size(datatype)
    assert binary.decode(raw, datatype, 3, "x") == values


def test_binary_matches_numpys_little_endian_layout() -> None:
    array = np.array([[1.25, 2.5], [3.75, -4.0]], dtype="<f4")
    assert binary.decode(array.tobytes(), "FP32", 4, "x") == [1.25, 2.5, 3.75, -4.0]
    labels = binary.encode(["benign", "malignant"], "BYTES")
    assert labels == struct.pack("<I", 6) + b"benign" + struct.pack("<I", 9) + b"malignant"


def test_a_binary_size_that_does_not_fit_the_shape_is_named() -> None:
    with pytest.raises(InvalidInput, match=r"input 'x': binary_data_size is 12 bytes, but 2 FP64"):
        binary.decode(b"\0" * 12, "FP64", 2, "x")


@pytest.mark.parametrize("length,problem", [("abc", "must be a number"), ("99", "only 10 bytes")])
def test_a_bad_header_length_is_refused(length: str, problem: str) -> None:
    with pytest.raises(MalformedBody, match=problem):
        binary.split_body(b"0123456789", length)


def test_tritonclients_binary_request_is_read() -> None:
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    tensor = InferInput("input__0", [2, 3], "FP64")
    tensor.set_data_from_numpy(x)  # binary by default
    header, data = triton_body([tensor])
    request = parse_request(header, data)
    assert request.binary_output  # tritonclient asks for binary outputs when it names none
    assert rows_from(FLOATS, request.inputs) == [
        {"a": 1.0, "b": 2.0, "c": 3.0},
        {"a": 4.0, "b": 5.0, "c": 6.0},
    ]


def test_json_data_may_be_flat_or_nested() -> None:
    for data in ([1, 2, 3, 4, 5, 6], [[1, 2, 3], [4, 5, 6]]):
        header = {"inputs": [{"name": "X", "shape": [2, 3], "datatype": "FP64", "data": data}]}
        rows = rows_from(FLOATS, parse_request(header).inputs)
        assert rows[1] == {"a": 4.0, "b": 5.0, "c": 6.0}
        assert all(type(v) is float for row in rows for v in row.values())


def test_one_tensor_per_feature_as_mlservers_pandas_codec_sends() -> None:
    header = {
        "inputs": [
            {"name": "c", "shape": [2, 1], "datatype": "FP64", "data": [3, 6]},
            {"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 4]},
            {"name": "b", "shape": [2], "datatype": "INT64", "data": [2, 5]},
        ]
    }
    rows = rows_from(FLOATS, parse_request(header).inputs)
    assert rows == [{"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 4.0, "b": 5.0, "c": 6.0}]
    assert list(rows[0]) == ["a", "b", "c"]  # feature order, as /predict's rows


def test_int_and_bool_features_take_their_datatypes() -> None:
    mixed = make_metadata([("age", "int"), ("smoker", "bool"), ("bmi", "float")])
    header = {
        "inputs": [
            {"name": "age", "shape": [1], "datatype": "INT32", "data": [41]},
            {"name": "smoker", "shape": [1], "datatype": "BOOL", "data": [True]},
            {"name": "bmi", "shape": [1], "datatype": "FP64", "data": [22.5]},
        ]
    }
    assert rows_from(mixed, parse_request(header).inputs) == [
        {"age": 41, "smoker": True, "bmi": 22.5}
    ]
    matrix = {"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP64", "data": [41, 0, 1]}]}
    row = rows_from(mixed, parse_request(matrix).inputs)[0]
    assert row == {"age": 41, "smoker": False, "bmi": 1.0} and type(row["age"]) is int


@pytest.mark.parametrize(
    "inputs,problem",
    [
        ([{"name": "X", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}], r"\[N, 3\]"),
        ([{"name": "X", "shape": [1, 3], "datatype": "BYTES", "data": ["a", "b", "c"]}], "'a'"),
        ([{"name": "X", "shape": [1, 3], "datatype": "FP64", "data": [1, "2", 3]}], "'2'"),
        ([{"name": "X", "shape": [1, 3], "datatype": "BOOL", "data": [True] * 3}], "'BOOL'"),
        (
            [
                {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                {"name": "b", "shape": [1], "datatype": "FP64", "data": [1]},
            ],
            r"missing inputs for 1 features of demo v3: \['c'\]",
        ),
        (
            [
                {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                {"name": "zz", "shape": [1], "datatype": "FP64", "data": [1]},
            ],
            r"inputs \['zz'\] are not features",
        ),
        (
            [
                {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
                {"name": "b", "shape": [2], "datatype": "FP64", "data": [1, 2]},
                {"name": "c", "shape": [1], "datatype": "FP64", "data": [1]},
            ],
            r"different numbers of rows: \[1, 2\]",
        ),
        ([{"name": "X", "shape": [0, 3], "datatype": "FP64", "data": []}], "no rows"),
        ([{"name": "X", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 10**400]}], "1.8e308"),
    ],
)
def test_inputs_that_do_not_fit_the_model_are_named(inputs: list[Any], problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        rows_from(FLOATS, parse_request({"inputs": inputs}).inputs)


def test_an_int_feature_refuses_a_fraction() -> None:
    ints = make_metadata([("n", "int")])
    header = {"inputs": [{"name": "n", "shape": [1], "datatype": "FP64", "data": [2.5]}]}
    with pytest.raises(InvalidInput, match=r"2\.5 for feature 'n', which takes a whole number"):
        rows_from(ints, parse_request(header).inputs)


@pytest.mark.parametrize(
    "header,data,problem",
    [
        ([], b"", "a JSON object"),
        ({"inputs": []}, b"", "non-empty list"),
        ({"inputs": [{"shape": [1], "datatype": "FP64", "data": [1]}]}, b"", "'name'"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP99", "data": [1]}]}, b"", "FP99"),
        ({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP64", "data": [1]}]}, b"", ">= 0"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1]}]}, b"", "holds"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64"}]}, b"", "no 'data'"),
        (
            {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [[1], 2]}]},
            b"",
            "mixes lists",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [1],
                        "datatype": "FP64",
                        "parameters": {"shared_memory_region": "r"},
                    }
                ]
            },
            b"",
            "shared memory",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [1],
                        "datatype": "FP64",
                        "parameters": {"binary_data_size": 8},
                    }
                ]
            },
            b"\0" * 12,
            "4 bytes of binary data that no input",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [1],
                        "datatype": "FP64",
                        "parameters": {"binary_data_size": 16},
                    }
                ]
            },
            b"\0" * 8,
            "runs past",
        ),
        (
            {
                "inputs": [
                    {"name": "x", "shape": [1], "datatype": "FP64", "data": [1]},
                    {"name": "x", "shape": [1], "datatype": "FP64", "data": [1]},
                ]
            },
            b"",
            "same name",
        ),
        (
            {
                "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}],
                "outputs": [{"name": "predict", "parameters": {"binary_data": "yes"}}],
            },
            b"",
            "true or false",
        ),
        (
            {"id": 7, "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]},
            b"",
            "'id' must be a string",
        ),
    ],
)
def test_malformed_requests_are_named(header: Any, data: bytes, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        parse_request(header, data)


RESULT = {"labels": ["yes", "no"], "probabilities": [[0.25, 0.75], [0.875, 0.125]]}


def test_json_outputs() -> None:
    header = {"id": "abc", "inputs": [{"name": "X", "shape": [1], "datatype": "FP64", "data": [1]}]}
    rendered = render(parse_request(header), FLOATS, RESULT, {"cached": False})
    assert rendered.header_length is None
    body = orjson.loads(rendered.body)
    assert body["model_name"] == "demo" and body["model_version"] == "3" and body["id"] == "abc"
    assert body["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [2, 1], "data": ["yes", "no"]},
        {
            "name": "predict_proba",
            "datatype": "FP64",
            "shape": [2, 2],
            "data": [0.25, 0.75, 0.875, 0.125],
        },
    ]


def test_binary_outputs_read_by_tritonclient() -> None:
    tensor = InferInput("X", [1, 3], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 3)))
    wanted = [InferRequestedOutput("predict_proba"), InferRequestedOutput("predict")]
    header, data = triton_body([tensor], wanted)
    rendered = render(parse_request(header, data), FLOATS, RESULT, {})
    assert rendered.header_length is not None
    result = InferResult.from_response_body(rendered.body, header_length=rendered.header_length)
    np.testing.assert_array_equal(
        result.as_numpy("predict_proba"), np.array([[0.25, 0.75], [0.875, 0.125]])
    )
    assert result.as_numpy("predict").tolist() == [[b"yes"], [b"no"]]
    assert [o["name"] for o in result.get_response()["outputs"]] == ["predict_proba", "predict"]


def test_integer_classes_are_int64_and_one_output_can_be_chosen() -> None:
    header = {
        "inputs": [{"name": "X", "shape": [1], "datatype": "FP64", "data": [1]}],
        "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
    }
    numbered = make_metadata([("a", "float")], classes=[0, 1])
    rendered = render(parse_request(header), numbered, {"labels": [1, 0], "probabilities": []}, {})
    result = InferResult.from_response_body(rendered.body, header_length=rendered.header_length)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["predict"]
    assert result.as_numpy("predict").dtype == np.int64
    assert result.as_numpy("predict").tolist() == [[1], [0]]


def test_an_unknown_output_is_refused_before_any_work() -> None:
    header = {
        "inputs": [{"name": "X", "shape": [1], "datatype": "FP64", "data": [1]}],
        "outputs": [{"name": "predict"}, {"name": "probabilities"}],
    }
    with pytest.raises(InvalidInput, match="unknown output 'probabilities': the outputs are"):
        check_outputs(parse_request(header))


def test_the_server_version_is_the_projects() -> None:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert server_metadata()["version"] == project["project"]["version"]


def test_the_repository_index_marks_deleted_artifacts_unavailable() -> None:
    gone = FLOATS.model_copy(update={"version": "4", "artifact_deleted_at": datetime.now(UTC)})
    catalog = Catalog(RegistryState(), {"demo": [FLOATS, gone]})
    assert repository_index(catalog, ready_only=False) == [
        {"name": "demo", "version": "3", "state": "READY"},
        {
            "name": "demo",
            "version": "4",
            "state": "UNAVAILABLE",
            "reason": "its artifact was deleted",
        },
    ]
    assert repository_index(catalog, ready_only=True) == [
        {"name": "demo", "version": "3", "state": "READY"}
    ]
