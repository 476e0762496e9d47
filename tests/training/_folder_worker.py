"""One rank of the multi-rank folder-data test (tests/training/test_distributed.py): under torchrun
(gloo, CPU), the ImageNet path's batches (:class:`cepaper.training.loaders.FolderData`) on a tiny
class-folder dataset whose labels are the images' indices, so each rank's batches say which images it
drew. Writes ``<out>/rank<r>.json``: per epoch the indices of each training batch, and the indices of
its test batches."""

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cepaper import catalog, data  # noqa: E402
from cepaper.training import distributed, loaders, recipes  # noqa: E402

root, out, epochs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
w, device = distributed.setup("cpu")
ds = data.load("imagenet", "train", root=root)
ds.samples = [(path, i) for i, (path, _) in enumerate(ds.samples)]  # the label of an image is its index
rec = dataclasses.replace(recipes.RECIPES["imagenet"], batch_size=4, micro_batch=2, resolution=8, test_resize=8)
folder = loaders.device_data(ds, device, catalog.STATS["imagenet"], rec, 0, w)
record = {
    "rank": w.rank,
    "size": w.size,
    "batch_sizes": folder.batch_sizes(rec),
    "train": [[y.tolist() for _, y in folder.train_batches(rec, 7, epoch)] for epoch in range(epochs)],
    "test": [y.tolist() for _, y in folder.test_batches(5)],
}
(out / f"rank{w.rank}.json").write_text(json.dumps(record))
distributed.shutdown()
