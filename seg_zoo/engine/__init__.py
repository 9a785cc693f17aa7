"""Training and evaluation: the trainer, optimizer, evaluators and checkpointer of train_net.py."""

from .checkpoint import Checkpointer, class_count_hints
from .ema import evaluates_with_ema
from .evaluators import build_evaluator
from .optimizer import build_optimizer, get_param_groups
from .trainer import Trainer, amp_enabled, check_num_classes, create_ddp

__all__ = [
    "Checkpointer",
    "Trainer",
    "amp_enabled",
    "build_evaluator",
    "check_num_classes",
    "build_optimizer",
    "class_count_hints",
    "create_ddp",
    "evaluates_with_ema",
    "get_param_groups",
]
