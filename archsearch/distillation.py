"""Knowledge distillation (Hinton et al. 2015) for fine-tuning a pruned network."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton et al.'s soft-target term: KL(teacher || student) of the outputs softened by
    ``temperature``, times its square so its gradients keep their size as it changes. It hands
    the pruned network the dense one's whole output distribution to match, not only the
    labels; whether that pays depends on the model and the data: on LeNet-5-Caffe's channel
    subnetworks at 7-8% of the FLOPs, 2 fine-tuning epochs with it ended 0.0-0.3 test points
    below plain fine-tuning (benchmarks/RESULTS.md, "Fine-tuning toward the dense network"),
    so it is off by default."""
    soft_student = F.log_softmax(student.float() / temperature, dim=1)
    soft_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    divergence = F.kl_div(soft_student, soft_teacher, reduction="batchmean", log_target=True)
    return divergence * temperature**2
