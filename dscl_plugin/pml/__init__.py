"""DSCL for pytorch-metric-learning (PML): a loss (:mod:`.loss`), a miner (:mod:`.miner`)
and a MoCo-style memory (:mod:`.memory`); KCL and TSC in PML's MoCo-style call
(:mod:`.kcl`).

Importing ``dscl_plugin`` registers them in PML's namespaces:
``pytorch_metric_learning.losses.DSCLLoss``,
``pytorch_metric_learning.losses.DSCLCrossBatchMemory``,
``pytorch_metric_learning.losses.KCLLoss``, ``pytorch_metric_learning.losses.TSCLoss`` and
``pytorch_metric_learning.miners.DSCLMiner``. No PML name or class is changed.

Row layouts shared by :class:`DSCLLoss` and :class:`DSCLMiner`:

1. no ``ref_emb``: ``embeddings = cat([view1, view2])`` (2B rows),
   ``labels = cat([y, y])``; the augmentation partner of row i is row
   ``(i + B) mod 2B`` and every row is compared with every other row.
2. ``ref_emb`` given: ``ref_emb[i]`` is the partner of ``embeddings[i]`` for
   ``i < len(embeddings)``; further rows of ``ref_emb`` are memory entries. Anchors are
   compared with the other queries and every ``ref_emb`` row (MoCo style, the official
   DSCL candidates ``cat(q, k, queue)``); ``DSCLLoss(query_candidates=False)`` compares
   them with the ``ref_emb`` rows only (queries vs [keys, memory]).

PML's ``trainers.TwoStreamMetricLoss`` calls the miner in layout 2 (view 1 vs view 2)
and the loss in layout 1 with the mined pairs; ``trainers.MetricLossOnly`` has one view
per image, which neither layout accepts.

Distributed training: layout 1 cannot be used under PML's ``DistributedLossWrapper``
(the gathered rows no longer follow the partner rule; this is detected and raises).
Layout 2 with one ``ref_emb`` row per embedding works with ``efficient=False`` and
``efficient=True``; with extra memory rows in ``ref_emb`` only ``efficient=True``
keeps the partners aligned (``efficient=False`` interleaves ranks' memories; detected
when the labels disagree); with ``efficient=True`` the other queries are this
process's queries only. :class:`DSCLCrossBatchMemory` works with
``efficient=False`` (PML's only mode for memories). For DDP training the Lightning path
(``dscl_plugin.models.DSCLModel`` with ``gather_distributed=True``) is the reference.
"""

from dscl_plugin.pml.kcl import KCLLoss, TSCLoss
from dscl_plugin.pml.loss import DSCLLoss
from dscl_plugin.pml.memory import DSCLCrossBatchMemory
from dscl_plugin.pml.miner import DSCLMiner

__all__ = ["DSCLCrossBatchMemory", "DSCLLoss", "DSCLMiner", "KCLLoss", "TSCLoss"]
