"""Evaluators detectron2 lacks; everything else comes from ``detectron2.evaluation``."""

from .instance_evaluation import InstanceSegEvaluator

__all__ = ["InstanceSegEvaluator"]
