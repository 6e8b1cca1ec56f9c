"""Value functions that label CFGRL's optimality variable: A(s, a) = Q(s, a) - V(s).

Two estimators, trained on the same data as the policy (docs/algorithms.md, section 2):

- "iql": IQL-style. V is an upper expectile of Q over the data's actions, Q is trained by
  n-step TD onto V of the next state, with two Q heads and slowly moving target copies.
  A(s, a) = min_i Qbar_i(s, a) - V(s).
- "mc": Monte-Carlo. V(s) regresses the observed discounted return G; A(s, a) = G - V(s).
  Unbiased and robust for sparse success data, where a return is simply "did this episode
  succeed, and how soon".

A value step covers ``value_horizon`` actions (the executed part of a chunk): Q sees the state
and the first n actions of the chunk. Values read the policy's state vector, never its cameras
(small, and in every episode); for a vision policy that is proprioception alone, which tells how
far a task has come (gripper closed, can raised) but not where the object is.
Advantages are out-of-fold (ValueLearner): each row is labelled by a value function that never
trained on its episode.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cfgrl_ros.policy.dataset import ChunkDataset
from cfgrl_ros.policy.networks import mlp
from cfgrl_ros.policy.normaliser import Normaliser

ADVANTAGE_ESTIMATORS = ("iql", "mc")


class ValueFunction(nn.Module):
    """V (and for IQL, Q with targets) plus its optimiser; update() is one gradient step."""

    def __init__(
        self,
        estimator: str,
        state_normaliser: Normaliser,
        action_dim: int,
        value_horizon: int,
        hidden_dims: Sequence[int],
        learning_rate: float,
        expectile: float,
        target_update_rate: float,
    ) -> None:
        super().__init__()
        if estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(
                f"advantage estimator {estimator!r} is not one of {ADVANTAGE_ESTIMATORS}"
            )
        self.estimator = estimator
        self.value_horizon = value_horizon
        self.expectile = expectile
        self.target_update_rate = target_update_rate
        self.state_normaliser = copy.deepcopy(state_normaliser)
        state_dim = self.state_normaliser.mean.numel()
        self.value = mlp(state_dim, hidden_dims, 1, layer_norm=True)
        if estimator == "iql":
            q_in = state_dim + value_horizon * action_dim
            self.q_heads = nn.ModuleList(
                [mlp(q_in, hidden_dims, 1, layer_norm=True) for _ in range(2)]
            )
            self.target_q_heads = copy.deepcopy(self.q_heads).requires_grad_(False)
        self.optimiser = torch.optim.Adam(
            [p for p in self.parameters() if p.requires_grad], lr=learning_rate
        )

    def _v(self, states: torch.Tensor) -> torch.Tensor:
        return self.value(self.state_normaliser.normalise(states)).squeeze(-1)

    def _q_inputs(self, states: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        executed = chunks[:, : self.value_horizon].flatten(1)
        return torch.cat([self.state_normaliser.normalise(states), executed], dim=-1)

    def _target_q(self, states: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        q_inputs = self._q_inputs(states, chunks)
        return torch.min(*(head(q_inputs).squeeze(-1) for head in self.target_q_heads))

    def update(self, data: ChunkDataset, rows: torch.Tensor) -> dict[str, float]:
        """One gradient step on the rows of data; returns the losses."""
        states, chunks = data.states[rows], data.chunks[rows]
        if self.estimator == "mc":
            # L_V = E[(G - V(s))^2]: V is the data's expected return.
            value_loss = (data.returns[rows] - self._v(states)).pow(2).mean()
            self._step(value_loss)
            return {"value_loss": value_loss.item()}

        # L_V = E[|tau - 1(Qbar(s,a) - V(s) < 0)| (Qbar(s,a) - V(s))^2]: the tau-expectile of
        # the data's Q, a soft maximum over in-distribution actions (tau = 0.5 is the mean).
        with torch.no_grad():
            target_q = self._target_q(states, chunks)
        difference = target_q - self._v(states)
        expectile_weight = torch.abs(self.expectile - (difference < 0).float())
        value_loss = (expectile_weight * difference.pow(2)).mean()

        # L_Q = sum_i E[(R^n + gamma^n (1 - d) V(s_{t+n}) - Q_i(s, a))^2]; next_discount holds
        # gamma^n (1 - d), d = 1 where the n steps reach the end of the episode.
        with torch.no_grad():
            next_value = self._v(data.states[data.next_row[rows]])
            td_target = data.n_step_rewards[rows] + data.next_discount[rows] * next_value
        q_inputs = self._q_inputs(states, chunks)
        q_loss = sum(
            (head(q_inputs).squeeze(-1) - td_target).pow(2).mean() for head in self.q_heads
        )
        self._step(value_loss + q_loss)  # disjoint parameters: one step updates both

        # Qbar <- (1 - rate) Qbar + rate Q
        with torch.no_grad():
            for target, online in zip(
                self.target_q_heads.parameters(), self.q_heads.parameters(), strict=True
            ):
                target.lerp_(online, self.target_update_rate)
        return {"value_loss": value_loss.item(), "q_loss": q_loss.item()}

    def _step(self, loss: torch.Tensor) -> None:
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()

    @torch.no_grad()
    def advantages(self, data: ChunkDataset, rows: torch.Tensor) -> torch.Tensor:
        """A(s_t, chunk_t) for the given rows of data."""
        value = self._v(data.states[rows])
        if self.estimator == "mc":
            return data.returns[rows] - value
        return self._target_q(data.states[rows], data.chunks[rows]) - value


class ValueLearner(nn.Module):
    """Out-of-fold advantages: the episodes are split into folds (episode number mod folds);
    value function k trains on the episodes outside fold k and labels the rows of fold k.

    Why: a network that has seen an episode can memorise its return (every state of a robot
    episode is unique), and then A = G - V(s) ~ 0 everywhere and the labels are noise. A value
    function that has not seen the episode estimates what the data's policy gets on average
    from that state, which is what "better than average" needs. folds = 1 trains and labels
    in-sample (fine for large datasets).
    """

    def __init__(
        self,
        data: ChunkDataset,
        folds: int,
        estimator: str,
        state_normaliser: Normaliser,
        action_dim: int,
        value_horizon: int,
        hidden_dims: Sequence[int],
        learning_rate: float,
        expectile: float,
        target_update_rate: float,
    ) -> None:
        super().__init__()
        if folds < 1 or (folds > 1 and data.episode_count < folds):
            raise ValueError(
                f"value_folds {folds} needs at least that many episodes (have "
                f"{data.episode_count}); use value_folds 1 for tiny datasets"
            )
        self.functions = nn.ModuleList(
            ValueFunction(
                estimator,
                state_normaliser,
                action_dim,
                value_horizon,
                hidden_dims,
                learning_rate,
                expectile,
                target_update_rate,
            )
            for _ in range(folds)
        )
        # MC needs the whole return, TD a target: rows past a cut-off synthetic end have neither
        usable = data.complete_return if estimator == "mc" else data.td_valid
        fold = data.episode_index % folds
        self.labelled_rows = [torch.nonzero(fold == k).squeeze(1) for k in range(folds)]
        self.training_rows = [
            torch.nonzero(usable & ((fold != k) if folds > 1 else True)).squeeze(1)
            for k in range(folds)
        ]
        if any(len(rows) == 0 for rows in self.training_rows):
            raise ValueError(
                f"a value function has no rows to train on ({estimator}, {folds} folds, "
                f"{data.episode_count} episodes): give more recorded episodes or use value_folds 1"
            )

    def update(
        self, data: ChunkDataset, batch_size: int, generator: torch.Generator
    ) -> dict[str, float]:
        """One gradient step of every fold's value function; returns the mean losses."""
        losses: dict[str, float] = {}
        for function, rows in zip(self.functions, self.training_rows, strict=True):
            batch = rows[
                torch.randint(0, len(rows), (batch_size,), device=rows.device, generator=generator)
            ]
            for name, loss in function.update(data, batch).items():
                losses[name] = losses.get(name, 0.0) + loss / len(self.functions)
        return losses

    @torch.no_grad()
    def advantages(self, data: ChunkDataset, batch_size: int = 4096) -> torch.Tensor:
        """A(s_t, chunk_t) for every row of data, each from the fold that did not train on it."""
        advantage = torch.empty(len(data), device=data.states.device)
        for function, rows in zip(self.functions, self.labelled_rows, strict=True):
            for batch in rows.split(batch_size):
                advantage[batch] = function.advantages(data, batch)
        return advantage

    def training_state(self) -> dict[str, Any]:
        return {
            "networks": self.state_dict(),
            "optimisers": [function.optimiser.state_dict() for function in self.functions],
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["networks"])
        for function, optimiser_state in zip(self.functions, state["optimisers"], strict=True):
            function.optimiser.load_state_dict(optimiser_state)
