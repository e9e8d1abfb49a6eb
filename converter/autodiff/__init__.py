"""Reverse-mode gradients on the IR (``backward``) and trainable conversions
(``make_trainable``): one graph with ``infer``, ``grad`` and ``train`` signatures."""
from converter.autodiff.context import GradContext, NotDifferentiableError, backward
from converter.autodiff.trainable import (LEARNING_RATE, LOSSES, TrainingConfig, choose_trainable,
                                          make_trainable, parameter_candidates)

__all__ = ["GradContext", "NotDifferentiableError", "backward", "LEARNING_RATE", "LOSSES",
           "TrainingConfig", "choose_trainable", "make_trainable", "parameter_candidates"]
