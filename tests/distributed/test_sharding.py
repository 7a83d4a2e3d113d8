"""Each process's share of the data, and the launch checks, without starting processes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lit_dl.data import TensorBatchDataset
from lit_dl.data.batching import TensorBatchLoader
from lit_dl.data.text import EpochOffsetSampler, TextStreams
from lit_dl.distributed import launch_rank, rank_overrides
from lit_dl.errors import ConfigError

LAUNCH_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")
SLURM_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*LAUNCH_VARS, *SLURM_VARS):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def loader(dataset: TensorBatchDataset, batch_size: int, shuffle: bool, rank: int, world_size: int = 2):
    return TensorBatchLoader(dataset, batch_size, shuffle=shuffle, seed=5, rank=rank, world_size=world_size)


def test_eval_shares_cover_every_row_once_with_uneven_counts() -> None:
    dataset = TensorBatchDataset(torch.arange(153))
    shares = [torch.cat([b[0] for b in loader(dataset, 76, False, rank)]).tolist() for rank in (0, 1)]
    assert sorted(shares[0] + shares[1]) == list(range(153))  # no padding copies
    assert [len(s) for s in shares] == [77, 76]
    assert [len(list(loader(dataset, 76, False, rank))) for rank in (0, 1)] == [2, 1]


def test_training_shares_are_disjoint_equal_and_torch_distributed_sampler_order() -> None:
    dataset = TensorBatchDataset(torch.arange(101))
    for epoch in (0, 3):
        shares = []
        for rank in (0, 1):
            rows = loader(dataset, 16, True, rank)
            rows.sampler.set_epoch(epoch)
            shares.append(torch.cat([b[0] for b in rows]).tolist())
            # The order torch's DistributedSampler gives (and lit_dl's loaders gave before): old runs resume.
            reference = torch.utils.data.DistributedSampler(dataset, 2, rank, shuffle=True, seed=5)
            reference.set_epoch(epoch)
            assert shares[-1] == list(reference)
        assert len(shares[0]) == len(shares[1]) == 51  # equal step counts: no process waits for another
        assert set(shares[0]) | set(shares[1]) == set(range(101))  # one padding row repeats


def test_one_row_last_batch_rule_looks_at_each_process_share() -> None:
    dataset = TensorBatchDataset(torch.arange(258))  # 129 rows a process: 128 + 1
    assert loader(dataset, 128, True, 0, world_size=1).drop_last is False  # 258 = 2 x 128 + 2
    assert loader(dataset, 128, True, 0, world_size=2).drop_last is True
    assert loader(dataset, 128, False, 0, world_size=2).drop_last is False  # evaluation keeps every row


def test_text_streams_of_two_processes_are_the_streams_of_one() -> None:
    tokens = torch.arange(2000)
    one = TextStreams(tokens, streams=8, seq_len=10, max_offset=9, drop_last=True)
    two = [TextStreams(tokens, 8, 10, 9, True, rank=r, world_size=2) for r in (0, 1)]
    assert len(two[0]) == len(two[1]) == len(one)  # every process takes as many steps
    for streams in (one, *two):
        streams.offset = 3
    for k in range(len(one)):
        inputs, targets = one[k]
        shares = [s[k] for s in two]
        assert torch.equal(
            torch.cat([shares[0][0], shares[1][0]]).sort(dim=0).values, inputs.sort(dim=0).values
        )
        assert torch.equal(shares[0][0], inputs[0::2]) and torch.equal(shares[1][1], targets[1::2])


def test_text_sampler_is_kept_by_lightning_under_ddp() -> None:
    # Lightning replaces a sampler that is not a DistributedSampler, which would scatter the chunks.
    streams = TextStreams(torch.arange(500), 4, 10, rank=1, world_size=2)
    sampler = EpochOffsetSampler(streams)
    assert isinstance(sampler, torch.utils.data.DistributedSampler)
    assert list(sampler) == list(range(len(streams)))


def test_rank_overrides(clean_env: pytest.MonkeyPatch) -> None:
    assert launch_rank() == 0 and rank_overrides([]) == []
    clean_env.setenv("LOCAL_RANK", "1")  # a process Lightning started: no .hydra/, no log file
    assert "hydra.output_subdir=null" in rank_overrides(["hydra.run.dir=x"])
    clean_env.delenv("LOCAL_RANK")
    # torchrun: every process runs lit-dl; the job id names the one shared run directory.
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("TORCHELASTIC_RUN_ID", "abc")
    assert rank_overrides([]) == ["hydra.run.dir=${paths.log_dir}/${task_name}/runs/torchrun-abc"]
    assert rank_overrides(["hydra.run.dir=mine"]) == []
    clean_env.setenv("TORCHELASTIC_RUN_ID", "none")
    with pytest.raises(ConfigError, match=r"hydra\.run\.dir"):
        rank_overrides([])


def test_ddp_from_a_python_session_and_ddp_spawn_fail_in_one_line(
    fail_cli: Callable[..., str], tmp_path: Path, one_thread: None
) -> None:
    args = ["train", "data.n_rows=300", "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    assert "start it with the `lit-dl` command" in fail_cli(*args)
    assert "use trainer.strategy=ddp" in fail_cli(*args, "trainer.strategy=ddp_spawn")
    assert not (tmp_path / "run" / "metrics.json").exists()
