"""Data sets by name: bundled ones, an ImageFolder of the user's images, or the user's own
callable (``"pkg.module:callable"``), split into train / validation / test.

Every data set is split the same way: the validation set, which the search optimises on, is
carved from the *training* set with a seeded permutation (unless the data brings its own), so
the test set is only ever reported. Data that fits is held in memory as tensors and batched by
slicing; larger data streams through a DataLoader (``DataSplits.batches`` serves both).
"""

from archsearch.data.bundled import DEBIAN_FASHION_MNIST, IDX_FILES, read_idx
from archsearch.data.catalog import get_dataset_info, load_dataset
from archsearch.data.entry import DATASETS, DatasetInfo, Geometry, list_datasets, register_dataset
from archsearch.data.imagefolder import imagefolder
from archsearch.data.parts import IN_MEMORY_BYTES, Parts, RawData
from archsearch.data.splits import (
    SPLITS,
    DataSplits,
    StreamSplit,
    TensorSplit,
    carve_validation,
    iterate_batches,
)

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "IDX_FILES",
    "IN_MEMORY_BYTES",
    "SPLITS",
    "DataSplits",
    "DatasetInfo",
    "Geometry",
    "Parts",
    "RawData",
    "StreamSplit",
    "TensorSplit",
    "carve_validation",
    "get_dataset_info",
    "imagefolder",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "read_idx",
    "register_dataset",
]
