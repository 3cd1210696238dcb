"""Model cards for the front ends: a version's card page, and two versions side by side.

Reads the card files beside the artifact (common/cards/store.py) on a thread, since the
store is blocking (boto3), and renders them without any ML library."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from common.cards.page import CardView, card_html, compare_html
from common.cards.store import read_card
from common.errors import InvalidInput, StoreUnavailable
from common.registry import check_name
from common.services.models import ModelService
from common.store import ObjectStore

T = TypeVar("T")


class CardService:
    def __init__(self, models: ModelService, store: ObjectStore) -> None:
        self.models = models
        self.store = store

    async def card(self, model_type: str, version: str, base_url: str) -> str:
        """The card of one version (ModelNotFound if there is no such version); a version
        whose artifact was deleted still has its card."""
        return card_html(await self._view(model_type, version, base_url))

    async def compare(self, model_type: str, versions: str, base_url: str) -> str:
        """Two versions' cards side by side: `versions` is "A,B"."""
        first, second = parse_versions(versions)
        left = await self._view(model_type, first, base_url)
        right = await self._view(model_type, second, base_url)
        return compare_html(left, right)

    async def _view(self, model_type: str, version: str, base_url: str) -> CardView:
        meta = await self.models.metadata(model_type, version)
        files = await self._call(read_card, self.store, meta)
        schema = self.models.validator(meta).json_schema()
        return CardView(meta, files, schema, base_url)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(function, *args)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise StoreUnavailable(f"the store failed ({type(exc).__name__})") from exc


def parse_versions(versions: str) -> tuple[str, str]:
    """`versions` "1,2" -> ("1", "2"); InvalidInput (422) naming the problem for anything else."""
    names = [name.strip() for name in versions.split(",")]
    if len(names) != 2 or not all(names):
        raise InvalidInput(
            f"versions must name exactly two versions, comma-separated (e.g. versions=1,2); "
            f"got {versions[:100]!r}"
        )
    return check_name(names[0], "version"), check_name(names[1], "version")
