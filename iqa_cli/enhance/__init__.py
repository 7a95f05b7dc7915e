"""IEIT's intermediary (enhanced) images: a built-in classical enhancement, the enhanced-image file
stored beside a cache, and the classifier-confidence selection rule.

* `ops`: the enhancement itself (torch, runs on CPU or GPU): adaptive gamma correction for dark
  images, Richardson-Lucy deconvolution for blurred ones (see its docstring for methods and thresholds).
* `classifier`: the ImageNet classifier (DeiT-S by default) and the rule "keep E iff max softmax(E) >=
  max softmax(I)".
* `store`: the `<cache>.enhanced.h5` file (same image layout and order as its cache, tied to it by a
  digest) and the paired view of a cache that IEIT trains on.
* `prepare`: `enhance_cache`, what `iqa prepare enhance` and `iqa prepare <dataset> --enhance` run.

This package's root imports nothing heavy (the CLI reads `DEFAULT_CLASSIFIER` to build its options).
"""

DEFAULT_CLASSIFIER = "deit_small_patch16_224"  # the authors' selection classifier (a weights-store name)
