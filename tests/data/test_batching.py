"""TensorBatchDataset and batch_loader: whole batches by index, full epochs, shape checks."""

from __future__ import annotations

import pytest
import torch

from lit_dl.data import TensorBatchDataset, batch_loader


def make_dataset(n: int = 23) -> TensorBatchDataset:
    x_num = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
    x_cat = torch.arange(n * 2, dtype=torch.long).reshape(n, 2) % 5
    y = torch.arange(n)  # each row's own index: tells which rows a batch holds
    return TensorBatchDataset(x_num, x_cat, y)


def test_getitems_returns_whole_batch_by_index():
    ds = make_dataset()
    indices = [4, 0, 17, 4, 22]
    batch = ds.__getitems__(indices)
    assert len(batch) == 3
    index = torch.tensor(indices)
    for got, tensor in zip(batch, ds.tensors, strict=True):
        assert torch.equal(got, tensor[index])


def test_getitem_returns_one_row():
    ds = make_dataset()
    x_num, x_cat, y = ds[5]
    assert torch.equal(x_num, ds.tensors[0][5])
    assert torch.equal(x_cat, ds.tensors[1][5])
    assert y.item() == 5
    assert len(ds) == 23


def test_sequential_loader_batches_match_tensor_slices():
    ds = make_dataset()
    batches = list(batch_loader(ds, batch_size=5, shuffle=False))
    assert [len(b[2]) for b in batches] == [5, 5, 5, 5, 3]
    for k, (x_num, x_cat, y) in enumerate(batches):
        rows = slice(5 * k, 5 * k + len(y))
        assert torch.equal(x_num, ds.tensors[0][rows])
        assert torch.equal(x_cat, ds.tensors[1][rows])
        assert x_cat.dtype == torch.long
        assert torch.equal(y, ds.tensors[2][rows])


def test_drop_last_drops_the_short_batch():
    batches = list(batch_loader(make_dataset(), batch_size=5, shuffle=False, drop_last=True))
    assert [len(b[2]) for b in batches] == [5, 5, 5, 5]


def test_shuffled_epoch_covers_every_row_exactly_once():
    ds = make_dataset()
    loader = batch_loader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    orders = []
    for _ in range(2):
        seen = []
        for x_num, x_cat, y in loader:
            # Rows stay together: features belong to the row named by y.
            assert torch.equal(x_num, ds.tensors[0][y])
            assert torch.equal(x_cat, ds.tensors[1][y])
            seen.append(y)
        order = torch.cat(seen)
        assert sorted(order.tolist()) == list(range(len(ds)))
        orders.append(order)
    assert not torch.equal(orders[0], torch.arange(len(ds)))  # really shuffled
    assert not torch.equal(orders[0], orders[1])  # a new order each epoch


def test_shuffle_is_reproducible_with_a_seeded_generator():
    ds = make_dataset()

    def order(seed: int) -> list[int]:
        loader = batch_loader(ds, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return torch.cat([y for *_, y in loader]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="lengths differ"):
        TensorBatchDataset(torch.zeros(5, 2), torch.zeros(4))


def test_no_tensors_raise():
    with pytest.raises(ValueError):
        TensorBatchDataset()


def test_train_loader_drops_a_last_batch_of_one_row() -> None:
    from lit_dl.data.batching import train_loader

    dataset = TensorBatchDataset(torch.arange(257).float())
    assert [len(b[0]) for b in train_loader(dataset, 256)] == [256]  # batch norm cannot train on one row
    dataset = TensorBatchDataset(torch.arange(258).float())
    assert sorted(len(b[0]) for b in train_loader(dataset, 256)) == [2, 256]
