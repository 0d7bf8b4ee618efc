"""The supervised training core shared by attacks and defenses: data with a completion-only loss,
LoRA or full fine-tuning through the HF ``Trainer`` (so Accelerate places devices and a multi-GPU
launch works unchanged), and a hook that evaluates the model at chosen steps."""
from .data import IGNORE_INDEX, SFTExample, build_features, collate, ordered_examples
from .sft import SCHEDULERS, TrainConfig, save_model_dir, train_sft

__all__ = ["IGNORE_INDEX", "SFTExample", "build_features", "collate", "ordered_examples", "SCHEDULERS",
           "TrainConfig", "train_sft", "save_model_dir"]
