"""Learning-rate schedules by name: one definition of each, ``transformers.get_scheduler``'s, for
the engine (defenses) and the HF Trainer (attacks) alike."""
from __future__ import annotations

# our name -> (transformers scheduler name, whether it has a warmup phase)
SCHEDULERS = {"constant": ("constant", False), "constant-warmup": ("constant_with_warmup", True),
              "linear": ("linear", True), "cosine-warmup": ("cosine", True)}


def make_scheduler(optimizer, name: str, warmup_steps: int, total_steps: int):
    """The ``name`` schedule over ``total_steps`` optimizer steps (warmup from 0, as the Trainer)."""
    from transformers import get_scheduler

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}")
    hf_name, _ = SCHEDULERS[name]
    return get_scheduler(hf_name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
