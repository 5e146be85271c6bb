"""CPU test environment for the SGLang plugin: SGLang's Python code on a CPU build of torch.

SGLang's import graph (model configs for vision models) imports torchvision,
and PyPI's torchvision wheels link CUDA builds of torch: on the CPU build its
compiled ops fail to load. torchvision then runs without them (it guards
every op behind ``extension._has_ops()``), except for two fake-kernel
registrations (``torchvision::nms`` and ``qnms``) that need the ops' schemas.
Declaring those two schemas lets the pure-Python rest of torchvision import;
no test here touches a vision op.
"""

from __future__ import annotations

import torch

_TORCHVISION_SCHEMAS: list[torch.library.Library] = []  # kept alive: dropping a Library removes its ops


def _import_torchvision() -> None:
    try:
        import torchvision  # noqa: F401
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_SCHEMAS.append(lib)
        import torchvision  # noqa: F401,F811


_import_torchvision()
