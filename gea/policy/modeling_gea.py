"""`GEAPolicy`: LLaVA-OneVision as a multi-embodiment policy with a value head and LoRA.

One policy acts for many environments of different embodiments at once: `act` decodes
a batch of prompts with a KV cache, one forward pass per generated position, masking
each row's logits with that row's `PrefixConstraint`. `score` computes the same
constrained log-probabilities for given action tokens in one teacher-forced pass, which
SFT and PPO train on.

A saved policy folder contains the base checkpoint as transformers writes it (config,
weights, tokenizer, image processor), ``gea_policy.json``, ``value_head.safetensors`` and,
if LoRA is on, the peft adapter under ``lora/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration, PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutputWithPast

from gea.policy.batching import ActionOutput, LeftPaddedIds, ScoreOutput, left_pad
from gea.policy.configuration_gea import CONFIG_NAME, GEAPolicyConfig
from gea.policy.decoding import allowed_ids_mask, masked_entropy, masked_log_probs, select_tokens
from gea.policy.frames import ImageProcessor, encode_frames, preprocess_frames, tokens_per_frame
from gea.policy.lora import LORA_FOLDER, add_lora, base_state_dict, load_lora
from gea.policy.prompt import PolicyInput, PromptBuilder
from gea.policy.shared_prefix import shared_layout, split_shared_prefixes
from gea.policy.value_head import VALUE_HEAD_WEIGHTS, ValueHead
from gea_envs import EmbodimentPrompt
from gea_tokenizers.constraint import PrefixConstraint, find_violation

logger = logging.getLogger(__name__)


@dataclass
class EmbeddedBatch:
    """A left-padded batch with image placeholders replaced by frame embeddings.

    `visual_features` has shape ``(batch, hidden)``: each sample's projector outputs
    averaged over its frames and patches.
    """

    ids: LeftPaddedIds
    inputs_embeds: torch.Tensor
    visual_features: torch.Tensor


@dataclass
class _Prefill:
    """Language-model outputs of a batch, with the cache columns' mask and positions.

    `outputs` cover only the columns of `ids`: each row's tokens after its first
    `prefix_lengths` tokens, which a shared prefix pass put in the cache (0 without one).
    """

    outputs: BaseModelOutputWithPast
    visual_features: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    ids: LeftPaddedIds
    prefix_lengths: torch.Tensor


class GEAPolicy(nn.Module):
    """A LLaVA-OneVision checkpoint wrapped as GEA's policy.

    Args:
        model: the base model, or a `PeftModel` around it that already carries LoRA.
        tokenizer: the model's tokenizer, including any action tokens.
        image_processor: the PIL image processor of the vision tower.
        config: GEA's settings (default `GEAPolicyConfig()`); with ``lora_rank > 0`` and a
            bare `model`, new LoRA adapters are added.
        value_head: a trained value head, or None for a new one.
    """

    def __init__(
        self,
        model: Union[LlavaOnevisionForConditionalGeneration, PeftModel],
        tokenizer: PreTrainedTokenizerBase,
        image_processor: ImageProcessor,
        config: Optional[GEAPolicyConfig] = None,
        value_head: Optional[ValueHead] = None,
    ) -> None:
        super().__init__()
        config = config if config is not None else GEAPolicyConfig()
        if tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token; set tokenizer.pad_token before building the policy.")
        if config.lora_rank > 0 and not isinstance(model, PeftModel):
            model = add_lora(model, config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_target_modules)
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        hidden_size = self.base_model.config.text_config.hidden_size
        self.value_head = value_head if value_head is not None else ValueHead(hidden_size, config.value_hidden_size)
        self.value_head.to(self.base_model.device)
        self.tokens_per_frame = tokens_per_frame(self.base_model.config, config.frame_pool_stride, config.frame_newline)
        self.prompts = PromptBuilder(
            tokenizer,
            image_token_id=self.base_model.config.image_token_id,
            tokens_per_frame=self.tokens_per_frame,
            history_length=config.history_length,
        )

    # ----------------------------------------------------------------- loading and saving

    @property
    def base_model(self) -> LlavaOnevisionForConditionalGeneration:
        """The LLaVA-OneVision model, inside the peft wrapper if LoRA is on."""
        if isinstance(self.model, PeftModel):
            return self.model.get_base_model()
        return self.model

    @property
    def has_lora(self) -> bool:
        return isinstance(self.model, PeftModel)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: Union[str, Path],
        config: Optional[GEAPolicyConfig] = None,
        dtype: Optional[torch.dtype] = None,
        lora_trainable: bool = True,
    ) -> "GEAPolicy":
        """Load a policy from a saved folder or a LLaVA-OneVision checkpoint (local folder or hub id).

        A GEA folder also restores ``gea_policy.json``, the value head and the LoRA adapter.
        A plain checkpoint gets `config` (default `GEAPolicyConfig()`) and a new value head.
        Passing `config` overrides a saved ``gea_policy.json``.

        NOTE: GEA's own files are read from local folders only; a hub id loads just the
        base checkpoint.
        """
        base = LlavaOnevisionForConditionalGeneration.from_pretrained(name_or_path, dtype=dtype)
        base.eval()
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        image_processor = ImageProcessor.from_pretrained(name_or_path)
        folder = Path(name_or_path)
        if config is None:
            config = GEAPolicyConfig.load(folder) if (folder / CONFIG_NAME).is_file() else GEAPolicyConfig()
        model: Union[LlavaOnevisionForConditionalGeneration, PeftModel] = base
        if (folder / LORA_FOLDER).is_dir():
            model = load_lora(base, str(folder / LORA_FOLDER), trainable=lora_trainable)
        value_head = None
        if (folder / VALUE_HEAD_WEIGHTS).is_file():
            value_head = ValueHead(base.config.text_config.hidden_size, config.value_hidden_size)
            value_head.load_state_dict(load_file(folder / VALUE_HEAD_WEIGHTS))
        logger.info("Loaded GEA policy from %s (LoRA: %s).", name_or_path, isinstance(model, PeftModel))
        return cls(model, tokenizer, image_processor, config, value_head)

    def save_pretrained(self, folder: Union[str, Path]) -> Path:
        """Save everything `from_pretrained` needs into `folder` and return its path.

        The base weights are saved without LoRA, so the folder also loads as a plain
        LLaVA-OneVision checkpoint.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        base = self.base_model
        if self.has_lora:
            base.save_pretrained(folder, state_dict=base_state_dict(base))
            self.model.save_pretrained(folder / LORA_FOLDER)
        else:
            base.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        self.config.save(folder)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.value_head.state_dict().items()}
        save_file(state, folder / VALUE_HEAD_WEIGHTS)
        logger.info("Saved GEA policy to %s.", folder)
        return folder

    def add_tokens(self, tokens: Iterable[str]) -> list[int]:
        """Add `tokens` (such as ``<act_0>``) as special tokens, grow the embeddings and return their ids.

        Call it before adding LoRA; the new embedding rows are trained only if the
        embeddings are.
        """
        if self.has_lora:
            raise ValueError("Add tokens before LoRA is attached: build the policy with lora_rank=0 first.")
        tokens = list(tokens)
        self.tokenizer.add_special_tokens({"additional_special_tokens": tokens}, replace_extra_special_tokens=False)
        self.base_model.resize_token_embeddings(len(self.tokenizer))
        return [self.tokenizer.convert_tokens_to_ids(token) for token in tokens]

    # ---------------------------------------------------------------------------- training

    def freeze_except_lora_and_value_head(self) -> list[str]:
        """Freeze every parameter except the LoRA adapters and the value head; return the trainable names."""
        if not self.has_lora:
            raise ValueError("The policy has no LoRA adapter; build it with lora_rank > 0 to train adapters.")
        trainable = []
        for name, parameter in self.named_parameters():
            parameter.requires_grad = name.startswith("value_head.") or ".lora_" in name
            if parameter.requires_grad:
                trainable.append(name)
        return trainable

    # ------------------------------------------------------------------------------ inputs

    def build_input(
        self,
        prompt: EmbodimentPrompt,
        instruction: str,
        frames_history: Sequence[Sequence[np.ndarray]],
        action_ids_history: Sequence[Sequence[int]],
    ) -> PolicyInput:
        """Build the prompt for the next action; see `PromptBuilder.build`."""
        return self.prompts.build(prompt, instruction, frames_history, action_ids_history)

    def embed(self, sequences: Sequence[Sequence[int]], frames: Sequence[Sequence[np.ndarray]]) -> EmbeddedBatch:
        """Left-pad token sequences and put each sample's frame embeddings in its image placeholders.

        `sequences[i]` must contain ``tokens_per_frame * len(frames[i])`` image placeholder ids,
        as prompts from `build_input` do. The result feeds the language model directly, for
        example as ``inputs_embeds`` of ``generate``.
        """
        base = self.base_model
        ids = left_pad(sequences, self.tokenizer.pad_token_id)
        frame_counts = [len(sample_frames) for sample_frames in frames]
        if min(frame_counts) == 0:
            raise ValueError(f"Sample {frame_counts.index(0)} has no frames; every prompt shows at least one.")
        all_frames = [frame for sample_frames in frames for frame in sample_frames]
        pixel_values = preprocess_frames(self.image_processor, all_frames)
        config = self.config
        image_tokens, frame_features = encode_frames(
            base, pixel_values, config.frame_pool_stride, config.frame_newline, config.frame_pool_mode
        )

        input_ids = ids.input_ids.to(base.device)
        inputs_embeds = base.get_input_embeddings()(input_ids)
        placeholders = input_ids == base.config.image_token_id
        expected = image_tokens.shape[0] * image_tokens.shape[1]
        if int(placeholders.sum()) != expected:
            raise ValueError(
                f"The prompts contain {int(placeholders.sum())} image placeholder tokens but their {len(all_frames)} "
                f"frames need {expected} ({self.tokens_per_frame} each); build prompts with GEAPolicy.build_input."
            )
        # masked_scatter fills placeholders in row-major order, which is the order of `all_frames`.
        inputs_embeds = inputs_embeds.masked_scatter(
            placeholders[..., None], image_tokens.reshape(-1, image_tokens.shape[-1]).to(inputs_embeds.dtype)
        )
        visual_features = torch.stack([chunk.mean(dim=0) for chunk in frame_features.split(frame_counts)])
        return EmbeddedBatch(ids=ids, inputs_embeds=inputs_embeds, visual_features=visual_features)

    def _forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values=None,
        use_cache: bool = False,
    ):
        device = self.base_model.device
        return self.base_model.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask.to(device),
            position_ids=position_ids.to(device),
            past_key_values=past_key_values,
            use_cache=use_cache,
        )

    @staticmethod
    def _check_batch(inputs: Sequence[PolicyInput], constraints: Sequence[PrefixConstraint]) -> None:
        if not inputs:
            raise ValueError("Got an empty batch; pass at least one PolicyInput.")
        if len(constraints) != len(inputs):
            raise ValueError(f"Got {len(inputs)} inputs but {len(constraints)} constraints; pass one per input.")

    def _resolve_temperature(self, temperature: Optional[float]) -> tuple[bool, float]:
        """Return (greedy, distribution temperature); greedy decoding reports log-probs at temperature 1."""
        temperature = self.config.temperature if temperature is None else float(temperature)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 decodes greedily), got {temperature}.")
        if temperature == 0:
            return True, 1.0
        return False, temperature

    # ------------------------------------------------------------------------------ acting

    @torch.no_grad()
    def act(
        self,
        inputs: Sequence[PolicyInput],
        constraints: Sequence[PrefixConstraint],
        temperature: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
    ) -> ActionOutput:
        """Decode one action per input, each row restricted by its own constraint.

        Args:
            inputs: prompts from `build_input`, one per environment.
            constraints: the action grammar of each row's embodiment.
            temperature: sampling temperature, 0 for greedy; defaults to `config.temperature`.
                Log-probabilities are those of the masked distribution at this temperature
                (at temperature 1 when greedy), matching `score` at the same temperature.
            generator: random generator for sampling.
        """
        self._check_batch(inputs, constraints)
        greedy, distribution_temperature = self._resolve_temperature(temperature)
        base = self.base_model
        prefill = self._prefill([item.input_ids for item in inputs], [item.frames for item in inputs])
        outputs = prefill.outputs
        last_hidden = outputs.last_hidden_state[:, -1]
        values = self.value_head(last_hidden, prefill.visual_features)
        logits = base.lm_head(last_hidden)

        prefixes: list[list[int]] = [[] for _ in inputs]
        token_log_probs: list[list[torch.Tensor]] = [[] for _ in inputs]
        attention_mask = prefill.attention_mask
        positions = prefill.position_ids[:, -1]
        cache = outputs.past_key_values
        allowed = allowed_ids_mask(constraints, prefixes, logits.shape[-1], logits.device)
        if not bool(allowed.any(dim=-1).all()):
            raise ValueError("A constraint allows no first token; every action needs at least one token.")
        self._reject_image_token(allowed)
        max_steps = max(constraint.max_length for constraint in constraints)
        for _ in range(max_steps):
            log_probs = masked_log_probs(logits, allowed, distribution_temperature)
            tokens = select_tokens(log_probs, greedy, generator)
            chosen = log_probs.gather(-1, tokens[:, None]).squeeze(-1)
            for row in torch.nonzero(allowed.any(dim=-1)).flatten().tolist():
                prefixes[row].append(int(tokens[row]))
                token_log_probs[row].append(chosen[row])
            allowed = allowed_ids_mask(constraints, prefixes, logits.shape[-1], logits.device)
            if not bool(allowed.any()):
                break
            self._reject_image_token(allowed)
            # Finished rows still run through the forward pass with a throwaway token, which
            # keeps the batch rectangular; their outputs are ignored.
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(inputs), 1))], dim=-1)
            positions = positions + 1
            outputs = self._forward(
                base.get_input_embeddings()(tokens[:, None]),
                attention_mask,
                positions[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            cache = outputs.past_key_values
            logits = base.lm_head(outputs.last_hidden_state[:, -1])

        self._check_complete(constraints, prefixes)
        log_probs_tensor, mask = _pad_rows(token_log_probs, device=values.device)
        return ActionOutput(token_ids=prefixes, log_probs=log_probs_tensor, mask=mask, values=values)

    def _prefill(self, sequences: Sequence[Sequence[int]], frames: Sequence[Sequence[np.ndarray]]) -> _Prefill:
        """Run token sequences through the language model with a KV cache, sharing common prefixes.

        Rows that start with the same long text before their first frame (one embodiment's
        header) get that prefix computed once; see `gea.policy.shared_prefix`.
        """
        base = self.base_model
        split = split_shared_prefixes(sequences, base.config.image_token_id)
        if split is None:
            batch = self.embed(sequences, frames)
            outputs = self._forward(
                batch.inputs_embeds, batch.ids.attention_mask, batch.ids.position_ids, use_cache=True
            )
            no_prefix = torch.zeros(len(sequences), dtype=torch.long)
            return _Prefill(
                outputs, batch.visual_features, batch.ids.attention_mask, batch.ids.position_ids, batch.ids, no_prefix
            )

        layout, prefix_ids = shared_layout(split, self.tokenizer.pad_token_id)
        prefix_outputs = self._forward(
            base.get_input_embeddings()(prefix_ids.input_ids.to(base.device)),
            prefix_ids.attention_mask,
            prefix_ids.position_ids,
            use_cache=True,
        )
        cache = prefix_outputs.past_key_values
        cache.reorder_cache(split.group_of_row)  # one row per group -> one row per input
        suffix = self.embed(split.suffixes, frames)
        outputs = self._forward(
            suffix.inputs_embeds,
            layout.attention_mask,
            layout.position_ids[:, layout.prefix_width :],
            past_key_values=cache,
            use_cache=True,
        )
        prefix_lengths = prefix_ids.lengths[split.group_of_row]
        return _Prefill(
            outputs, suffix.visual_features, layout.attention_mask, layout.position_ids, suffix.ids, prefix_lengths
        )

    def _reject_image_token(self, allowed: torch.Tensor) -> None:
        # An emitted image placeholder would be taken for a frame slot when the action is scored.
        image_token_id = self.base_model.config.image_token_id
        if bool(allowed[..., image_token_id].any()):
            raise ValueError(
                f"A constraint allows the image placeholder id {image_token_id}; action grammars must exclude it."
            )

    @staticmethod
    def _check_complete(constraints: Sequence[PrefixConstraint], prefixes: Sequence[Sequence[int]]) -> None:
        for row, (constraint, prefix) in enumerate(zip(constraints, prefixes)):
            if not constraint.is_complete(prefix):
                raise ValueError(
                    f"Row {row}: the action {list(prefix)} is incomplete after max_length={constraint.max_length} "
                    "tokens; the constraint's max_length is too small for its grammar."
                )

    # ------------------------------------------------------------------------------ values

    def values(self, inputs: Sequence[PolicyInput]) -> torch.Tensor:
        """Return the value estimates ``(batch,)`` of prompts, from one forward pass without decoding.

        They match the `values` of `act` and `score` for the same prompts up to floating-point
        rounding, because the value head reads the last prompt position and causal attention
        keeps it independent of the action tokens that follow. Gradients flow to the
        trainable parameters.
        """
        if not inputs:
            raise ValueError("Got an empty batch; pass at least one PolicyInput.")
        prefill = self._prefill([item.input_ids for item in inputs], [item.frames for item in inputs])
        return self.value_head(prefill.outputs.last_hidden_state[:, -1], prefill.visual_features)

    # ----------------------------------------------------------------------------- scoring

    def score(
        self,
        inputs: Sequence[PolicyInput],
        action_ids: Sequence[Sequence[int]],
        constraints: Sequence[PrefixConstraint],
        temperature: float = 1.0,
    ) -> ScoreOutput:
        """Score given action tokens by teacher forcing, in one pass over the batch.

        Each action must be complete and valid under its row's constraint. Gradients flow
        to every trainable parameter, so SFT and PPO losses are built from the result.
        """
        self._check_batch(inputs, constraints)
        if len(action_ids) != len(inputs):
            raise ValueError(f"Got {len(inputs)} inputs but {len(action_ids)} actions; pass one per input.")
        actions = [[int(token) for token in action] for action in action_ids]
        for row, (constraint, action) in enumerate(zip(constraints, actions)):
            violation = find_violation(constraint, action)
            if violation is not None:
                raise ValueError(f"Row {row}: action {action} is invalid under its constraint: {violation}.")
        image_token_id = self.base_model.config.image_token_id
        if any(image_token_id in action for action in actions):
            raise ValueError(f"An action contains the image placeholder id {image_token_id}; actions must exclude it.")
        base = self.base_model
        prefill = self._prefill(
            [item.input_ids + action for item, action in zip(inputs, actions)], [item.frames for item in inputs]
        )
        hidden = prefill.outputs.last_hidden_state  # (batch, columns after the shared prefixes, hidden)

        # The hidden state at column p predicts the token at column p + 1, so action token j
        # of a row is predicted at its last prompt column plus j.
        prompt_lengths = torch.tensor([len(item.input_ids) for item in inputs], device=hidden.device)
        columns_in_hidden = prompt_lengths - prefill.prefix_lengths.to(hidden.device)
        last_prompt_column = prefill.ids.offsets.to(hidden.device) + columns_in_hidden - 1
        max_length = max(len(action) for action in actions)
        steps = torch.arange(max_length, device=hidden.device)
        columns = (last_prompt_column[:, None] + steps).clamp(max=hidden.shape[1] - 1)
        gathered = hidden.gather(1, columns[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = base.lm_head(gathered)

        allowed = torch.stack(
            [
                allowed_ids_mask(constraints, [action[:step] for action in actions], logits.shape[-1], logits.device)
                for step in range(max_length)
            ],
            dim=1,
        )
        log_probs = masked_log_probs(logits, allowed, temperature)
        targets, mask = _pad_targets(actions, max_length, hidden.device)
        token_log_probs = torch.where(mask, log_probs.gather(-1, targets[..., None]).squeeze(-1), 0.0)
        entropy = torch.where(mask, masked_entropy(log_probs, allowed), 0.0)
        rows = torch.arange(len(inputs), device=hidden.device)
        values = self.value_head(hidden[rows, last_prompt_column], prefill.visual_features)
        return ScoreOutput(log_probs=token_log_probs, entropy=entropy, mask=mask, values=values)


def _pad_rows(rows: Sequence[Sequence[torch.Tensor]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    values = torch.zeros((len(rows), width), device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.bool, device=device)
    for index, row in enumerate(rows):
        if row:
            values[index, : len(row)] = torch.stack(list(row))
            mask[index, : len(row)] = True
    return values, mask


def _pad_targets(actions: Sequence[Sequence[int]], width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    targets = torch.zeros((len(actions), width), dtype=torch.long, device=device)
    mask = torch.zeros((len(actions), width), dtype=torch.bool, device=device)
    for index, action in enumerate(actions):
        targets[index, : len(action)] = torch.as_tensor(action, dtype=torch.long, device=device)
        mask[index, : len(action)] = True
    return targets, mask
