"""Translation between spatialmem parameter names and the official checkpoint key names."""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["DUST3R_RULES", "SPANN3R_RULES", "KeyMap", "Rule", "prefixed"]


@dataclass(frozen=True)
class Rule:
    """One renaming rule: a regex over spatialmem keys and official templates.

    ``official`` holds one or more ``re.sub`` templates; more than one means the official layout
    stores the same tensor under alias names (e.g. the DPT ``layer_rn`` convolutions).
    """

    ours: str
    official: tuple[str, ...]


def _head_rules(n: int) -> list[Rule]:
    ours, off = rf"^head{n}\.", f"downstream_head{n}."
    dpt = f"{off}dpt."
    return [
        Rule(ours + r"proj\.(.+)$", (off + r"proj.\1",)),
        Rule(ours + r"act_postprocess\.(.+)$", (dpt + r"act_postprocess.\1",)),
        Rule(
            ours + r"layer_rn\.(\d)\.(.+)$",
            (dpt + r"scratch.layer_rn.\1.\2", dpt + r"scratch.layer<\1+1>_rn.\2"),
        ),
        Rule(
            ours + r"refinenet\.(\d)\.res_unit(\d)\.(.+)$",
            (dpt + r"scratch.refinenet<\1+1>.resConfUnit\2.\3",),
        ),
        Rule(
            ours + r"refinenet\.(\d)\.out_conv\.(.+)$",
            (dpt + r"scratch.refinenet<\1+1>.out_conv.\2",),
        ),
        Rule(ours + r"head\.(.+)$", (dpt + r"head.\1",)),
    ]


DUST3R_RULES: tuple[Rule, ...] = (
    Rule(r"^encoder\.patch_embed\.(.+)$", (r"patch_embed.\1",)),
    Rule(r"^encoder\.blocks\.(.+)$", (r"enc_blocks.\1",)),
    Rule(r"^encoder\.norm\.(.+)$", (r"enc_norm.\1",)),
    Rule(r"^decoder\.mask_token$", ("mask_token",)),
    Rule(r"^decoder\.embed\.(.+)$", (r"decoder_embed.\1",)),
    Rule(r"^decoder\.blocks1\.(.+)$", (r"dec_blocks.\1",)),
    Rule(r"^decoder\.blocks2\.(.+)$", (r"dec_blocks2.\1",)),
    Rule(r"^decoder\.norm\.(.+)$", (r"dec_norm.\1",)),
    *_head_rules(1),
    *_head_rules(2),
)
"""Rules for [`DUSt3R`][spatialmem.models.DUSt3R] ↔ ``AsymmetricCroCo3DStereo``."""


def _spann3r_rules() -> tuple[Rule, ...]:
    own = [
        Rule(r"^memory_encoder\.patch_embed\.(.+)$", (r"pos_patch_embed.\1",)),
        Rule(r"^memory_encoder\.blocks\.(.+)$", (r"value_encoder.\1",)),
        Rule(r"^memory_encoder\.norm\.(.+)$", (r"value_norm.\1",)),
        Rule(r"^memory_encoder\.proj\.(.+)$", (r"value_out.\1",)),
        Rule(r"^memory\.(norm_[qkv])\.(.+)$", (r"\1.\2",)),
    ]
    for ours, off in (("key_head", "attn_head_1"), ("query_head", "attn_head_2")):
        own.append(Rule(rf"^{ours}\.mlp\.fc1\.(.+)$", (rf"{off}.0.\1",)))
        own.append(Rule(rf"^{ours}\.mlp\.fc2\.(.+)$", (rf"{off}.2.\1",)))
    return (*prefixed(DUST3R_RULES, "dust3r.", "dust3r."), *own)


_INCREMENT = re.compile(r"<(\d+)\+1>")


class KeyMap:
    """Ordered renaming rules; the first rule whose pattern matches a key applies.

    Args:
        rules: the rules; every pattern is anchored with ``^``.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        self._compiled = [(re.compile(r.ours), r.official) for r in self.rules]

    def to_official(self, key: str) -> list[str]:
        """Official names of a spatialmem key (several when the official layout has aliases).

        Raises:
            KeyError: no rule covers the key.
        """
        for pattern, templates in self._compiled:
            match = pattern.match(key)
            if match:
                return [_expand(match, t) for t in templates]
        raise KeyError(f"no official name for {key!r}")

    def official_to_ours(self, keys: Sequence[str]) -> dict[str, str]:
        """Map every official name (aliases included) of the given spatialmem keys back to it."""
        return {off: key for key in keys for off in self.to_official(key)}


def prefixed(rules: Iterable[Rule], ours: str, official: str) -> tuple[Rule, ...]:
    """The same rules for a sub-model stored under ``ours`` here and ``official`` officially."""
    out = []
    for rule in rules:
        if not rule.ours.startswith("^"):
            raise ValueError(f"rule pattern must be anchored with '^': {rule.ours!r}")
        pattern = "^" + re.escape(ours) + rule.ours[1:]
        out.append(Rule(pattern, tuple(official + t for t in rule.official)))
    return tuple(out)


def _expand(match: re.Match[str], template: str) -> str:
    text = match.expand(template)
    # Official DPT names count levels from 1 where spatialmem indexes from 0.
    return _INCREMENT.sub(lambda m: str(int(m.group(1)) + 1), text)


SPANN3R_RULES: tuple[Rule, ...] = _spann3r_rules()
"""Rules for [`Spann3R`][spatialmem.models.Spann3R] ↔ the official ``Spann3R`` (DUSt3R part under
``dust3r.``; memory encoder ``value_encoder``/``value_norm``/``value_out``/``pos_patch_embed``;
key/query heads ``attn_head_1``/``attn_head_2``; ``norm_q/k/v`` at top level)."""
