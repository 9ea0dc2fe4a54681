"""SeMoBridge-T's training: one optimisation per fold, stepped in lockstep.

On numpy arrays on the CPU, torch tensors on a GPU
(:class:`~sklearn_cmm._torch.ArrayBackend`).
:class:`~sklearn_cmm.SeMoBridgeClassifier` imports this module only when it trains, so a
closed-form fit never loads torch.
"""

import numpy as np
import torch
from tqdm.auto import tqdm

from ._math.semobridge import warmup_learning_rate
from ._math.semobridge_loss import SeMoBridgeTLoss
from ._torch import (FullBatchAdamW, check_converging, stack_to_numpy, to_numpy,
                     training_arrays)

#: Learning rate at the first step of SeMoBridge-T's linear warm-up (the authors' setting).
WARMUP_START_LR = 1e-5


class BridgeTraining:
    """One SeMoBridge-T optimisation: the trained array, its loss and losses.

    ``T``, ``text_pre`` and ``image_logit_scale`` are those of its shots ``X``: a
    validation training's come from its own rows.
    """

    def __init__(self, X, y_encoded, W, W_pinv, T, text_pre, params, backend, *,
                 image_logit_scale):
        self.X, self.y, self.T = X, y_encoded, T
        # Nothing in the training is random: full batch, deterministic initialisation
        # (the bias at 0). W_pinv and the bias are one array (SeMoBridgeTLoss).
        if params.class_bias:
            W_pinv = np.vstack([W_pinv, np.zeros((len(params.classes_), W.shape[0]))])
        self.stacked = backend.asarray(W_pinv)
        self.objective = SeMoBridgeTLoss(
            X, y_encoded, W, T, text_pre, backend=backend, class_bias=params.class_bias,
            image_weight=params.image_loss_weight,
            text_weight=params.text_loss_weight,
            consistency_weight=params.consistency_loss_weight,
            bias_norm_weight=params.bias_norm_loss_weight,
            image_logit_scale=image_logit_scale,
        )
        # Losses stay on the device until the end: one synchronisation, not one a step.
        self.losses = []

    def gradients(self):
        """The loss's gradient at the arrays' values, one per array; keeps the loss."""
        total, d_stacked = self.objective.value_and_grad(self.stacked)
        self.losses.append(total)
        return [d_stacked]

    def parameters(self):
        """``W_pinv`` and the bias (None without class bias) as float64 arrays."""
        stacked, dim = to_numpy(self.stacked), self.objective.dim
        return stacked[:dim], stacked[dim:] if self.objective.class_bias else None


def lockstep(optimizer, runs, lr):
    """One full-batch AdamW step of every run, at learning rate ``lr``.

    Each run's array gets its own gradient (:meth:`BridgeTraining.gradients`), and
    AdamW, elementwise, updates each as if it were alone (on tensors in one fused step).
    """
    optimizer.step([grad for training in runs for grad in training.gradients()], lr)


def run_steps(
    runs, n_steps, *, learning_rate, weight_decay, warmup_iter, validation_interval,
    verbose=False, checkpoint=None,
):
    """Step every run ``n_steps`` times on the warm-up schedule.

    ``checkpoint(step)`` is called every ``validation_interval`` steps from step 0 and
    after the last step (the parameters then have had ``step`` updates); it stops the
    training by returning True. Returns the number of steps run.
    """
    optimizer = FullBatchAdamW([training.stacked for training in runs],
                               weight_decay=weight_decay)
    # Nothing here is differentiated (the gradient is the loss's own): on tensors,
    # inference mode skips autograd's dispatch on every operation (a fifth of a step at
    # few-shot sizes on a CPU).
    with torch.inference_mode(), training_arrays(runs[0].stacked):
        for step in tqdm(range(n_steps + 1), desc="SeMoBridge-T", disable=not verbose,
                         leave=False):
            at_checkpoint = step % validation_interval == 0 or step == n_steps
            if checkpoint is not None and at_checkpoint:
                if checkpoint(step):
                    return step
            if step == n_steps:
                return step
            lr = warmup_learning_rate(step, learning_rate, warmup_iter, WARMUP_START_LR)
            lockstep(optimizer, runs, lr)


def check_converged(training):
    """The losses of a finished training as numpy; raises if it diverged (NaN, inf)."""
    losses = stack_to_numpy(training.losses)
    check_converging(losses, [training.stacked], "SeMoBridge-T")
    return losses
