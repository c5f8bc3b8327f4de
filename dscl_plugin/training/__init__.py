"""The parts of a run on PyTorch Lightning: the run config (:mod:`.schema`, :mod:`.presets`,
:mod:`.config`, :mod:`.validation`, :mod:`.precision`), the method registry
(:mod:`.registry`; the methods are :mod:`dscl_plugin.methods`), and stage 1's data module
(:mod:`.data`, :mod:`.device_views`), trainer (:mod:`.trainer`), checkpoint IO, exact
resume and logging adapters. Imported lazily: ``import dscl_plugin`` loads none of it."""
