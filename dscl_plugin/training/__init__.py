"""Stage-1 machinery on PyTorch Lightning: the run config (:mod:`.schema`, :mod:`.config`,
:mod:`.precision`), the method registry and built-in methods (:mod:`.registry`,
:mod:`.methods`), the trainer and its checkpoint IO, exact-resume callbacks, logging
adapters and device-side views. Imported lazily: ``import dscl_plugin`` loads none of it."""
