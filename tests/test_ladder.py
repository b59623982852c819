import pytest
import torch

from bioscale.errors import ConfigError
from bioscale.models.ladder import count_parameters, get_rung, rung_names
from bioscale.models.mlp import DEPTHS, WIDTHS
from bioscale.objectives import registry as objectives
from bioscale.train.loop import Network


def test_ladder_has_the_published_grid_and_debug():
    names = rung_names()
    assert "debug" in names
    for w in WIDTHS:
        for depth in DEPTHS:
            assert f"mlp:w{w}-l{depth}" in names


def test_unknown_rung_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown model rung 'mlp:w256-l4'.*mlp:w256-l3"):
        get_rung("mlp:w256-l4")


def test_backbone_shapes_and_parameter_count():
    rung = get_rung("mlp:w128-l3")
    net = rung.build((40,))
    assert net(torch.randn(5, 40)).shape == (5, 128)
    # stem: Linear(40→128) + BN(128); 3 blocks of Linear(128→128) + BN(128)
    expected = (40 * 128 + 128) + 2 * 128 + 3 * ((128 * 128 + 128) + 2 * 128)
    assert count_parameters(net) == expected


def test_N_excludes_heads_and_grows_with_the_rung():
    sizes = [
        count_parameters(get_rung(n).build((64,)))
        for n in ("debug", "mlp:w128-l1", "mlp:w256-l3", "mlp:w1024-l9")
    ]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    objective = objectives.build("ibp")
    backbone = get_rung("debug").build((64,))
    heads = objective.build_heads(backbone.embed_dim, {"y": 10})
    net = Network(backbone, heads)
    assert count_parameters(net) - count_parameters(backbone) == 32 * 10 + 10


def reference_forward(net, x, residual_blocks):
    """SEEDS §1 by hand: stem Linear+BN, then per block Linear→BN→(Dropout: eval)→GELU, adding the
    block's input on ``residual_blocks`` (0-based)."""
    F = torch.nn.functional

    def bn(norm, h):
        return F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias)

    h = bn(net.stem[1], F.linear(x, net.stem[0].weight, net.stem[0].bias))
    for i, block in enumerate(net.blocks):
        out = F.gelu(bn(block.norm, F.linear(h, block.linear.weight, block.linear.bias)))
        h = out + h if i in residual_blocks else out
    return h


def test_residual_every_other_block():
    """Residuals around blocks 1, 3, … (every other block, SEEDS §1): the forward pass equals the
    hand-built one with exactly those, and differs from no residuals, from residuals everywhere
    and from the other half."""
    torch.manual_seed(0)
    net = get_rung("mlp:w128-l6").build((8,)).eval()
    for norm in [net.stem[1], *(b.norm for b in net.blocks)]:  # non-trivial BN statistics
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
        torch.nn.init.uniform_(norm.bias, -0.5, 0.5)
    x = torch.randn(4, 8)
    with torch.no_grad():
        got = net(x)
        torch.testing.assert_close(got, reference_forward(net, x, {1, 3, 5}))
        for wrong in (set(), {0, 1, 2, 3, 4, 5}, {0, 2, 4}):
            assert not torch.allclose(got, reference_forward(net, x, wrong), atol=1e-3)


@pytest.mark.parametrize("family", ["resnet", "vit", "convnext"])
def test_timm_debug_rungs_embed_five_channel_crops(family):
    rung = get_rung(f"{family}:debug")
    net = rung.build((5, 32, 32))
    emb = net(torch.randn(2, 5, 32, 32))
    assert emb.shape == (2, net.embed_dim)
    assert rung.family == family
    assert count_parameters(net) < 500_000


def test_image_ladders_grow_and_reject_profiles():
    sizes = [
        count_parameters(get_rung(n).build((5, 64, 64)))
        for n in ("resnet:debug", "resnet:r10", "resnet:r18", "resnet:r34")
    ]
    assert sizes == sorted(sizes)
    with pytest.raises(ValueError, match=r"needs image inputs \(C, H, W\)"):
        get_rung("resnet:debug").build((128,))
    with pytest.raises(ValueError, match=r"needs profile inputs \(F,\)"):
        get_rung("debug").build((5, 32, 32))
