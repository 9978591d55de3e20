"""One object that turns every embodiment's actions into LLM token ids and back.

`ActionDetokenizer` picks the representation by action-space kind:

- continuous: codes of a `ContinuousTokenizer`, each mapped to a token id by a `CodeMap`;
- discrete: the action's language name, then the end-of-sequence token;
- UI: ``click X Y`` or ``type TEXT``, then the end-of-sequence token.

Decoding does not raise on bad tokens, so a policy's mistake cannot crash a rollout (only
an unknown embodiment name raises). It returns a fallback action with ``valid=False`` and
counts the decode in a per-embodiment validity rate. Fallbacks: continuous -> the zero vector clipped into the action bounds,
discrete -> index 0, UI -> ``click 0 0``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from transformers import PreTrainedTokenizerBase

from gea_envs.spaces import CLICK, Action, ActionKind, ActionSpace, ContinuousActionSpace, DiscreteActionSpace
from gea_envs.spaces import UIAction, UIActionSpace
from gea_tokenizers.constraint import FixedLengthConstraint, PrefixConstraint, find_violation
from gea_tokenizers.continuous import ContinuousTokenizer
from gea_tokenizers.loading import load_continuous_tokenizer
from gea_tokenizers.semantic import DecodedAction, DiscreteActionCodec, UIActionCodec, printable_token_texts
from gea_tokenizers.vocab import CodeMap

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_FILE = "detokenizer.json"
CODE_MAP_FILE = "code_map.json"
CONTINUOUS_FOLDER = "continuous"
DISCRETE_FALLBACK = 0
UI_FALLBACK = UIAction(CLICK, x=0, y=0)


class _ContinuousCodec:
    """Continuous actions as ``tokens_for(embodiment)`` code tokens."""

    def __init__(self, name: str, space: ContinuousActionSpace, tokenizer: ContinuousTokenizer, code_map: CodeMap):
        self.name = name
        self.space = space
        self._tokenizer = tokenizer
        self._code_map = code_map
        width = tokenizer.statistics_for(name).dim
        if width != space.dim:
            raise ValueError(
                f"Embodiment {name!r} has actions of width {space.dim}, but the {tokenizer.tokenizer_type} "
                f"tokenizer was trained on width {width}; retrain the tokenizer on this embodiment's data."
            )
        self.constraint = FixedLengthConstraint([code_map.token_ids] * tokenizer.tokens_for(name))
        self.fallback = space.clip(np.zeros(space.dim, dtype=np.float32))

    def encode_many(self, actions: np.ndarray) -> list[list[int]]:
        codes = self._tokenizer.encode(self.name, actions)
        return [self._code_map.codes_to_ids(row) for row in codes.tolist()]

    def encode(self, action: Action) -> list[int]:
        return self.encode_many(self.space.validate(action)[None, :])[0]

    def decode(self, token_ids: Sequence[int]) -> DecodedAction:
        violation = find_violation(self.constraint, token_ids)
        if violation is not None:
            return DecodedAction(self.fallback.copy(), False, violation)
        codes = np.asarray([[self._code_map.id_to_code(token_id) for token_id in token_ids]], dtype=np.int64)
        return DecodedAction(self.space.clip(self._tokenizer.decode(self.name, codes)[0]), True)


class _SemanticCodec:
    """Adapts a discrete or UI codec to the detokenizer's codec interface with a fixed fallback."""

    def __init__(self, codec: Union[DiscreteActionCodec, UIActionCodec], fallback: Action) -> None:
        self.codec = codec
        self.space = codec.space
        self.constraint = codec.constraint
        self.fallback = fallback

    def encode(self, action: Action) -> list[int]:
        return self.codec.encode(action)

    def decode(self, token_ids: Sequence[int]) -> DecodedAction:
        return self.codec.decode(token_ids, self.fallback)


def action_space_to_json(space: ActionSpace) -> dict[str, Any]:
    """Describe `space` as JSON data; equal spaces give equal data."""
    return {"kind": space.kind.value, **json.loads(json.dumps(dataclasses.asdict(space)))}


def tokenizer_vocabulary_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    """Return a SHA-256 hex digest of the token-to-id vocabulary, including added tokens."""
    vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocabulary, ensure_ascii=False).encode()).hexdigest()


