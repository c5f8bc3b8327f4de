"""python -m benchmarks.official_loss_speed: it reads the official losses from clones under
--official-root (stand-ins here, with the official call signatures), times both sides on
the same inputs and records how far the two loss values are apart."""

import json
import textwrap

import pytest

from benchmarks import official_loss_speed

STAND_INS = {
    "Balanced-Contrastive-Learning/loss/contrastive.py": """
        import torch
        from dscl_plugin.losses import BCLLoss

        class BalSCL(torch.nn.Module):
            def __init__(self, cls_num_list=None, temperature=0.1):
                super().__init__()
                self.loss = BCLLoss(temperature)

            def forward(self, centers1, features, targets):
                return self.loss(features[:, 0], features[:, 1], targets, centers1) + 1.0
    """,
    "Parametric-Contrastive-Learning/PaCo/LT/losses.py": """
        import torch
        from dscl_plugin.losses import PaCoLoss as Ours

        class PaCoLoss(torch.nn.Module):
            def __init__(self, alpha, beta=1.0, gamma=1.0, supt=1.0, temperature=1.0,
                         base_temperature=None, K=128, num_classes=1000):
                super().__init__()
                self.alpha, self.temperature, self.K = alpha, temperature, K

            def forward(self, features, labels=None, sup_logits=None):
                b = (features.shape[0] - self.K) // 2
                loss = Ours(self.weight.view(-1) * 1e6, self.alpha, temperature=self.temperature)
                return loss(features[:b], features[b:2 * b], labels[:b], sup_logits,
                            features[2 * b:], labels[2 * b:], queue_normalized=True)
    """,
}


def _official_root(tmp_path):
    for relative, text in STAND_INS.items():
        path = tmp_path / "official" / relative
        path.parent.mkdir(parents=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path / "official"


def test_quick_run_times_both_sides_and_keeps_the_value_gap(tmp_path, capsys):
    out = tmp_path / "official.json"
    root = _official_root(tmp_path)
    official_loss_speed.main(["--official-root", str(root), "--quick", "--json", str(out)])
    data = json.loads(out.read_text())
    rows = {row["loss"]: row for row in data["rows"]}
    assert list(rows) == ["bcl", "paco"]
    assert rows["bcl"]["value_gap"] == pytest.approx(1.0)  # the stand-in adds 1
    assert rows["paco"]["value_gap"] < 1e-5  # the same loss up to the prior's rounding
    for row in rows.values():
        assert row["ratio"] == pytest.approx(row["ours_ms"] / row["official_ms"], rel=0.05)
    assert data["settings"]["official_commits"] == {
        "Balanced-Contrastive-Learning": "unknown", "Parametric-Contrastive-Learning": "unknown"
    }  # fmt: skip
    assert "| paco | 16 | 10 | 256 |" in capsys.readouterr().out


def test_a_missing_clone_names_the_folder_to_clone_into(tmp_path):
    with pytest.raises(ValueError, match=r"--official-root: .*contrastive.py not found; clone"):
        official_loss_speed.main(["--official-root", str(tmp_path), "--quick"])
