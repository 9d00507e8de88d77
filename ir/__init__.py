"""The planner's intermediate representation.

`ir` owns the Graph data types, capture from torch.fx / torch.export, the text printer, JSON
(de)serialisation, per-phase cost views, per-layer KV / state caches (`ir.kv_cache`), MoE facts
(`ir.moe`) and verifiers. It makes no policy decisions.
"""

from ir.cache_spec import CacheSpec
from ir.errors import UserError
from ir.graph import AttentionSpec, ExpertSpec, Graph, Layer, OpNode, TensorSpec

__all__ = ["AttentionSpec", "CacheSpec", "ExpertSpec", "Graph", "Layer", "OpNode", "TensorSpec", "UserError"]
