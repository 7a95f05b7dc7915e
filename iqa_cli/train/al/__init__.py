"""Active learning for AL-IQA: the selection rule (`selection`), the signals it combines (`signals`),
and choosing the next images to label outside a training run (`labelling`, `iqa al select`)."""
