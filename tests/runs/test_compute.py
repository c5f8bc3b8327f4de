"""Where a run computes: the evaluation device and the CPU thread count of a run."""

import torch

from dscl_plugin.runs.compute import eval_device, torch_threads


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_eval_device_is_the_cpu_when_asked_or_without_gpu(monkeypatch):
    assert eval_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert eval_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert eval_device("gpu") == torch.device("cuda") and eval_device("cpu").type == "cpu"
