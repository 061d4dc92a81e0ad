"""Per-token divergence from the reference model, and divergence-weighted GRPO advantages.

The token-level RLVR study (*Sparse but Critical*) finds that RL changes the next-token
distribution at few positions, and proposes to concentrate the update there. We do that by
scaling each completion token's advantage by a weight that grows with how far the current
policy has moved from the reference (starting) model at that token.

Per-token divergence (TRL's own KL estimator, "k3", of KL(pi || pi_ref) from the sampled
token ``y_t``), with ``delta_t = log pi_ref(y_t | ...) - log pi(y_t | ...)``:

    d_t = exp(delta_t) - delta_t - 1        (>= 0, and 0 where the models agree)

Weights, over the completion tokens of one generation batch (``mean`` is the mean over
those tokens, ``eps = 1e-8``, ``c = MAX_RELATIVE_DIVERGENCE``):

    u_t = 1 + min(d_t / (mean(d) + eps), c)
    w_t = u_t / mean(u)                     (so mean(w) = 1 exactly)

and the advantage of token ``t`` of completion ``i`` becomes ``A_i * w_t``. When the policy
equals the reference (step 0) every ``w_t`` is 1 and training is plain GRPO; tokens where
the policy has moved the most get up to ``(1 + c) / mean(u)`` times the plain advantage.
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer
from trl.trainer.utils import add_fused_lm_head, disable_dropout_in_model

#: Cap on a token's divergence relative to the batch mean (keeps one outlier token from taking the whole update).
MAX_RELATIVE_DIVERGENCE = 10.0


def per_token_kl(policy_logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(policy || reference) per sampled token; inputs and output have shape (B, T)."""
    delta = ref_logps - policy_logps
    return torch.exp(delta) - delta - 1.0


def divergence_weights(
    divergence: torch.Tensor, mask: torch.Tensor, cap: float = MAX_RELATIVE_DIVERGENCE
) -> torch.Tensor:
    """Advantage weights of mean 1 over the masked tokens (formula in the module docstring).

    Args:
        divergence: per-token divergence ``d_t >= 0``, shape (B, T).
        mask: 1 on completion tokens, 0 on padding, shape (B, T).
    Returns:
        weights of shape (B, T); 1 on padding.
    """
    mask = mask.to(divergence.dtype)
    count = mask.sum().clamp(min=1.0)
    mean_d = (divergence * mask).sum() / count
    u = 1.0 + torch.clamp(divergence / (mean_d + 1e-8), max=cap)
    mean_u = (u * mask).sum() / count
    weights = u / mean_u
    return torch.where(mask > 0, weights, torch.ones_like(weights))


class LensGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer plus a reference-divergence monitor and divergence-weighted advantages.

    The only hook overridden is ``_generate_and_score_completions``, which builds each
    generation batch: after TRL has sampled, scored and computed the per-sequence advantages,
    we compute per-token log-probs of the sampled completions under the policy and the
    reference model, log their mean KL (``lens/kl``), and, with ``divergence_weighting``,
    replace the (B,) advantages by (B, T) weighted advantages (TRL's loss accepts both).

    Args:
        reference_model: the frozen starting model (a separate copy). Needed when
            ``beta == 0`` (TRL then loads none) and KL tracking or weighting is on; when
            ``beta > 0`` TRL's own reference model is used and this may be ``None``.
        divergence_weighting: scale advantages per token (see the module docstring).
    """

    def __init__(self, *args, reference_model=None, divergence_weighting: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.divergence_weighting = divergence_weighting
        self.lens_ref_model = self.ref_model
        if self.lens_ref_model is None and reference_model is not None:
            reference_model.eval()
            if self.args.disable_dropout:
                disable_dropout_in_model(reference_model)
            add_fused_lm_head(
                reference_model,
                temperature=self.temperature,
                cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32,
            )
            for param in reference_model.parameters():
                param.requires_grad_(False)
            self.lens_ref_model = self.accelerator.prepare_model(reference_model, evaluation_mode=True)
        if divergence_weighting and self.lens_ref_model is None:
            raise ValueError("divergence weighting needs a reference model")

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.lens_ref_model is None:
            return output
        mode = "train" if self.model.training else "eval"
        prompt_completion_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        logits_to_keep = output["completion_ids"].size(1)
        mask = output["completion_mask"]
        with torch.no_grad():
            policy_logps = output.get("old_per_token_logps")
            if policy_logps is None:
                policy_logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, prompt_completion_ids, attention_mask, logits_to_keep
                )
            ref_logps = output.get("ref_per_token_logps")
            if ref_logps is None:
                ref_logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.lens_ref_model, prompt_completion_ids, attention_mask, logits_to_keep
                )
        divergence = per_token_kl(policy_logps.float(), ref_logps.float())
        count = mask.sum().clamp(min=1)
        self._metrics[mode]["lens/kl"].append(((divergence * mask).sum() / count).item())
        if self.divergence_weighting:
            weights = divergence_weights(divergence, mask)
            output["sequence_advantages"] = output["advantages"]
            output["advantages"] = output["advantages"].unsqueeze(1) * weights
            masked = weights[mask.bool()]
            if masked.numel():
                self._metrics[mode]["lens/divergence_weight_max"].append(masked.max().item())
                self._metrics[mode]["lens/divergence_weight_mean"].append(masked.mean().item())
        return output
