"""Model side: route pruned vision features and M-RoPE positions through the public entry points.

``forward`` and ``generate`` of Qwen-VL models accept precomputed ``mm_encoder_outputs`` and
explicit ``position_ids`` (layout (4, B, L): text, t, h, w). :func:`prepare_inputs` turns a wrapped
processor's output into exactly that; :func:`patch_model` makes ``model(**inputs)`` and
``model.generate(**inputs)`` call it whenever kept regions are present.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import transformers

from . import _compat
from .families import FAMILIES, VisualItem, family_of, full_grid_regions
from .processing import REGIONS_KEY, VIDEO_REGIONS_KEY

__all__ = ["patch_model", "prepare_inputs", "unpatch_model"]

_MODALITIES = {  # modality: (regions key, pixel key, grid key, code in mm_token_type_ids)
    "image": (REGIONS_KEY, "pixel_values", "image_grid_thw", 1),
    "video": (VIDEO_REGIONS_KEY, "pixel_values_videos", "video_grid_thw", 2),
}


def _check_regions(
    regions: Any, pixel_values: Any, grid_thw: Any, merge_size: int, modality: str = "image"
) -> torch.Tensor:
    """Validate a kept-regions tensor against its pixel rows and grids (``pixel_values`` /
    ``image_grid_thw`` for images, ``pixel_values_videos`` / ``video_grid_thw`` for videos).

    Returns it as int64 CPU (n, 7). Raises ValueError/TypeError naming what does not match.
    """
    key, pixel_key, grid_key, _ = _MODALITIES[modality]
    regions = torch.as_tensor(regions)
    if regions.dtype.is_floating_point or regions.dtype == torch.bool or regions.dtype.is_complex:
        raise TypeError(f"{key} must be an integer tensor, got dtype {regions.dtype}")
    regions = regions.to("cpu", torch.long)
    if regions.ndim != 2 or regions.shape[1] != 7:
        raise ValueError(
            f"{key} must have shape (num_kept, 7) ({modality}, level, t, row, col, h, w), got {tuple(regions.shape)}"
        )
    if pixel_values is None or grid_thw is None:
        raise ValueError(f"{key} needs the matching {pixel_key} and {grid_key}")
    m2 = merge_size * merge_size
    n = regions.shape[0]
    if pixel_values.shape[0] != n * m2:
        raise ValueError(
            f"{pixel_key} has {pixel_values.shape[0]} rows but {key} lists {n} kept units "
            f"({m2} rows each = {n * m2}); pass the processor output unmodified"
        )
    if n:
        _check_blocks(regions, torch.as_tensor(grid_thw).to("cpu", torch.long), merge_size, modality)
    return regions


def _check_blocks(regions: torch.Tensor, grid: torch.Tensor, merge_size: int, modality: str) -> None:
    """Regions (n >= 1, 7) are aligned blocks inside their items' unit grids, sorted, not overlapping;
    each h x w of a shape ``select_patches`` makes (a square of its level, or one side twice the
    other with the longer side's level)."""
    key, _, grid_key, _ = _MODALITIES[modality]
    item, level, t, row, col, bh, bw = regions.unbind(1)
    if int(item.min()) < 0 or int(item.max()) >= grid.shape[0]:
        raise ValueError(f"{key} {modality} indices must be in [0, {grid.shape[0]}) (rows of {grid_key})")
    if int(level.min()) < 1 or int(level.max()) > 30:
        raise ValueError(f"{key} levels must be in [1, 30], got {int(level.min())}..{int(level.max())}")
    side = 1 << (level - 1)
    shaped = ((bh == side) & ((bw == side) | (2 * bw == side))) | ((bw == side) & (2 * bh == side))
    if not bool(shaped.all()):
        i = int((~shaped).nonzero()[0, 0])
        raise ValueError(f"{key} row {i} {regions[i].tolist()}: h x w must be 2^(level-1) on a side and the "
                         f"other side the same or half of it")
    g = grid[item]
    hu, wu = g[:, 1] // merge_size, g[:, 2] // merge_size
    bad = (t < 0) | (t >= g[:, 0]) | (row < 0) | (col < 0) | (row % bh != 0) | (col % bw != 0)
    bad |= (row + bh > hu) | (col + bw > wu)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{key} row {i} {regions[i].tolist()} is not an aligned block inside {modality} "
            f"{int(item[i])}'s grid of {int(g[i, 0])} x {int(hu[i])} x {int(wu[i])} (t x units)"
        )
    span_t, span_r, span_c = (int(v.max()) + 1 for v in (g[:, 0], hu, wu))
    order = ((item * span_t + t) * span_r + row) * span_c + col
    if len(order) > 1 and not bool((order[1:] > order[:-1]).all()):
        raise ValueError(f"{key} must be sorted by ({modality}, t, row, col) without repeats")
    units = grid.prod(1) // (merge_size * merge_size)
    starts = torch.cumsum(units, 0) - units
    cells = []
    for h, w in torch.unique(regions[:, 5:], dim=0).tolist():
        sel = (bh == h) & (bw == w)
        first = starts[item[sel]] + t[sel] * hu[sel] * wu[sel]
        rr = row[sel][:, None, None] + torch.arange(h)[None, :, None]
        cc = col[sel][:, None, None] + torch.arange(w)[None, None, :]
        cells.append((first[:, None, None] + rr * wu[sel][:, None, None] + cc).reshape(-1))
    cells = torch.cat(cells)
    if cells.unique().numel() != cells.numel():
        raise ValueError(f"{key} has overlapping regions")


