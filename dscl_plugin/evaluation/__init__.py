"""Evaluation of frozen features, without PyTorch Lightning: feature extraction
(:mod:`.features`), linear probes (:mod:`.probes`), shot-group and kNN metrics
(:mod:`.metrics`), metric files and tables (:mod:`.reports`), figures (:mod:`.figures`),
retrieval (:mod:`.retrieval`, :mod:`.retrieval_figures`) and the pull-gradient-ratio
picture (:mod:`.diagnostics`)."""
