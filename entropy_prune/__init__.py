"""entropy_prune: score image regions at several scales and keep fewer, well-chosen VLM tokens.

Public API: :func:`entropy_maps`, :func:`detail_maps`, :func:`select_patches`,
:func:`reconstruct`, :class:`ScoreMaps`, :class:`Selection`. Model adapters live in submodules
(``entropy_prune.qwen``) and are the only code that imports ``transformers``.
"""

from .reconstruct import reconstruct
from .scores import ScoreMaps, detail_maps, entropy_maps
from .selection import Selection, select_patches

__all__ = ["ScoreMaps", "Selection", "detail_maps", "entropy_maps", "reconstruct", "select_patches"]
__version__ = "0.1.0"
