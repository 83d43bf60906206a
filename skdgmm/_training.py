"""The optimisation loop: AdamW over shuffled mini-batches.

Losses are functions ``loss_fn(network, batch) -> (loss, monitored)``
(see :mod:`skdgmm._losses`), the second the log-likelihood in training and
the divergence from the targets in pre-training; :func:`optimize` minimises
one until the epoch loss decreases by less than ``tol`` per iteration (or
the monitored value falls below ``stop_below``), and is the one place that
handles an interruption (Ctrl-C) of training.
"""

import copy
import math
import warnings
from dataclasses import dataclass, field

import torch

# Optimizer steps over which the learning rate rises linearly to its value
# where ``optimize`` is asked to warm up (counted over a training and the
# warm starts that continue it, as if it had not stopped). Adam's first
# steps move every weight by about the learning rate, whatever its gradient:
# from a network pre-trained close to EM that threw a class out in one step
# (an unmasked MNI152 slice lost CSF at the first training iteration; with
# 20 steps of warm-up it kept every class at each of five seeds).
WARMUP_STEPS = 20

# Training that ends this much (nats per pixel) below where it started, and
# below the initial EM fit, goes back to an earlier state; see optimize.
GUARD_NATS = 0.5


@dataclass
class History:
    """What one run of :func:`optimize` went through."""

    losses: list = field(default_factory=list)
    # the loss function's monitored value: the log-likelihood in training
    log_likelihoods: list = field(default_factory=list)
    converged: bool = False
    interrupted: bool = False
    # the iteration whose starting state was restored by the guard, if any
    restored: int | None = None
    # the optimizer's state at the end, which a warm start continues from
    optimizer_state: dict | None = None
    # iterations of the earlier trainings this one continues (warm starts)
    start: int = 0
    # optimizer steps taken, those of the earlier trainings included
    steps: int = 0

    @property
    def n_iter(self):
        """Iterations of this training (earlier ones aside)."""
        return len(self.losses) - self.start

    def continued(self, later):
        """This history followed by that of the ``later`` training that
        continued it."""
        return History(
            self.losses + later.losses,
            self.log_likelihoods + later.log_likelihoods,
            later.converged,
            later.interrupted,
            later.restored,
            later.optimizer_state,
            start=len(self.losses),
            steps=later.steps,
        )


# Stochastic gradient steps make the loss jitter from one iteration to the
# next; its decrease is averaged over this many iterations before comparing
# it with ``tol``, so that one small step does not end training early.
_STOPPING_WINDOW = 5


def _warmup_factor(step):
    """The factor of the learning rate at optimizer step ``step`` (from 0)
    of a warm-up: from 1/WARMUP_STEPS up to 1, as torch's LinearLR."""
    start = 1 / WARMUP_STEPS
    return start + (1 - start) * min(step, WARMUP_STEPS) / WARMUP_STEPS


def _mean_change(losses):
    """Decrease of the loss per iteration over the last iterations.

    Infinite until there are enough iterations to average over: starting
    from the initial mixture, the first steps can be tiny.
    """
    if len(losses) <= _STOPPING_WINDOW:
        return math.inf
    return (losses[-1 - _STOPPING_WINDOW] - losses[-1]) / _STOPPING_WINDOW


