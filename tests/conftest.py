"""Shared fixtures: the devices and precisions that device-parametrised tests run on.

``device`` is CPU always and CUDA where a GPU is present (skipped otherwise, as in
Lightly's and PML's test suites), so the same test bodies run in CI on the CPU and on a
GPU machine (``benchmarks/gpu_check.sh``). ``amp_dtype`` is None (plain float32) or the
bf16/fp16 dtype of ``torch.autocast``.
"""

import pytest
import torch
from helpers import requires_cuda

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=requires_cuda),
]
AMP_DTYPES = [
    pytest.param(None, id="float32"),
    pytest.param(torch.bfloat16, id="bf16"),
    pytest.param(torch.float16, id="fp16"),
]


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch) -> torch.device:
    if request.param == "cuda":  # float32 means IEEE float32: no TF32 convolutions or matmuls
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    return torch.device(request.param)


@pytest.fixture(params=AMP_DTYPES)
def amp_dtype(request):
    return request.param
