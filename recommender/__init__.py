"""recommender: related articles for the "See also" and "You may also like" slots of news sites.

    from recommender import Recommender
    rec = Recommender.open("indexes/news")
    rec.page("a123")   # {"see_also": [...], "you_may_also_like": [...]}
"""

from .articles import Article, LoadReport, Problem, load_articles, read_articles
from .build import BuildReport, build_index
from .config import Config, Filters, RankingConfig, SlotPolicy, load_config
from .embedding import Embedder, HashingEmbedder, SentenceTransformerEmbedder, load_embedder
from .engines import LocalEngine, RayEngine
from .errors import (
    ArticleNotFound,
    ConfigError,
    DatasetError,
    EngineError,
    IndexCorrupt,
    IndexLocked,
    IndexNotFound,
    InputError,
    InvalidArticle,
    InvalidInput,
    ModelMismatch,
    RecommenderError,
    RemovalRefused,
    RuntimeUnavailable,
    StorageError,
    UnknownSlot,
)
from .ranking import Recommendation
from .recommender import PageMemo, Recommender
from .samples import sample_corpus_path

__all__ = [
    "Article", "ArticleNotFound", "BuildReport", "Config", "ConfigError", "DatasetError",
    "Embedder", "EngineError", "Filters",
    "HashingEmbedder",
    "IndexCorrupt", "IndexLocked", "IndexNotFound", "InputError", "InvalidArticle",
    "InvalidInput", "LoadReport", "LocalEngine", "ModelMismatch", "PageMemo", "Problem",
    "RankingConfig",
    "RayEngine", "Recommendation", "Recommender",
    "RecommenderError", "RemovalRefused", "RuntimeUnavailable", "SentenceTransformerEmbedder",
    "SlotPolicy",
    "StorageError", "UnknownSlot",
    "build_index", "load_articles", "load_config", "load_embedder", "read_articles",
    "sample_corpus_path",
]
__version__ = "0.1.0"
