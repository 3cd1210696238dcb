"""Rolling a type's versions out (admin): aliases, a traffic split, a shadow version, and
how the shadow compares. GET /models/{type}/rollout shows all of it to any key."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field, RootModel, ValidationError

from api.deps import AdminDep, ModelTypePath, ReaderDep, ServicesDep
from api.responses import SMALL_BODY_BYTES, errors, read_json
from common.errors import InvalidInput
from common.rollout import ALIAS_PATTERN, ShadowRule, Weight

router = APIRouter(tags=["rollout"])
AliasPath = Annotated[str, Path(pattern=ALIAS_PATTERN, examples=["challenger"])]
WRITE_ERRORS = errors(400, 401, 403, 404, 413, 415, 422, 503)


class RolloutState(BaseModel):
    model_type: str
    versions: list[str] = Field(description="the versions that serve")
    aliases: dict[str, str] = Field(description="alias: version; champion is the active one")
    traffic: dict[str, int] | None = Field(description="version: weight, if split")
    shadow: ShadowRule | None


class AliasBody(BaseModel):
    version: str = Field(examples=["2"])


class Weights(RootModel[dict[str, Weight]]):
    """version: weight"""


class ShadowBody(BaseModel):
    version: str = Field(examples=["2"])
    fraction: float = Field(gt=0, le=1, examples=[0.2])


class ShadowReport(BaseModel):
    model_type: str
    requests: int = Field(description="shadow rows compared with their primary's")
    rows: int
    unmatched: int = Field(description="shadow rows whose primary row is not (yet) logged")
    label_agreement: float | None = Field(description="share of rows with the same label")
    mean_abs_probability_difference: float | None
    shadow_versions: list[str]
    primary_versions: list[str]


def _state(body: dict[str, Any]) -> RolloutState:
    return RolloutState.model_validate(body)


BodyModel = TypeVar("BodyModel", bound=BaseModel)


def body_of(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body: read by the route itself, after the key is checked (a
    declared body would be parsed, and refused, before the key)."""
    content = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": content}}


async def parsed(request: Request, model: type[BodyModel]) -> BodyModel:
    payload = await read_json(request, SMALL_BODY_BYTES)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid body: {problems}") from None


async def rollout(model_type: ModelTypePath, services: ServicesDep, _: ReaderDep) -> RolloutState:
    return _state(await services.rollout.state(model_type))


# The same state at /traffic and /shadow too, whose PUT and DELETE change it.
for _path in ("rollout", "traffic", "shadow"):
    router.add_api_route(
        f"/models/{{model_type}}/{_path}",
        rollout,
        methods=["GET"],
        status_code=200,
        response_model=RolloutState,
        responses=errors(401, 404, 422),
        summary=f"A type's aliases, traffic split and shadow (at /{_path})",
        operation_id=f"get_{_path}",
    )


@router.put(
    "/models/{model_type}/aliases/{alias}",
    status_code=200,
    response_model=RolloutState,
    responses=WRITE_ERRORS,
    summary="Point an alias at a version (admin); champion activates it",
    openapi_extra=body_of(AliasBody),
)
async def put_alias(
    model_type: ModelTypePath,
    alias: AliasPath,
    request: Request,
    services: ServicesDep,
    _: AdminDep,
) -> RolloutState:
    body = await parsed(request, AliasBody)
    return _state(await services.rollout.set_alias(model_type, alias, body.version))


@router.delete(
    "/models/{model_type}/aliases/{alias}",
    status_code=200,
    response_model=RolloutState,
    responses=WRITE_ERRORS,
    summary="Remove an alias (admin)",
)
async def delete_alias(
    model_type: ModelTypePath, alias: AliasPath, services: ServicesDep, _: AdminDep
) -> RolloutState:
    return _state(await services.rollout.delete_alias(model_type, alias))


@router.put(
    "/models/{model_type}/traffic",
    status_code=200,
    response_model=RolloutState,
    responses=WRITE_ERRORS,
    summary="Split a type's traffic between versions by weight (admin)",
    description='`{"1": 90, "2": 10}`. `/predict/{type}` and `/v2/models/{type}/infer` '
    "then pick a version by weight, sticky per caller key unless SERVING_TRAFFIC_STICKY "
    "is false; the answer names the version.",
    openapi_extra=body_of(Weights),
)
async def put_traffic(
    model_type: ModelTypePath, request: Request, services: ServicesDep, _: AdminDep
) -> RolloutState:
    weights = (await parsed(request, Weights)).root
    return _state(await services.rollout.set_traffic(model_type, weights))


@router.delete(
    "/models/{model_type}/traffic",
    status_code=200,
    response_model=RolloutState,
    responses=WRITE_ERRORS,
    summary="End the split: the active version takes all traffic (admin)",
)
async def delete_traffic(
    model_type: ModelTypePath, services: ServicesDep, _: AdminDep
) -> RolloutState:
    return _state(await services.rollout.set_traffic(model_type, None))


@router.put(
    "/models/{model_type}/shadow",
    status_code=200,
    response_model=RolloutState,
    responses=WRITE_ERRORS,
    summary="Also score a share of requests on a shadow version (admin)",
    description="The shadow's results are logged (`shadow: true`, the primary's request "
    "id in `primary_request_id`), never returned, and never delay the answer.",
    openapi_extra=body_of(ShadowBody),
)
async def put_shadow(
    model_type: ModelTypePath, request: Request, services: ServicesDep, _: AdminDep
) -> RolloutState:
    body = await parsed(request, ShadowBody)
    rule = ShadowRule(version=body.version, fraction=body.fraction)
    return _state(await services.rollout.set_shadow(model_type, rule))


@router.delete(
    "/models/{model_type}/shadow",
    status_code=200,
    response_model=RolloutState,
    responses=WRITE_ERRORS,
    summary="Stop shadowing (admin)",
)
async def delete_shadow(
    model_type: ModelTypePath, services: ServicesDep, _: AdminDep
) -> RolloutState:
    return _state(await services.rollout.set_shadow(model_type, None))


@router.get(
    "/models/{model_type}/shadow/report",
    status_code=200,
    response_model=ShadowReport,
    responses=errors(401, 403, 404, 422),
    summary="How often the shadow agrees with the answers, over the last N (admin)",
)
async def report(
    model_type: ModelTypePath,
    services: ServicesDep,
    _: AdminDep,
    n: Annotated[int, Query(ge=1, le=10_000, description="shadow rows to compare")] = 1000,
) -> ShadowReport:
    return ShadowReport.model_validate(await services.rollout.shadow_report(model_type, n))
