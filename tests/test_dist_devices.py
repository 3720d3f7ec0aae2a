"""Which GPU each rank takes, and the check that no two ranks share one: the environments of
real launches (torchrun, srun with and without GPU binding), with torch's device queries faked
where a rank would ask them."""

import json
import socket
import threading
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from llmbench.core.errors import UsageError
from llmbench.dist import devices
from llmbench.dist.devices import DeviceChoice, check_distinct, cuda_index


def choice(rank, local, visible, uuid, host="node1", **env):
    env = {"LOCAL_RANK": str(local), **env}
    return DeviceChoice(rank=rank, host=host, local_rank=local, visible=visible,
                        index=cuda_index(local, visible, env, rank), uuid=uuid,
                        env=devices.launch_variables(env))


@pytest.mark.parametrize(("local_rank", "count", "expected"), [
    (0, 8, 0), (5, 8, 5),  # torchrun: every rank sees every GPU of the host
    (0, 1, 0), (3, 1, 0),  # srun --gpus-per-task=1: each task sees its own one, as GPU 0
    (3, 2, 1),             # srun --gpus-per-task=2: two of its own
    (6, 4, 2),             # torchrun --nproc-per-node 8 on 4 GPUs: wraps; the check refuses it
])
def test_the_index_is_local_rank_modulo_what_the_rank_sees(local_rank, count, expected):
    assert cuda_index(local_rank, count, {}, rank=local_rank) == expected


def test_a_rank_that_sees_no_gpu_is_one_line_naming_the_variables():
    with pytest.raises(UsageError, match=r"rank 3 sees no CUDA device \(CUDA_VISIBLE_DEVICES="
                                         r"\)") as info:
        cuda_index(1, 0, {"CUDA_VISIBLE_DEVICES": ""}, rank=3)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="CUDA_VISIBLE_DEVICES unset"):
        cuda_index(0, 0, {}, rank=0)


def test_srun_one_gpu_per_task_is_accepted():
    # Four tasks on one host, each bound to its own GPU: all pick index 0, four physical GPUs.
    picks = [choice(r, r, 1, f"GPU-{r}", SLURM_LOCALID=str(r), CUDA_VISIBLE_DEVICES="0")
             for r in range(4)]
    assert [c.index for c in picks] == [0, 0, 0, 0]
    check_distinct(picks)


def test_two_hosts_with_the_same_indices_are_accepted():
    picks = [choice(r, r % 2, 2, f"GPU-{r}", host=f"node{r // 2}") for r in range(4)]
    check_distinct(picks)


def test_more_torchrun_ranks_than_gpus_is_refused_naming_the_variables():
    # torchrun --nproc-per-node 8 on a host with 4 GPUs: ranks 0 and 4 land on GPU 0.
    picks = [choice(r, r, 4, f"GPU-{r % 4}", LOCAL_WORLD_SIZE="8") for r in range(8)]
    with pytest.raises(UsageError) as info:
        check_distinct(picks)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("ranks 0 and 4 would share GPU 0 (GPU-0) on node1: 8 ranks there")
    assert "LOCAL_WORLD_SIZE=8" in text and "each seeing 4 CUDA device(s)" in text
    assert "at most 4 rank(s) per host (torchrun --nproc-per-node 4)" in text


def test_srun_without_binding_on_a_shared_gpu_is_refused():
    # srun --ntasks-per-node 2 with one GPU not bound per task: both tasks see the same GPU.
    picks = [choice(r, r, 1, "GPU-a", SLURM_LOCALID=str(r), SLURM_STEP_GPUS="0")
             for r in range(2)]
    with pytest.raises(UsageError, match=r"ranks 0 and 1 would share GPU 0 \(GPU-a\).*"
                                         r"SLURM_STEP_GPUS=0.*srun --gpus-per-task=1"):
        check_distinct(picks)


def test_the_ranks_exchange_their_choices_through_the_store():
    store = dist.HashStore()
    picks = [choice(r, r, 2, f"GPU-{r % 2}") for r in range(4)]
    seen: dict[int, list[DeviceChoice]] = {}

    def rank(r):
        seen[r] = devices.exchange(store, picks[r], 4, timedelta(seconds=10))

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(seen[r] == picks for r in range(4))  # every rank sees every choice, in order
    with pytest.raises(UsageError, match="ranks 0 and 2 would share"):
        check_distinct(seen[1])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_init_sets_the_device_the_launch_gives_this_rank(monkeypatch):
    """group.init on a faked one-GPU task with LOCAL_RANK 3 (srun --gpus-per-task=1): it must
    set device 0, not 3 ("invalid device ordinal")."""
    from llmbench.dist import group

    picked = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", picked.append)
    monkeypatch.setattr(devices, "identity", lambda index: f"GPU-fake-{index}")
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "3",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                       "CUDA_VISIBLE_DEVICES": "0"}.items():
        monkeypatch.setenv(key, value)
    store = group.init(backend="gloo", device="cuda", local_rank=3, timeout_s=30)
    try:
        assert picked == [0]
        assert devices.DeviceChoice(**json.loads(store.get("device/0"))).index == 0
    finally:
        dist.destroy_process_group()
