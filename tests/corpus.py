"""The test-time image corpus (pytest's view of :mod:`reference_images`, the one generator of
test images): ``build_corpus(root)`` writes the synthetic files in every format, mode and awkward
size and returns ``{name: path}``; ``real_photos()`` lists real photographs that installed
packages ship; ``natural_rgb`` makes natural-looking pixels."""

from __future__ import annotations

from reference_images import BIG, build_corpus, natural_rgb, real_photos, write_png16_rgb

__all__ = ["natural_rgb", "build_corpus", "real_photos", "write_png16_rgb", "BIG"]
