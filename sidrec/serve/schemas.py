"""Request and response bodies of the HTTP API (pydantic: validated before a request joins a batch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_K = 1000
MAX_BATCH_HISTORIES = 1024
MAX_ITEMS_PER_WRITE = 1000

ItemId = str | int


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


class RecommendOptions(_Strict):
    k: int = Field(10, ge=1, le=MAX_K, description="items to return")
    exclude_seen: bool = Field(True, description="leave the history's items out of the answer")
    cold_share: float = Field(0.0, ge=0.0, le=1.0, description="share of slots reserved for new items (epsilon)")
    on_unknown: Literal["error", "skip"] = Field(
        "error", description="unknown history ids: 422 listing them, or skip them (the answer counts them)")


class RecommendRequest(RecommendOptions):
    history: list[ItemId] = Field(..., description="item ids, oldest first", examples=[["B0001", "B0002"]])


class BatchRecommendRequest(RecommendOptions):
    histories: list[list[ItemId]] = Field(..., min_length=1, max_length=MAX_BATCH_HISTORIES)


class ScoredItem(BaseModel):
    item_id: str
    score: float | None  # None only where the score is not finite
    title: str | None


class Ranked(BaseModel):
    items: list[ScoredItem]
    history_used: int = Field(..., description="history items the model read (the last ones, up to its window)")
    history_truncated: bool = Field(False, description="the history was longer than the model's window; "
                                                       "exclude_seen still applied to all of it")
    skipped_unknown: int = 0


class RecommendResponse(Ranked):
    catalog_version: int


class BatchRecommendResponse(BaseModel):
    results: list[Ranked]
    catalog_version: int


class NewItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # text fields of the tokenizer's template (title, brand, ...)
    item_id: ItemId


class AddItemsRequest(_Strict):
    items: list[NewItem] = Field(..., min_length=1, max_length=MAX_ITEMS_PER_WRITE)


class AddItemsResponse(BaseModel):
    added: list[str]
    catalog_version: int


class RemoveItemsRequest(_Strict):
    item_ids: list[ItemId] = Field(..., min_length=1, max_length=MAX_ITEMS_PER_WRITE)


class RemoveItemsResponse(BaseModel):
    removed: int
    catalog_version: int


class ItemInfo(BaseModel):
    item_id: str
    title: str | None
    semantic_id: list[int]
    status: Literal["active", "removed"]
    added_after_training: bool
    added_at: str | None
    removed_at: str | None
    catalog_version: int


class SnapshotResponse(BaseModel):
    snapshot: str | None
    catalog_version: int
