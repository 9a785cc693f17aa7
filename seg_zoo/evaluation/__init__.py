"""Evaluators detectron2 lacks; everything else comes from ``detectron2.evaluation``."""

from .davis_evaluation import DAVISEvaluator
from .instance_evaluation import InstanceSegEvaluator

__all__ = ["DAVISEvaluator", "InstanceSegEvaluator"]
