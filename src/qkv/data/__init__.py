"""Data: built-in synthetic tasks, corpus files, and batching for training and evaluation."""

from qkv.data.batching import Batch, LMBlocks, Seq2SeqBatches, plan_batches, restore_order, split_by_position
from qkv.data.corpus import (
    ParallelFiles,
    ParallelText,
    TsvFile,
    iter_lines,
    iter_text_lines,
    load_split,
    read_parallel,
    read_text,
    read_tsv,
    split_files,
)
from qkv.data.tasks import SPLITS, TASKS, Task, get_task, make_task, split_of

__all__ = [
    "Batch",
    "LMBlocks",
    "Seq2SeqBatches",
    "plan_batches",
    "restore_order",
    "split_by_position",
    "ParallelFiles",
    "ParallelText",
    "TsvFile",
    "iter_lines",
    "iter_text_lines",
    "load_split",
    "read_parallel",
    "read_text",
    "read_tsv",
    "split_files",
    "SPLITS",
    "TASKS",
    "Task",
    "get_task",
    "make_task",
    "split_of",
]
