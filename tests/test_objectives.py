import math

import pytest
import torch

from bioscale.errors import ConfigError
from bioscale.objectives import registry as objectives
from bioscale.train.loop import Network


class ConstantLogits(torch.nn.Module):
    """A model whose head returns fixed logits: loss values can be computed by hand."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return x, {"y": self.logits}


def test_registry_lists_and_rejects():
    assert {"supervised", "ibp"} <= set(objectives.names())
    with pytest.raises(ConfigError, match=r"unknown objective 'ibpp'.*ibp"):
        objectives.get("ibpp")
    with pytest.raises(ConfigError, match="unknown key 'adversary'"):
        objectives.build("ibp", {"adversary": 1.0})


@pytest.mark.parametrize("name", ["supervised", "ibp"])
def test_uniform_logits_give_log_num_classes(name):
    model = ConstantLogits(torch.zeros(4, 5))
    terms = objectives.build(name).loss_terms(
        model, {"x": torch.zeros(4, 3), "y": torch.tensor([0, 1, 2, 3])}
    )
    assert set(terms) >= {"loss", "ce"}
    assert terms["loss"].item() == pytest.approx(math.log(5), rel=1e-6)


def test_confident_correct_logits_and_label_smoothing():
    logits = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    y = torch.tensor([0, 1])
    plain = objectives.build("supervised").loss_terms(ConstantLogits(logits), {"x": y, "y": y})
    assert plain["loss"].item() == pytest.approx(math.log(1 + math.exp(-10)), rel=1e-3)
    smooth = objectives.build("ibp", {"label_smoothing": 0.2}).loss_terms(
        ConstantLogits(logits), {"x": y, "y": y}
    )
    # (1 − 0.2 + 0.1)·CE(correct) + 0.1·CE(wrong)
    expected = 0.9 * math.log(1 + math.exp(-10)) + 0.1 * (10 + math.log(1 + math.exp(-10)))
    assert smooth["loss"].item() == pytest.approx(expected, rel=1e-4)


def test_groups_each_objective_trains_on():
    assert objectives.build("supervised").train_groups() == frozenset({"seen"})
    assert objectives.build("ibp").train_groups() == frozenset({"seen", "extra"})


def test_loss_backpropagates_into_the_backbone():
    from bioscale.models.ladder import get_rung

    objective = objectives.build("ibp")
    backbone = get_rung("debug").build((6,))
    net = Network(backbone, objective.build_heads(backbone.embed_dim, {"y": 3}))
    terms = objective.loss_terms(net, {"x": torch.randn(8, 6), "y": torch.randint(0, 3, (8,))})
    terms["loss"].backward()
    assert backbone.stem[0].weight.grad is not None
