"""Training the droplet model: data from folders and generators (:mod:`.data`), and the loop
behind ``sam-droplet train`` (:mod:`.train`). Needs torch."""

from .data import LabelledImage, PatchSampler, generated_images, read_labelled
from .train import TrainConfig, evaluate_net, train

__all__ = ["LabelledImage", "PatchSampler", "TrainConfig", "evaluate_net", "generated_images", "read_labelled", "train"]
