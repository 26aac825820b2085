"""`--device` for the trainers: auto takes CUDA when torch sees it, cpu always works, and asking for CUDA on a host
without it is refused by name, before any data is read (the tiny trainings in test_qa, test_math, test_mlm and the
test_encoder_* modules run with device "cpu" and "auto")."""

from __future__ import annotations

import pytest
import torch

from training.cli import math_config, qa_config, train_main
from training.common.device import DeviceError, pick_device

NO_CUDA = not torch.cuda.is_available()


def test_auto_takes_cuda_only_when_present_and_cpu_is_always_there():
    assert pick_device("auto").type == ("cpu" if NO_CUDA else "cuda")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("") == pick_device("auto")


@pytest.mark.skipif(not NO_CUDA, reason="this host has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA"])
def test_cuda_without_a_gpu_is_refused_with_the_reason(name):
    with pytest.raises(DeviceError, match="sees no CUDA GPU on this host.*use --device auto or cpu"):
        pick_device(name)


@pytest.mark.skipif(NO_CUDA, reason="this host has no CUDA")
def test_a_gpu_index_past_the_hosts_count_is_refused():
    with pytest.raises(DeviceError, match="CUDA GPU"):
        pick_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("name", ["tpu", "banana", "mps"])
def test_other_devices_are_refused(name):
    with pytest.raises(DeviceError, match="use auto, cpu, cuda or cuda:N"):
        pick_device(name)


def test_every_trainer_takes_the_flag_with_auto_by_default():
    assert qa_config([]).device == "auto" and qa_config(["--device", "cpu"]).device == "cpu"
    assert qa_config(["--encoder", "DIR", "--recipe", "gpu"]).device == "auto"  # the gpu recipe follows the host
    assert math_config(["--device", "cpu"]).device == "cpu"


@pytest.mark.skipif(not NO_CUDA, reason="this host has CUDA")
@pytest.mark.parametrize("task", ["extract", "qa", "math", "mlm"])
def test_the_cli_refuses_cuda_without_a_gpu_before_reading_data(task, tmp_path):
    with pytest.raises(SystemExit, match=f"zhserve train {task}: --device cuda asked for CUDA"):
        train_main(task, ["--device", "cuda", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