def optimize(
    network,
    loss_fn,
    batches,
    *,
    learning_rate,
    max_iter,
    tol,
    generator,
    on_iter=None,
    reference_log_likelihood=None,
    previous=None,
    new_loss=False,
    stop_below=None,
    warmup=False,
):
    """Minimise ``loss_fn`` with AdamW, one epoch over ``batches`` per iteration.

    ``loss_fn(network, batch)`` returns ``(loss, monitored)`` (scalars).
    Stops when the epoch loss decreases by less than ``tol`` per iteration
    (averaged over the last ``_STOPPING_WINDOW`` iterations of this training;
    a loss that rises on average stops it too, as GaussianMixture documents
    its criterion: an average gain below ``tol``), after ``max_iter`` epochs,
    once the epoch's monitored value falls below ``stop_below`` (when
    given), or on KeyboardInterrupt, which keeps the network as it is and
    warns. A ``previous`` :class:`History` is that of a training this one
    continues (a warm start): its losses count in that average where the
    change is within ``tol`` either way (unless ``new_loss`` says that
    ``loss_fn`` is not the one it minimised), and the optimizer starts from
    its state.

    With a ``reference_log_likelihood`` (that of the initial EM fit), a guard
    keeps training from ending worse than it started: the floor is
    ``GUARD_NATS`` below the lower of the reference and the first iteration's
    log-likelihood. If the last iteration's log-likelihood is below it (or
    not a number), the network goes back to its state at the start of the
    last iteration that was not, and ``History.restored`` says which.

    With ``warmup``, the learning rate rises linearly over the first
    ``WARMUP_STEPS`` steps of the optimizer (a network trained before, whose
    optimizer starts afresh), and training does not stop as settled or
    stalled before it ends. A warm start goes on with the steps of the
    ``previous`` training: one call of two iterations and two calls of one
    take the same steps.
    """
    previous_losses = ()
    history = History()
    if previous is not None:
        previous_losses = () if new_loss else previous.losses
        if previous.optimizer_state is not None:
            history.steps = previous.steps
    optimizer = _adamw(
        network.parameters(),
        learning_rate,
        None if previous is None else previous.optimizer_state,
    )

    def set_learning_rate():
        # this call's learning rate, also where a loaded optimizer state
        # carries an earlier one
        factor = _warmup_factor(history.steps) if warmup else 1.0
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * factor

    kept, kept_iter = _state(network), 1
    floor = -math.inf
    network.train()
    try:
        for n_iter in range(1, max_iter + 1):
            # snapshots only where the guard may restore one
            state = None if reference_log_likelihood is None else _state(network)
            loss_sum = ll_sum = 0.0
            for batch in batches.shuffled(generator):
                optimizer.zero_grad()
                loss, log_likelihood = loss_fn(network, batch)
                loss.backward()
                set_learning_rate()
                optimizer.step()
                history.steps += 1
                loss_sum += loss.item() * len(batch)
                ll_sum += float(log_likelihood) * len(batch)
            history.losses.append(loss_sum / len(batches))
            history.log_likelihoods.append(ll_sum / len(batches))
            if n_iter == 1 and reference_log_likelihood is not None:
                floor = (
                    min(reference_log_likelihood, history.log_likelihoods[0])
                    - GUARD_NATS
                )
            if history.log_likelihoods[-1] >= floor:
                kept, kept_iter = state, n_iter
            change = _mean_change([*previous_losses, *history.losses])
            if on_iter is not None:
                on_iter(n_iter, history.losses[-1], change)
            below = stop_below is not None and history.log_likelihoods[-1] < stop_below
            # Settled: changing by less than tol either way. Stalled: not
            # falling by tol, which ends training where the jitter of the
            # steps is larger than tol (collections of 42 masked MyoPS
            # slices with labels ran 15 to 86 iterations until settled,
            # their labels as good from the 10th). Stalled is judged on this
            # training's losses alone: a warm start on other data (or
            # settings) begins above where the earlier training ended.
            settled = abs(change) < tol
            stalled = len(history.losses) > _STOPPING_WINDOW and change < tol
            # a loss that barely moves at a learning rate still warming up
            # has not settled (a fit of 5 iterations claimed convergence)
            warming = warmup and history.steps < WARMUP_STEPS
            if below or ((settled or stalled) and not warming):
                history.converged = True
                break
    except KeyboardInterrupt:
        history.interrupted = True
        warnings.warn(
            "Training was interrupted; the estimator keeps the network as it "
            "was at the interruption.",
            UserWarning,
        )
    finally:
        network.eval()
        history.optimizer_state = _cpu_copy(optimizer.state_dict())
    # NaN compares False: a diverged likelihood is restored too
    guarded = reference_log_likelihood is not None and history.log_likelihoods
    if guarded and not history.log_likelihoods[-1] >= floor:
        network.load_state_dict(kept)
        history.restored = kept_iter
    return history


def _adamw(parameters, learning_rate, state=None):
    """AdamW with its fused kernel where torch has one for the parameters'
    device (the CPU from torch 2.4): one pass over all the weights instead of
    one per tensor, 2-3 ms less per step on the 77 tensors of the default
    U-Net (a 64² step: 20 ms). It continues from a warm start's optimizer
    ``state`` where given."""
    parameters = list(parameters)
    try:
        optimizer = torch.optim.AdamW(parameters, lr=learning_rate, fused=True)
    except RuntimeError:
        optimizer = torch.optim.AdamW(parameters, lr=learning_rate)
    if state is not None:
        # a copy: AdamW updates its state in place, and the fitted model's
        # must not change before the fit succeeds
        state = copy.deepcopy(state)
        for group in state["param_groups"]:
            # loading replaces the groups: keep the kernel this torch has for
            # this device, not the one of the fit that saved them (fused on
            # a GPU or a newer torch, plain in older releases)
            group["fused"] = optimizer.defaults["fused"]
        optimizer.load_state_dict(state)
    return optimizer


def _cpu_copy(state_dict):
    """A copy of an optimizer's state on the CPU (a model trained on a GPU
    must load on a machine without one)."""
    return copy.deepcopy(
        {
            **state_dict,
            "state": {
                key: {
                    name: value.detach().cpu() if torch.is_tensor(value) else value
                    for name, value in state.items()
                }
                for key, state in state_dict["state"].items()
            },
        }
    )


def _state(network):
    """A copy of the network's parameters and buffers."""
    return {name: value.clone() for name, value in network.state_dict().items()}
