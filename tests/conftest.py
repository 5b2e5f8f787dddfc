"""Shared test setup.

Without a GPU, Triton kernels run in Triton's interpreter on CPU tensors; TRITON_INTERPRET must be set
before triton is first imported, which is why it is set here, at collection time.
"""
import os

# Some virtual machines advertise AMX but do not let processes use it: oneDNN's bf16 kernels then die
# with SIGILL (seen on our CI machines under torch.autocast("cpu", bfloat16)). Cap oneDNN below AMX;
# it must be set before torch initialises oneDNN.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from fastcam.models import tiny_densenet, tiny_resnet, tiny_vgg  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def one_thread():  # noqa: ANN201
    """Tiny CPU models run ~10x slower with 2 intra-op threads on a shared 2-core runner (thread
    contention); one thread keeps such tests fast. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_resnet(num_classes=5).eval()


@pytest.fixture
def vgg() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_vgg(num_classes=5).eval()


@pytest.fixture
def densenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_densenet(num_classes=5).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 3, 64, 48, generator=torch.Generator().manual_seed(1))
