"""Request and response bodies of the HTTP service (pydantic models; they are the OpenAPI schema).

A raw query value is keyed by modality name, like everywhere in omnibind: ``values`` holds text, table rows
and numeric arrays as JSON, ``media`` holds image / audio file bytes as base64, ``vectors`` holds
embeddings already in the model's space (key ``""`` for a vector not tied to a modality).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

RawValue = str | float | list[float] | list[list[float]] | dict[str, float]


class SearchRequest(BaseModel):
    """A query: any mix of raw values, media, vectors and an item id (several make a composed query)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="Text for the index's one text modality (a shortcut).")
    values: dict[str, RawValue] = Field(
        default_factory=dict, description="modality -> raw value (text, table row, numbers)."
    )
    media: dict[str, str] = Field(
        default_factory=dict, description="modality -> base64 of an image (PNG/JPEG) or audio (WAV) file."
    )
    vectors: dict[str, list[float]] = Field(
        default_factory=dict, description="modality (or '') -> a query embedding of width D."
    )
    like: str | None = Field(None, description="Item id: more like this item (the item is left out).")
    like_modality: str | None = Field(None, description="Which embedding of the `like` item to use.")
    target: str | None = Field(None, description="Modality to rank; omitted ranks every modality.")
    k: int = Field(10, description="At most this many hits (1..max_k, see /v1/info).")
    where: dict[str, Any] | None = Field(
        None, description='Metadata filter: {"colour": "red", "size": {"gte": 2}, "split": ["a", "b"]}.'
    )
    min_score: float | None = Field(None, description="Stop before the first hit scoring below this.")
    max_gap: float | None = Field(None, description="Stop where the score drops by more than this.")
    include_items: bool = Field(False, description="Add each hit's stored values and media links.")


class HitOut(BaseModel):
    id: str
    score: float
    modality: str = Field(description="The modality whose embedding matched.")
    metadata: dict[str, Any]
    item: dict[str, Any] | None = Field(None, description="With include_items: the item's modalities.")


class SearchResponse(BaseModel):
    hits: list[HitOut]
    stopped_because: str = Field(description='"k", "min_score", "gap" or "exhausted".')
    method: str = Field(description='"exact" or "hnsw" (two-stage).')
    took_ms: float


class EmbedRequest(BaseModel):
    """Values of one modality to embed: raw ``values`` or base64 ``media`` (not both)."""

    model_config = ConfigDict(extra="forbid")

    modality: str
    values: list[RawValue] = Field(default_factory=list)
    media: list[str] = Field(default_factory=list, description="base64 image / audio files.")


class EmbedResponse(BaseModel):
    modality: str
    dim: int
    vectors: list[list[float]]


class ItemIn(BaseModel):
    """One item to add; a modality left out is absent for this item."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    values: dict[str, RawValue] = Field(default_factory=dict)
    media: dict[str, str] = Field(default_factory=dict, description="modality -> base64 file.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class AddItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn]
    replace: bool = Field(False, description="Replace items whose id is already in the index.")


class AddItemsResponse(BaseModel):
    added: int
    ids: list[str]


class DeleteResponse(BaseModel):
    deleted: str


class ModalityInfo(BaseModel):
    kind: str
    count: int


class BatchingInfo(BaseModel):
    """Dynamic batching of raw query values: settings, and encoder calls since the server started."""

    wait_ms: float
    max_batch: int
    batches: int
    values: int
    largest: int
    mean: float = Field(description="values per encoder call")


class InfoResponse(BaseModel):
    model: str
    dim: int
    joint_similarity: str
    items: int
    modalities: dict[str, ModalityInfo]
    limits: dict[str, int]
    batching: BatchingInfo | None = None
    torch_threads: int = Field(description="PyTorch intra-op threads of this server process")
    writes_enabled: bool
    auth_required: bool


class ItemOut(BaseModel):
    id: str
    metadata: dict[str, Any]
    modalities: dict[str, dict[str, Any]]


class Health(BaseModel):
    status: str
    items: int


class ErrorBody(BaseModel):
    message: str = Field(description="What went wrong and what to do about it.")
    type: str
    status: int
    details: list[Any] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
