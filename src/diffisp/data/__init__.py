"""Data: data sets (CIFAR-10, built-in, folders, COCO/VOC, RAW files) and their readers.

May import :mod:`diffisp.capture`, :mod:`diffisp.isp`, :mod:`diffisp.ops`, :mod:`diffisp.util`
and :mod:`diffisp.errors`.

All loaders return a :class:`Dataset` of ``(N, S, S, 3)`` float32 RGB images in [0, 1] (NHWC,
the contract of :mod:`diffisp.ops`) with int32 labels:

* :mod:`~diffisp.data.cifar`: the real CIFAR-10 (download, checksum, safe extraction, reader);
* :mod:`~diffisp.data.builtin`: an offline stand-in made of crops of 10 bundled photos;
* :mod:`~diffisp.data.folder`: the user's own ``root/<class_name>/*.png|jpg`` images;
  :mod:`~diffisp.data.split` records such a split (file + SHA-256 per image) and reloads it.

:func:`load_dataset` picks one by a spec string; :func:`load_image` reads a single file.

Detection data come as a :class:`DetectionDataset` (letterboxed images, padded boxes and class
ids): :func:`load_coco` (COCO JSON), :func:`load_voc` (Pascal VOC folders) and the generated
offline stand-in :func:`load_scenes` (:func:`write_scenes_coco` writes it as COCO files);
:func:`load_detection` picks one by a spec string (``scenes``, ``coco:PATH``, ``voc:ROOT``).
"""

from diffisp.data.builtin import load_builtin
from diffisp.data.cifar import find_cifar10, read_cifar10
from diffisp.data.coco import load_coco
from diffisp.data.dataset import Dataset
from diffisp.data.detection import DetectionDataset
from diffisp.data.detection_loader import DETECTION_SPECS, load_detection
from diffisp.data.download import default_cache_dir, download_cifar10
from diffisp.data.folder import load_folder
from diffisp.data.images import load_image
from diffisp.data.loader import VALID_SPECS, load_dataset
from diffisp.data.scenes import generate_scenes, load_scenes, write_scenes_coco
from diffisp.data.split import SplitChanges, compare_split, load_folder_split, split_record
from diffisp.data.voc import load_voc

__all__ = [
    "DETECTION_SPECS",
    "VALID_SPECS",
    "Dataset",
    "DetectionDataset",
    "SplitChanges",
    "compare_split",
    "default_cache_dir",
    "download_cifar10",
    "find_cifar10",
    "generate_scenes",
    "load_builtin",
    "load_coco",
    "load_dataset",
    "load_detection",
    "load_folder",
    "load_folder_split",
    "load_image",
    "load_scenes",
    "load_voc",
    "read_cifar10",
    "split_record",
    "write_scenes_coco",
]
