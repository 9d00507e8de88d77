"""aot-planner's public Python API.

>>> import planner
>>> graph = planner.capture("tiny-llama", seq_len=16)
>>> graph.param_count
250432
"""

from codegen import codegen
from planner.api import capture, estimate, inspect
from planner.planning import plan

__version__ = "0.1.0"
__all__ = ["__version__", "capture", "codegen", "estimate", "inspect", "plan"]
