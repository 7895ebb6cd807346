import numpy as np
import pytest
import torch
from torch import nn

from medfraud.graph.core import mean_adjacency
from medfraud.graph.models import HeteroSAGE, dropout, linear, mean_aggregate

SIZES = {"patient": 60, "doctor": 8, "pharmacy": 5, "facility": 3, "lab": 4}
RELATIONS = [("doctor", "treats", "patient"), ("patient", "rev_treats", "doctor"),
             ("pharmacy", "serves", "patient"), ("patient", "rev_serves", "pharmacy"),
             ("doctor", "works_at", "facility"), ("facility", "rev_works_at", "doctor"),
             ("patient", "knows", "patient"),
             ("lab", "tests_for", "doctor")]  # "lab" only sends messages


def _hetero(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = {t: torch.from_numpy(rng.normal(size=(n, 3 + k)).astype(np.float32))
         for k, (t, n) in enumerate(SIZES.items())}
    edges = {}
    for s, r, d in RELATIONS:
        m = 3 * max(SIZES[s], SIZES[d])
        # only the lower part of the destinations gets edges (isolated nodes stay), duplicates
        # happen by chance
        src = rng.integers(0, SIZES[s], m)
        dst = rng.integers(0, max(1, SIZES[d] - 1), m)
        edges[(s, r, d)] = torch.from_numpy(np.stack([src, dst]))
    return x, edges


def _reference(model: HeteroSAGE, x, edges) -> torch.Tensor:
    """The PyG path: HeteroConv of SAGEConv (scatter mean) on every type, then the head."""
    h = {t: torch.relu(model.project[t](v)) for t, v in x.items()}
    for conv in model.convs:
        out = conv(h, edges)
        h = {t: torch.relu(out[t]) + h[t] if t in out else h[t] for t in h}
        h = {t: nn.functional.dropout(v, model.dropout, model.training) for t, v in h.items()}
    return model.head(h[model.target])


@pytest.mark.parametrize("target", ["doctor", "patient", "lab"])
def test_hetero_sage_matches_pyg_heteroconv_values_and_gradients(target):
    x, edges = _hetero()
    torch.manual_seed(0)
    model = HeteroSAGE({t: v.shape[1] for t, v in x.items()}, list(edges), target, hidden=8,
                       layers=2).eval()  # no dropout: both paths are deterministic
    expected = _reference(model, x, edges)
    expected.square().sum().backward()
    want = {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    adjacency = {et: mean_adjacency(ei, SIZES[et[0]], SIZES[et[2]]) for et, ei in edges.items()}
    got = model(x, adjacency)
    assert got.shape == (SIZES[target], 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    got.square().sum().backward()
    for name, p in model.named_parameters():
        if want[name] is None:
            # parameters the target's logits do not depend on get no gradient either way
            assert p.grad is None or not p.grad.any(), name
        else:
            torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-5, msg=name)
    # edge_index tensors (converted on the fly) give the same logits
    torch.testing.assert_close(model(x, edges), got)


def test_hetero_sage_training_mode_is_seeded_and_errors_are_clear():
    x, edges = _hetero(1)
    adjacency = {et: mean_adjacency(ei, SIZES[et[0]], SIZES[et[2]]) for et, ei in edges.items()}
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = HeteroSAGE({t: v.shape[1] for t, v in x.items()}, list(edges), "doctor",
                           hidden=8, dropout=0.5)
        runs.append(model(x, adjacency))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    model.eval()
    assert not torch.equal(model(x, adjacency), runs[1])  # dropout was active in training
    with pytest.raises(KeyError, match=r"lacks node type\(s\) \['facility'\]"):
        model({t: v for t, v in x.items() if t != "facility"}, adjacency)
    with pytest.raises(KeyError, match="no features for the target type 'doctor'"):
        model({"patient": x["patient"]}, adjacency)


def test_mean_aggregate_sums_relations_and_checks_shapes():
    x, edges = _hetero(2)
    pairs = [(x[s][:, :2].contiguous(), mean_adjacency(ei, SIZES[s], SIZES[d]))
             for (s, _, d), ei in edges.items() if d == "patient"]
    assert len(pairs) == 3
    total = mean_aggregate(pairs)
    expected = sum(torch.sparse.mm(a.matrix, v) for v, a in pairs)
    torch.testing.assert_close(total, expected)
    # a relation without edges (nnz = 0) gives zeros, not the uninitialised output buffer
    empty = mean_adjacency(torch.zeros((2, 0), dtype=torch.long), 8, 60)
    for _ in range(3):
        assert not mean_aggregate([(x["doctor"], empty)]).any()
    with pytest.raises(ValueError, match="pair 0: x_src has 5 rows but the adjacency has 8"):
        mean_aggregate([(torch.zeros(5, 2), pairs[0][1])])
    with pytest.raises(ValueError, match="at least one"):
        mean_aggregate([])


def test_dropout_and_linear_helpers():
    x = torch.ones(400, 50)
    torch.manual_seed(0)
    a = dropout(x, 0.3, True)
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.3, True), a)  # seeded by the global generator
    kept = a != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.02
    torch.testing.assert_close(a[kept], torch.full((int(kept.sum()),), 1 / 0.7))
    assert dropout(x, 0.3, False) is x and dropout(x, 0.0, True) is x
    assert not dropout(x, 1.0, True).any()
    w = torch.randn(4, 6, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    inp = torch.randn(30, 6)
    linear(inp, w, b).sum().backward()
    gw, gb = w.grad.clone(), b.grad.clone()
    w.grad = b.grad = None
    nn.functional.linear(inp, w, b).sum().backward()
    torch.testing.assert_close(gw, w.grad)
    torch.testing.assert_close(gb, b.grad)
    torch.testing.assert_close(linear(inp, w), inp @ w.T)
