"""Write the generated pictures the speed figures use (the team's images stay on its machines).

``python scripts/speed_pictures.py FOLDER`` writes, each as ``<name>.png`` and ``<name>_labels.png``:
``warm/`` (one small picture, segmented first so that start-up costs are not timed), ``field/``
(polydisperse emulsions of 2200x1700 pixels, the size of emulsion_gt's pictures), ``packed2200/``
(a 2200x1700 monolayer of 4474 droplets) and ``syn/`` (every generated evaluation set, seeds 3-4).
"""

import sys
from pathlib import Path

from sam_droplet.tools import synthetic


def main(out: Path) -> None:
    synthetic.sparse_emulsion(shape=(600, 800), n=30, seed=1).write(out / "warm", "1")
    for seed in (3, 4, 5):
        synthetic.sparse_emulsion(shape=(1700, 2200), n=300, seed=seed).write(out / "field", str(seed))
    synthetic.packed_monolayer(shape=(1700, 2200), radius=14.0, seed=3).write(out / "packed2200", "3")
    synthetic.write_sets(out / "syn", (3, 4))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
