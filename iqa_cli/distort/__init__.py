"""Synthetic distortions: the 30 types of VIPNet's DPM pretraining and the generator of labelled caches.

- `registry`: the table of types (`TYPES`, `get_type`), DPM class ids (`class_id`, `type_level`).
- one module per family (`blur`, `color`, `compression`, `noise`, `tone`, `spatial`, `chromatic`):
  each type is a pure function `f(image uint8 HxWx3, level 1..5, rng) -> uint8 HxWx3`.
- `generate.generate_distorted`, `merge.merge_parts`, `preview.write_preview`, `refs.list_references`.
"""

from iqa_cli.distort.base import NotApplicable
from iqa_cli.distort.registry import NUM_CLASSES, NUM_TYPES, TYPES, class_id, get_type, type_level

__all__ = ["NUM_CLASSES", "NUM_TYPES", "TYPES", "NotApplicable", "class_id", "get_type", "type_level"]
