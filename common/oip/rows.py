"""A request's tensors as rows of feature values: the `input_data` that `/predict` takes,
so that both front ends validate, cache and log the same rows the same way.

Two forms, as clients send them: one tensor `[N, n_features]` in feature order under any
name (`input-0`, `input__0`, `X`...), or one tensor per feature named after it, `[N]` or
`[N, 1]` (MLServer's pandas codec)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.errors import InvalidInput
from common.oip.binary import FLOAT_TYPES, INT_TYPES
from common.oip.tensors import Tensor
from common.registry import Feature, ModelMetadata

MAX_NAMED = 5  # features named in one error message


def rows_from(meta: ModelMetadata, tensors: list[Tensor]) -> list[dict[str, Any]]:
    names = meta.feature_names
    known = set(names)
    if all(t.name in known for t in tensors) and (len(tensors) > 1 or len(names) == 1):
        return _per_feature(meta, tensors)
    if len(tensors) == 1:
        return _matrix(meta, tensors[0])
    strangers = [t.name for t in tensors if t.name not in known][:MAX_NAMED]
    raise InvalidInput(
        f"inputs {strangers} are not features of {meta.model_type} v{meta.version}: send "
        f"one tensor [N, {len(names)}] in feature order, or one tensor per feature named "
        "after it (GET /v2/models/{name} lists them)"
    )


def _matrix(meta: ModelMetadata, tensor: Tensor) -> list[dict[str, Any]]:
    width = len(meta.features)
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise InvalidInput(
            f"input {tensor.name!r} has shape {list(tensor.shape)}; {meta.model_type} "
            f"v{meta.version} takes [N, {width}]: N rows of its {width} features in order"
        )
    columns = [
        _column(feature, tensor, tensor.values[i::width]) for i, feature in enumerate(meta.features)
    ]
    return _rows(meta.feature_names, columns)


def _per_feature(meta: ModelMetadata, tensors: list[Tensor]) -> list[dict[str, Any]]:
    by_name = {t.name: t for t in tensors}
    if missing := [name for name in meta.feature_names if name not in by_name]:
        raise InvalidInput(
            f"missing inputs for {len(missing)} features of {meta.model_type} "
            f"v{meta.version}: {missing[:MAX_NAMED]}" + (" ..." if len(missing) > MAX_NAMED else "")
        )
    counts = set()
    for tensor in tensors:
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise InvalidInput(
                f"input {tensor.name!r} has shape {list(tensor.shape)}; a feature's tensor "
                "is [N] or [N, 1]"
            )
        counts.add(tensor.shape[0])
    if len(counts) > 1:
        raise InvalidInput(f"the feature tensors have different numbers of rows: {sorted(counts)}")
    columns = [
        _column(feature, by_name[feature.name], by_name[feature.name].values)
        for feature in meta.features
    ]
    return _rows(meta.feature_names, columns)


def _rows(names: list[str], columns: list[list[Any]]) -> list[dict[str, Any]]:
    if not columns[0]:
        raise InvalidInput("the inputs hold no rows: send at least one")
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _column(feature: Feature, tensor: Tensor, values: list[Any]) -> list[Any]:
    """A feature's values in its type. Floats for a float feature, the common case, are
    checked with C-level calls (10,000 rows of 30 features: 300,000 values); anything
    else goes one value at a time, which also names the value that does not fit."""
    if feature.type == "float" and tensor.datatype in FLOAT_TYPES:
        kinds = set(map(type, values))
        if kinds <= {float}:
            return values
        if kinds <= {float, int}:
            try:
                return list(map(float, values))
            except OverflowError:
                pass  # named below
    return list(map(_converter(feature, tensor), values))


def _converter(feature: Feature, tensor: Tensor) -> Callable[[Any], Any]:
    """Turns the tensor's elements into the feature's type, or names what does not fit."""
    datatype = tensor.datatype

    def refuse(value: Any, wanted: str) -> InvalidInput:
        return InvalidInput(
            f"input {tensor.name!r} ({datatype}): {value!r} for feature {feature.name!r}, "
            f"which takes {wanted}"
        )

    def number(value: Any) -> float | int:
        if type(value) not in (int, float):
            raise refuse(value, "a number")
        return value  # type: ignore[no-any-return]

    if feature.type == "float":
        if datatype not in FLOAT_TYPES | INT_TYPES:
            raise refuse(datatype, "FP32 or FP64 (or an INT type)")

        def real(value: Any) -> float:
            try:
                return float(number(value))
            except OverflowError:  # an int past float64's range
                raise refuse(value, "a number of at most ±1.8e308") from None

        return real
    if feature.type == "int":

        def whole(value: Any) -> int:
            value = number(value)
            if isinstance(value, float) and not value.is_integer():
                raise refuse(value, "a whole number (INT64)")
            return int(value)

        if datatype == "BOOL":
            raise refuse(datatype, "INT64 (or whole numbers in another INT or FP type)")
        return whole

    def flag(value: Any) -> bool:
        if datatype == "BOOL" and type(value) is bool:
            return value
        if datatype != "BOOL" and type(value) in (int, float) and value in (0, 1):
            return bool(value)
        raise refuse(value, "BOOL (or 0 and 1)")

    return flag
