"""TensorBatchDataset and batch_loader: whole batches by index, full epochs, shape checks."""

from __future__ import annotations

import pytest
import torch

from lit_dl.data import TensorBatchDataset, batch_loader
from lit_dl.data.batching import EpochShuffleSampler, TensorBatchLoader


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


def epoch_rows(loader: TensorBatchLoader, epoch: int) -> list[int]:
    loader.sampler.set_epoch(epoch)  # what Lightning calls before each epoch
    return torch.cat([y for *_, y in loader]).tolist()


def test_tensor_batch_loader_reads_every_row_once_in_a_new_seeded_order_each_epoch():
    ds = make_dataset(50)
    loader = TensorBatchLoader(ds, batch_size=8, shuffle=True, seed=3)
    assert len(loader) == 7 and [len(b[2]) for b in loader] == [8] * 6 + [2]
    orders = [epoch_rows(loader, epoch) for epoch in (0, 1, 0)]
    assert sorted(orders[0]) == list(range(50)) and sorted(orders[1]) == list(range(50))
    assert orders[0] != orders[1] and orders[0] == orders[2]  # new each epoch, a function of seed + epoch
    assert orders[0] != epoch_rows(TensorBatchLoader(ds, 8, shuffle=True, seed=4), 0)
    # The order of the DataLoader path (EpochShuffleSampler) for the same seed and epoch.
    sampler = EpochShuffleSampler(range(50), seed=3)
    sampler.set_epoch(1)
    assert orders[1] == list(sampler)
    for x_num, x_cat, y in loader:  # rows stay together
        assert torch.equal(x_num, ds.tensors[0][y]) and torch.equal(x_cat, ds.tensors[1][y])


def test_tensor_batch_loader_evaluation_is_in_order_and_keeps_a_one_row_batch():
    loader = TensorBatchLoader(make_dataset(17), batch_size=8, shuffle=False)
    assert epoch_rows(loader, 0) == list(range(17)) and len(loader) == 3
    assert TensorBatchLoader(make_dataset(17), batch_size=8, shuffle=True).drop_last  # 8 + 8 + 1


def test_tensor_batch_loader_moves_the_data_once_and_makes_batches_on_the_device():
    ds = make_dataset(20)
    loader = TensorBatchLoader(ds, batch_size=8, shuffle=True, device="meta")
    assert all(t.device.type == "meta" for t in loader.dataset.tensors)
    assert ds.tensors[0].device.type == "cpu"  # the datamodule's own copy stays where it was
    batches = list(loader)
    assert all(t.device.type == "meta" for b in batches for t in b)
    assert [len(b[0]) for b in batches] == [8, 8, 4]
    assert TensorBatchLoader(ds, 8, shuffle=False, device="cpu").dataset is ds  # nothing to move


def test_on_device_auto_puts_data_on_a_gpu_only_when_it_fits(monkeypatch):
    from types import SimpleNamespace

    from lit_dl.data import ChurnDataModule
    from lit_dl.errors import ConfigError

    datamodule = ChurnDataModule(n_rows=400)
    datamodule.setup("fit")
    needed = sum(t.numel() * t.element_size() for d in datamodule.datasets.values() for t in d.tensors)
    memory = {"total": 8 * needed}
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=memory["total"])
    )

    def device_for(setting, device: str):  # type: ignore[no-untyped-def]
        datamodule.on_device = setting
        datamodule.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        return datamodule.data_device()

    assert device_for("auto", "cuda:0") == torch.device("cuda:0")  # an eighth of the memory: fits
    memory["total"] = 8 * needed - 1
    assert device_for("auto", "cuda:0") is None  # too big for auto ...
    assert device_for(True, "cuda:0") == torch.device("cuda:0")  # ... but asked for
    assert device_for(False, "cuda:0") is None
    assert device_for(True, "cpu") is None  # host memory already
    with pytest.raises(ConfigError, match=r"data\.on_device must be auto, true or false"):
        ChurnDataModule(n_rows=400, on_device="gpu")
