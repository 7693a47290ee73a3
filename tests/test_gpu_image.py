"""The cluster image's CUDA agrees with the CUDA the pinned GPU wheels are built for (no network, no build).

The base image's CUDA is read from the Dockerfile's FROM line; the wheels' from requirements-gpu.txt's
`cuda-toolkit` pin, the package through which torch's PyPI build requires its CUDA (so pip refuses a torch
built for another one), and from the table below for the pinned torch. DeepSpeed refuses to compile its ops
with an nvcc of another CUDA than torch's, and the nodes need the driver of the newest CUDA in the pod.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The CUDA of torch's PyPI build for Linux, by version (the cuda-toolkit its metadata requires).
TORCH_CUDA = {"2.14.0": (13, 0)}
# The oldest Linux driver each CUDA release runs on (NVIDIA's CUDA toolkit release notes). Moving the image to
# another CUDA means adding its floor here and stating it in the Dockerfile and docs/gpu-image.md.
DRIVER_FLOOR = {(13, 0): "580.65.06"}


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def image_cuda(dockerfile: str) -> tuple[int, int]:
    """The CUDA of the image's base: the `FROM nvidia/cuda:…` tag, with the build arguments' defaults put in."""
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.MULTILINE))
    base = re.search(r"^FROM (\S+)", dockerfile, re.MULTILINE).group(1)
    base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], base)
    tag = re.fullmatch(r"nvidia/cuda:(\d+\.\d+)\.\d+-(?:\w+-)*devel-ubuntu\d+\.\d+", base)
    assert tag, f"the base {base} is not a CUDA devel image (nvcc, for DeepSpeed's ops)"
    return _major_minor(tag.group(1))


def wheels_cuda(requirements: str) -> tuple[int, int]:
    """The CUDA that requirements-gpu.txt's torch build requires, read from its `cuda-toolkit` pin."""
    pin = re.search(r"^cuda-toolkit==(\S+)", requirements, re.MULTILINE)
    assert pin, "requirements-gpu.txt pins cuda-toolkit, the CUDA torch's build requires"
    return _major_minor(pin.group(1))


def test_the_image_carries_the_cuda_the_pinned_torch_is_built_for():
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    requirements = (REPO / "requirements-gpu.txt").read_text()
    torch = re.search(r"^torch==(\S+)", requirements, re.MULTILINE).group(1)
    assert image_cuda(dockerfile) == wheels_cuda(requirements) == TORCH_CUDA[torch]


def test_deepspeed_compiles_with_the_image_nvcc_and_the_build_checks_it():
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    assert "CUDA_HOME=/usr/local/cuda " in dockerfile  # the base image's toolkit, not an nvcc found on PATH
    assert "assert_no_cuda_mismatch()" in dockerfile  # the build stops where DeepSpeed would refuse on a node


def test_the_dockerfile_and_the_docs_state_the_driver_the_image_needs():
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    floor = DRIVER_FLOOR[image_cuda(dockerfile)]
    for text in (dockerfile, (REPO / "docs" / "gpu-image.md").read_text()):
        assert f"DRIVER >= {floor}".lower() in text.lower()
