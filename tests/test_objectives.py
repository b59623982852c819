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


def test_supervised_target_trains_a_multi_target_compound_on_each_of_its_targets():
    from types import SimpleNamespace

    import numpy as np

    objective = objectives.build("supervised", {"task": "target"})
    index = SimpleNamespace(target=np.array(["EGFR|ERBB2", "EGFR", "KIT", None], dtype=object))
    rows = np.arange(4)
    space = objective.label_space(index, rows)
    # split as the target probes split them: "EGFR|ERBB2" is two classes, not a third
    assert space.classes == {"y": ["EGFR", "ERBB2", "KIT"]}
    coded = space.encode(index, rows, objective.raw_labels(index))
    assert coded.rows.tolist() == [0, 1, 2]  # the unlabelled row is dropped
    assert coded.columns["y"].tolist() == [0, 0, 2] and coded.columns["y_1"].tolist() == [1, -1, -1]

    logits = torch.zeros(1, 3, requires_grad=True)
    batch = {"x": torch.zeros(1, 2), "y": torch.tensor([0]), "y_1": torch.tensor([1])}
    loss = objective.loss_terms(ConstantLogits(logits), batch)["loss"]
    assert loss.item() == pytest.approx(math.log(3), rel=1e-6)  # mean CE over its two targets
    loss.backward()
    # gradient descent raises both targets' logits (softmax 1/3 minus 1/2 each), lowers the other
    assert logits.grad[0, 0].item() == pytest.approx(1 / 3 - 1 / 2, rel=1e-5)
    assert logits.grad[0, 1].item() == pytest.approx(1 / 3 - 1 / 2, rel=1e-5)
    assert logits.grad[0, 2].item() == pytest.approx(1 / 3, rel=1e-5)
    # a padded second target (-1) leaves a sample with one target its plain CE
    one = {"x": torch.zeros(2, 2), "y": torch.tensor([0, 2]), "y_1": torch.tensor([1, -1])}
    value = objective.loss_terms(ConstantLogits(torch.tensor([[2.0, 0.0, 0.0]] * 2)), one)["loss"]
    lse = math.log(math.exp(2.0) + 2.0)
    assert value.item() == pytest.approx(((lse - 2.0) + lse + lse) / 3, rel=1e-6)
