"""Datasets (vendored real data with provenance), disjoint seeded splits, user prompt files."""
from .registry import DATASETS, Row, dataset_info, load_dataset
from .splits import SPLITS, get_split, split_table
from .userfile import DataFileError, read_rows_file

__all__ = ["DATASETS", "Row", "dataset_info", "load_dataset", "SPLITS", "get_split", "split_table",
           "DataFileError", "read_rows_file"]
