"""MOSLIM's running statistics under two real processes (gloo, on the CPU): each scores its own
share of a batch, as under `accelerate launch`, and both keep the statistics of the whole batch."""

import json
import os
import socket

import numpy as np
import pytest
import torch.multiprocessing as mp

from steerable.methods.moslim.recipe import RewardStats, summed_over_processes

P = np.array([[0.7, 0.5], [0.3, 0.0], [0.5, 0.1], [0.2, 0.9], [0.6, 0.4], [0.1, 0.8]])
LEVELS = np.array([[3, 1], [3, 0], [2, 1], [3, 2], [1, 2], [3, 0]])


def one_process(rank: int, port: int, out: str) -> None:
    from accelerate import PartialState

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    state = PartialState(cpu=True)
    stats = RewardStats(["brief", "positive"], 3, decay=0.5)
    share = slice(0, 4) if rank == 0 else slice(4, 6)  # shares of different sizes
    for _ in range(2):  # a second batch goes through the running average
        stats.update(P[share], LEVELS[share], summed_over_processes)
    with open(f"{out}/rank{rank}.json", "w") as handle:
        json.dump(stats.to_dict(), handle)
    state.wait_for_everyone()
    state.destroy_process_group()


@pytest.mark.slow
def test_two_processes_keep_the_statistics_of_the_whole_batch(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(one_process, args=(port, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    whole = RewardStats(["brief", "positive"], 3, decay=0.5)
    for _ in range(2):
        whole.update(P, LEVELS)
    for saved in ranks:
        np.testing.assert_allclose(saved["mean"], whole.mean)
        np.testing.assert_allclose(saved["var"], whole.var, atol=1e-12)
        assert saved["seen"] == whole.seen.tolist()