def action_phrase_token_ids(action_spaces: Mapping[str, ActionSpace], tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Return the ids that the discrete and UI phrases of `action_spaces` use, for excluding them from code maps."""
    token_texts = printable_token_texts(tokenizer)
    ids: set[int] = set()
    for space in action_spaces.values():
        if space.kind is ActionKind.DISCRETE:
            ids |= DiscreteActionCodec(space, tokenizer, token_texts).phrase_token_ids
        elif space.kind is ActionKind.UI:
            ids |= UIActionCodec(space, tokenizer, token_texts).phrase_token_ids
    return ids


class ActionDetokenizer:
    """Encode, decode and constrain the action tokens of several embodiments.

    Args:
        action_spaces: embodiment name -> action space.
        llm_tokenizer: the policy's tokenizer; its eos token ends discrete and UI actions.
        continuous: tokenizer for continuous embodiments; required if any space is continuous.
        code_map: token ids of the continuous codes; required with `continuous`.
    """

    def __init__(
        self,
        action_spaces: Mapping[str, ActionSpace],
        llm_tokenizer: PreTrainedTokenizerBase,
        continuous: Optional[ContinuousTokenizer] = None,
        code_map: Optional[CodeMap] = None,
    ) -> None:
        if not action_spaces:
            raise ValueError("ActionDetokenizer needs at least one embodiment.")
        self.action_spaces = dict(action_spaces)
        self.llm_tokenizer = llm_tokenizer
        self.continuous = continuous
        self.code_map = code_map
        self._check_continuous_parts()
        self._codecs = self._build_codecs()
        self._decode_counts = {name: [0, 0] for name in self.action_spaces}  # [decoded, valid]

    def _check_continuous_parts(self) -> None:
        continuous_names = [name for name, space in self.action_spaces.items() if space.kind is ActionKind.CONTINUOUS]
        if continuous_names and (self.continuous is None or self.code_map is None):
            raise ValueError(
                f"Embodiments {continuous_names} have continuous actions; pass a continuous tokenizer and a code map."
            )
        if self.continuous is not None and self.code_map is not None:
            if self.code_map.num_codes != self.continuous.num_codes:
                raise ValueError(
                    f"The code map has {self.code_map.num_codes} ids but the {self.continuous.tokenizer_type} "
                    f"tokenizer has {self.continuous.num_codes} codes; build the map with num_codes="
                    f"{self.continuous.num_codes}."
                )
            self.code_map.check_tokenizer(self.llm_tokenizer)

    def _build_codecs(self) -> dict[str, Any]:
        needs_texts = any(space.kind is not ActionKind.CONTINUOUS for space in self.action_spaces.values())
        token_texts = printable_token_texts(self.llm_tokenizer) if needs_texts else {}
        codecs: dict[str, Any] = {}
        for name, space in sorted(self.action_spaces.items()):
            if isinstance(space, ContinuousActionSpace):
                codecs[name] = _ContinuousCodec(name, space, self.continuous, self.code_map)
            elif isinstance(space, DiscreteActionSpace):
                codecs[name] = _SemanticCodec(DiscreteActionCodec(space, self.llm_tokenizer, token_texts),
                                              DISCRETE_FALLBACK)
            elif isinstance(space, UIActionSpace):
                codecs[name] = _SemanticCodec(UIActionCodec(space, self.llm_tokenizer, token_texts), UI_FALLBACK)
            else:
                raise TypeError(f"Embodiment {name!r} has an unsupported action space {space!r}.")
        return codecs

    @classmethod
    def from_registry(
        cls,
        llm_tokenizer: PreTrainedTokenizerBase,
        continuous: Optional[ContinuousTokenizer] = None,
        code_map: Optional[CodeMap] = None,
        names: Optional[Iterable[str]] = None,
    ) -> "ActionDetokenizer":
        """Build from the action spaces of registered adapters.

        With `names` None, every registered embodiment is included except continuous ones
        that `continuous` has no statistics for; those are logged and skipped.
        """
        from gea_envs import ADAPTERS, get_adapter

        explicit = names is not None
        spaces: dict[str, ActionSpace] = {}
        for name in (list(names) if explicit else ADAPTERS.names()):
            space = get_adapter(name).action_space
            known = continuous is not None and name in continuous.statistics
            if space.kind is ActionKind.CONTINUOUS and not known and not explicit:
                logger.warning("Skipping %s: the continuous tokenizer has no statistics for it.", name)
                continue
            spaces[name] = space
        return cls(spaces, llm_tokenizer, continuous, code_map)

    @property
    def embodiments(self) -> list[str]:
        return sorted(self.action_spaces)

    def _codec(self, embodiment: str) -> Any:
        try:
            return self._codecs[embodiment]
        except KeyError:
            raise ValueError(
                f"Unknown embodiment {embodiment!r}; this detokenizer covers {self.embodiments}."
            ) from None

    def encode(self, embodiment: str, action: Action) -> list[int]:
        """Return the token ids of one action; an action outside the space raises ValueError."""
        return self._codec(embodiment).encode(action)

    def encode_many(self, embodiment: str, actions: Sequence[Action]) -> list[list[int]]:
        """Encode many actions of one embodiment; continuous actions are encoded as one batch."""
        codec = self._codec(embodiment)
        if isinstance(codec, _ContinuousCodec):
            return codec.encode_many(np.stack([codec.space.validate(action) for action in actions]))
        return [codec.encode(action) for action in actions]

    def decode(self, embodiment: str, token_ids: Sequence[int]) -> DecodedAction:
        """Decode one action's ids; ids that are not exactly one valid action give the fallback with valid=False."""
        decoded = self._codec(embodiment).decode(token_ids)
        counts = self._decode_counts[embodiment]
        counts[0] += 1
        counts[1] += int(decoded.valid)
        if not decoded.valid:
            logger.debug("Invalid action tokens for %s: %s", embodiment, decoded.reason)
        return decoded

    def constraint(self, embodiment: str) -> PrefixConstraint:
        return self._codec(embodiment).constraint

    def fallback_action(self, embodiment: str) -> Action:
        """The action that `decode` returns for invalid tokens of `embodiment`."""
        return self._codec(embodiment).fallback

    def decode_validity(self) -> dict[str, float]:
        """Return ``rollout/<embodiment>/decode_valid_rate`` for each embodiment decoded since the last reset."""
        return {
            f"rollout/{name}/decode_valid_rate": valid / decoded
            for name, (decoded, valid) in sorted(self._decode_counts.items())
            if decoded
        }

    def reset_decode_counts(self) -> None:
        for counts in self._decode_counts.values():
            counts[0] = counts[1] = 0

    def fingerprint(self) -> str:
        """Return a SHA-256 hex digest of everything that maps actions to ids.

        It covers the action spaces, the LLM vocabulary, the end token, the code map and
        the continuous tokenizer's settings, statistics and weights. A checkpoint stores
        it and rejects a detokenizer whose fingerprint differs.
        """
        digest = hashlib.sha256()
        digest.update(json.dumps(self._manifest(), sort_keys=True).encode())
        digest.update(json.dumps(self.code_map.to_json() if self.code_map else None).encode())
        digest.update((self.continuous.fingerprint() if self.continuous else "").encode())
        return digest.hexdigest()

    def _manifest(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "action_spaces": {name: action_space_to_json(space) for name, space in sorted(self.action_spaces.items())},
            "llm_vocabulary_sha256": tokenizer_vocabulary_hash(self.llm_tokenizer),
            "end_token_id": self.llm_tokenizer.eos_token_id,
            "has_continuous": self.continuous is not None,
        }

    def save(self, directory: Union[str, Path]) -> Path:
        """Write manifest, code map and continuous tokenizer into `directory` (the LLM tokenizer is not saved)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = self._manifest()
        manifest["fingerprint"] = self.fingerprint()
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if self.code_map is not None:
            self.code_map.save(directory / CODE_MAP_FILE)
        if self.continuous is not None:
            self.continuous.save(directory / CONTINUOUS_FOLDER)
        return directory

    @classmethod
    def load(
        cls,
        directory: Union[str, Path],
        llm_tokenizer: PreTrainedTokenizerBase,
        action_spaces: Optional[Mapping[str, ActionSpace]] = None,
    ) -> "ActionDetokenizer":
        """Load a detokenizer written by `save`.

        Raises ValueError if `llm_tokenizer`'s vocabulary differs from the saved one, or if
        `action_spaces` (default: the saved embodiments' registered adapters) differ from
        the saved spaces.
        """
        directory = Path(directory)
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory} has detokenizer format {manifest.get('format_version')}, this code reads "
                f"{FORMAT_VERSION}."
            )
        if tokenizer_vocabulary_hash(llm_tokenizer) != manifest["llm_vocabulary_sha256"]:
            raise ValueError(
                f"The LLM tokenizer's vocabulary differs from the one {directory} was built with; load the "
                "tokenizer saved with the same checkpoint."
            )
        if action_spaces is None:
            from gea_envs import get_adapter

            action_spaces = {name: get_adapter(name).action_space for name in manifest["action_spaces"]}
        requested = {name: action_space_to_json(space) for name, space in sorted(action_spaces.items())}
        if requested != manifest["action_spaces"]:
            raise ValueError(
                f"Action spaces differ from those saved in {directory}: saved {manifest['action_spaces']}, "
                f"requested {requested}. Load with the adapters the detokenizer was built for."
            )
        code_map = CodeMap.load(directory / CODE_MAP_FILE) if (directory / CODE_MAP_FILE).is_file() else None
        continuous = load_continuous_tokenizer(directory / CONTINUOUS_FOLDER) if manifest["has_continuous"] else None
        detokenizer = cls(action_spaces, llm_tokenizer, continuous, code_map)
        if detokenizer.fingerprint() != manifest["fingerprint"]:
            raise ValueError(f"{directory} is inconsistent: its fingerprint does not match its contents.")
        return detokenizer