def _mrope_positions(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_ids: Mapping[int, int],
    items: Mapping[int, list[VisualItem]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(4, B, L) position ids (text, t, h, w) and (B, 1) rope deltas, like the stock ``get_rope_index``
    but with each visual item's own token count and positions.

    ``token_ids`` maps a modality code (1 image, 2 video) to its placeholder id; ``items[code]``
    lists that modality's items in prompt order. A run of placeholders is filled item by item;
    items with no kept token occupy no position. Raises ValueError when counts disagree.
    """
    bsz, length = input_ids.shape
    device = input_ids.device
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    queues = {code: iter(lst) for code, lst in items.items()}
    position_ids = torch.zeros(3, bsz, length, dtype=torch.long, device=device)
    deltas = []
    for bi in range(bsz):
        ids = input_ids[bi][mask[bi]].cpu()
        types = torch.zeros_like(ids)
        for code, tid in token_ids.items():
            types[ids == tid] = code
        out = _sequence_positions(types, queues)
        position_ids[:, bi, mask[bi]] = out.to(device)
        deltas.append((int(out.max()) + 1 if out.numel() else 0) - ids.numel())
    for code, queue in queues.items():
        if any(item.num_tokens for item in queue):
            raise ValueError(_count_message(code, "fewer placeholder tokens than kept tokens"))
    if attention_mask is None:
        text = torch.arange(length, device=device).expand(bsz, length)
    else:
        text = (attention_mask.long().cumsum(-1) - 1).masked_fill(~mask, 0)
    deltas = torch.tensor(deltas, device=device).unsqueeze(1)
    return torch.cat([text[None], position_ids]), deltas


def _sequence_positions(types: torch.Tensor, queues: Mapping[int, Iterator[VisualItem]]) -> torch.Tensor:
    """(3, n) (t, h, w) positions of one unpadded sequence whose tokens have modality codes
    ``types`` (0 text); each run of placeholders takes items from ``queues[code]`` in order."""
    out = torch.empty(3, types.numel(), dtype=torch.long)
    change = torch.nonzero(types[1:] != types[:-1]).flatten().add(1).tolist()
    cur = 0
    for start, end in zip([0, *change], [*change, types.numel()], strict=True):
        code = int(types[start]) if end > start else 0
        if code == 0:
            out[:, start:end] = torch.arange(cur, cur + end - start)
            cur += end - start
            continue
        k = start
        while k < end:
            item = next(queues[code], None)
            if item is None:
                raise ValueError(_count_message(code, "more placeholder tokens than kept tokens"))
            if item.num_tokens == 0:
                continue
            if k + item.num_tokens > end:
                raise ValueError(_count_message(code, "a placeholder run shorter than its item's kept tokens"))
            out[:, k : k + item.num_tokens] = item.positions + cur
            cur += item.extent
            k += item.num_tokens
    return out


def _count_message(code: int, what: str) -> str:
    name = {1: "image", 2: "video"}[code]
    return f"input_ids have {what} for the {name}s; use the wrapped processor's input_ids unmodified"


def prepare_inputs(model: torch.nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a wrapped processor's output into stock ``forward`` / ``generate`` kwargs.

    Without ``image_kept_regions`` / ``video_kept_regions`` the inputs are returned unchanged (as
    a dict). Otherwise kept units run through the vision tower (one feature per kept region; a
    modality without kept regions runs the stock encoder), and the result holds
    ``mm_encoder_outputs`` instead of ``pixel_values`` / ``pixel_values_videos``, plus
    ``position_ids`` (4, B, L). Use the result for one call: ``generate`` with beams expands
    ``mm_encoder_outputs`` in place. Sets ``rope_deltas`` on the model like the stock forward.
    The stock methods take ``mm_encoder_outputs`` from transformers 5.19 on; with older ones pass
    the result to a :func:`patch_model`-ed model.

    Raises:
        TypeError: ``model`` is not a supported Qwen-VL model.
        ValueError: the kept regions do not match the pixel rows / grids / the placeholders in
            ``input_ids``, or ``position_ids`` / ``mm_encoder_outputs`` / ``inputs_embeds`` are
            passed as well.

    >>> from entropy_prune.qwen import wrap_processor
    >>> from entropy_prune.qwen.testing import IMAGE, TEXT, make_model, make_processor, prompts, textured_image
    >>> processor = wrap_processor(make_processor(), alpha=0.5)
    >>> inputs = processor(images=[textured_image(112, 112, 0)], text=prompts(processor, [[IMAGE, TEXT]]),
    ...                    return_tensors="pt")
    >>> sorted(prepare_inputs(make_model(processor.tokenizer), inputs))
    ['attention_mask', 'image_grid_thw', 'input_ids', 'mm_encoder_outputs', 'mm_token_type_ids', 'position_ids']
    """
    family = family_of(model)
    inputs = dict(inputs)
    regions = {name: inputs.pop(keys[0], None) for name, keys in _MODALITIES.items()}
    if all(r is None for r in regions.values()):
        return inputs
    for key in ("position_ids", "mm_encoder_outputs", "inputs_embeds"):
        if inputs.get(key) is not None:
            raise ValueError(
                f"{key} cannot be combined with kept regions: the adapter computes them from the kept regions"
            )
    input_ids = inputs.get("input_ids")
    if input_ids is None:
        raise ValueError("kept regions need input_ids (the placeholders locate each image and video)")
    base = family.base(model)
    m = family.merge_size(base)
    mm, items, token_ids = {}, {}, {}
    for name, (_, pixel_key, grid_key, code) in _MODALITIES.items():
        token_ids[code] = getattr(base.config, f"{name}_token_id")
        items[code] = []
        pixels, grid = inputs.pop(pixel_key, None), inputs.get(grid_key)
        if regions[name] is not None:
            kept = _check_regions(regions[name], pixels, grid, m, name)
            grid = torch.as_tensor(grid).to("cpu", torch.long)
            if len(kept):  # nothing kept at all: no tower run, no features, no placeholders
                mm[name] = family.encode(base, torch.as_tensor(pixels), grid, kept)
        elif pixels is not None:
            grid = torch.as_tensor(grid).to("cpu", torch.long)
            kept = full_grid_regions(grid, m)
            pixels = torch.as_tensor(pixels)
            mm[name] = getattr(base, f"get_{name}_features")(pixels, grid.to(pixels.device), return_dict=True)
        else:
            continue
        items[code] = family.items(base, name, grid, kept, inputs)
    position_ids, deltas = _mrope_positions(input_ids, inputs.get("attention_mask"), token_ids, items)
    base.rope_deltas = deltas
    inputs["mm_encoder_outputs"] = mm
    inputs["position_ids"] = position_ids
    return inputs


def _with_input_ids(method: Any, first: str, args: tuple, kwargs: dict) -> dict:
    """Fold positional arguments of ``method`` into kwargs, naming the first one ``input_ids``."""
    bound = inspect.signature(method).bind_partial(*args, **kwargs).arguments
    extra = bound.pop("kwargs", None) or bound.pop("model_kwargs", None) or {}
    bound.update(extra)
    if first != "input_ids" and bound.get(first) is not None:
        bound["input_ids"] = bound.pop(first)
    return bound


def _has_regions(kwargs: Mapping[str, Any]) -> bool:
    return any(kwargs.get(keys[0]) is not None for keys in _MODALITIES.values())


def _expand_size(model: torch.nn.Module, kwargs: dict) -> int:
    """Sequences ``generate`` makes per prompt with these kwargs (beams x returned sequences)."""
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    return math.prod(int(kwargs.get(k) or getattr(config, k, None) or 1) for k in ("num_beams", "num_return_sequences"))


def _call(model: torch.nn.Module, stock: Any, first: str, args: tuple, kwargs: dict) -> Any:
    """Run the stock ``forward``/``generate`` function ``stock`` (``first`` names its first
    parameter after ``self``) of a patched model on a wrapped processor's output or
    :func:`prepare_inputs`' result. ``stock`` is called with ``model`` explicitly: Dynamo, resuming
    after a graph break, rebuilt a bound method as the patched one (endless recursion)."""
    bound = functools.partial(stock, model)
    if _has_regions(kwargs):
        args, kwargs = (), prepare_inputs(model, _with_input_ids(bound, first, args, kwargs))
    if kwargs.get("mm_encoder_outputs") is None or _compat.MM_ENCODER_OUTPUTS:
        return bound(*args, **kwargs)
    if args:  # prepare_inputs' result passed with positional arguments
        kwargs = _with_input_ids(bound, first, args, kwargs)
    expand = _expand_size(model, kwargs) if first == "inputs" else 1
    return _compat.encoder_outputs_call(bound, family_of(model).base(model), kwargs, expand)


class _Patched:
    """Base of the classes :func:`patch_model` gives a model: its stock class with ``forward`` (and
    ``generate``) taking a wrapped processor's output. A class, not instance attributes, so
    copies, pickles and compiled models of a patched model run patched, with their own weights."""

    _stock_class: type


def _routed(stock: Any, first: str) -> Any:
    """The stock method ``stock`` (a function), routed through :func:`_call`; same signature
    (transformers inspects it)."""

    @functools.wraps(stock)
    def method(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        return _call(self, stock, first, args, kwargs)

    return method


_PATCHED: dict[str, type] = {}


def _patched_class(stock: type) -> type:
    """``_Patched + stock``, named like ``stock`` (saved configs name the stock architecture) and
    reachable for pickle as ``entropy_prune.qwen.modeling.Patched<stock>``."""
    qualname = f"Patched{stock.__name__}"
    if qualname not in _PATCHED:
        namespace = {
            "__module__": __name__,
            "__qualname__": qualname,
            "_stock_class": stock,
            "forward": _routed(stock.forward, "input_ids"),
        }
        if hasattr(stock, "generate"):
            namespace["generate"] = _routed(stock.generate, "inputs")
        _PATCHED[qualname] = type(stock.__name__, (_Patched, stock), namespace)
    return _PATCHED[qualname]


def __getattr__(name: str) -> type:
    """Recreate a patched class on first lookup (unpickling in a fresh process)."""
    stock = getattr(transformers, name.removeprefix("Patched"), None) if name.startswith("Patched") else None
    if isinstance(stock, type) and any(issubclass(stock, f.model_classes) for f in FAMILIES):
        return _patched_class(stock)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def patch_model(model: torch.nn.Module) -> torch.nn.Module:
    """Make ``model(**inputs)`` and ``model.generate(**inputs)`` accept a wrapped processor's output.

    Changes ``model``'s class to a subclass of its own (same name, same weights), so
    ``copy.deepcopy``, ``pickle`` / ``torch.save`` and ``torch.compile`` keep it patched.
    Idempotent; undo with :func:`unpatch_model`. Inputs without ``image_kept_regions`` /
    ``video_kept_regions`` go to the stock methods untouched. Returns ``model``.
    TypeError for a model outside the supported Qwen-VL families.

    >>> from entropy_prune.qwen import wrap_processor
    >>> from entropy_prune.qwen.testing import IMAGE, TEXT, make_model, make_processor, prompts, textured_image
    >>> processor = wrap_processor(make_processor(), alpha=0.5, mode="drop")
    >>> model = patch_model(make_model(processor.tokenizer))
    >>> inputs = processor(images=[textured_image(112, 112, 0)], text=prompts(processor, [[IMAGE, TEXT]]),
    ...                    return_tensors="pt")
    >>> int((inputs["input_ids"] == model.config.image_token_id).sum())  # one placeholder per kept unit
    8
    >>> model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]
    True
    """
    family_of(model)
    if not isinstance(model, _Patched):
        model.__class__ = _patched_class(type(model))
    return model


def unpatch_model(model: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`patch_model` (no-op on an unpatched model). Returns ``model``."""
    if isinstance(model, _Patched):
        model.__class__ = model._stock_class
    return model


def _guarded(method: Any, name: str) -> Any:
    """``method`` of a stock class, refusing kept regions (a wrapped processor's output) on a model
    that :func:`patch_model` has not patched, where they would fail deep inside the tower (and,
    before transformers 5.19, ``mm_encoder_outputs``, which the stock methods would ignore)."""

    @functools.wraps(method)
    def guarded(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self, _Patched):
            given = [keys[0] for keys in _MODALITIES.values() if kwargs.get(keys[0]) is not None]
            if not _compat.MM_ENCODER_OUTPUTS and kwargs.get("mm_encoder_outputs") is not None:
                given.append(f"mm_encoder_outputs (which transformers {transformers.__version__} does not take)")
            if given:
                raise ValueError(
                    f"{type(self).__name__}.{name} got {', '.join(given)}, but the model is not patched: "
                    f"call entropy_prune.qwen.patch_model(model) once before using it"
                )
        return method(self, *args, **kwargs)

    guarded._entropy_prune_guard = True
    return guarded


def _install_guards() -> None:
    """Guard ``forward`` and ``generate`` of every supported stock model class (once)."""
    for family in FAMILIES:
        for cls in family.model_classes:
            for name in ("forward", "generate"):
                method = getattr(cls, name, None)
                if method is not None and not getattr(method, "_entropy_prune_guard", False):
                    setattr(cls, name, _guarded(method, name))


_install_guards()
