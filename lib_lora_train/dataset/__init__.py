"""Training data: scanning image folders, aspect-ratio buckets, caption augmentation, batching, pixel tensors."""

from lib_lora_train.dataset.buckets import assign_buckets, choose_bucket, make_buckets
from lib_lora_train.dataset.captions import process_caption
from lib_lora_train.dataset.sampler import BucketBatchSampler
from lib_lora_train.dataset.scan import DatasetItem, DatasetProblem, DatasetScan, scan_dataset
from lib_lora_train.dataset.transforms import load_training_image, prepare_image

__all__ = [
    "BucketBatchSampler",
    "DatasetItem",
    "DatasetProblem",
    "DatasetScan",
    "assign_buckets",
    "choose_bucket",
    "load_training_image",
    "make_buckets",
    "prepare_image",
    "process_caption",
    "scan_dataset",
]
