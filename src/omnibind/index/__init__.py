"""Index and search: an on-disk store of embedded items, searched in memory by any modality or several.

See ``docs/search.md``. The public names::

    Index, Query, SearchSettings, SearchResult, Hit, parse_where, and the errors IndexStoreError,
    ModelMismatchError, SearchError, UnknownItemError (all ``OmnibindError``).
"""

from omnibind.index.index import Index as Index
from omnibind.index.query import Query as Query
from omnibind.index.search import Hit as Hit
from omnibind.index.search import SearchResult as SearchResult
from omnibind.index.search import SearchSettings as SearchSettings
from omnibind.index.search import parse_where as parse_where
from omnibind.index.store import IndexStoreError as IndexStoreError
from omnibind.index.store import ModelMismatchError as ModelMismatchError
from omnibind.index.store import SearchError as SearchError
from omnibind.index.store import UnknownItemError as UnknownItemError

__all__ = [
    "Hit",
    "Index",
    "IndexStoreError",
    "ModelMismatchError",
    "Query",
    "SearchError",
    "SearchResult",
    "SearchSettings",
    "UnknownItemError",
    "parse_where",
]
