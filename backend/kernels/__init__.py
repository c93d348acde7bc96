"""Paged attention: a torch reference (`reference.py`) and Triton kernels (`triton_paged.py`)
that read K/V through a block table, so both see exactly the pages the allocator handed out."""
