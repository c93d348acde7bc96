"""Paged attention: a torch reference (`reference.py`) and Triton kernels (`triton_paged.py`)
that read K/V through a block table, so both see exactly the pages the allocator handed out."""


def triton_takes_head_dim(head_dim: int) -> bool:
    """The Triton kernels tile the head dimension whole: a power of two, at least 16."""
    return head_dim >= 16 and head_dim & (head_dim - 1) == 0
