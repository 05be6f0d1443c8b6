"""SAM in the droplet pipeline: load checkpoints (:mod:`.model`, :mod:`.weights`), refine detected
droplets with box prompts (:mod:`.refine`, on :mod:`.windowed_decoder`), and SAM's automatic mask
generator (:mod:`.grid`). Importing this package does not import torch."""
