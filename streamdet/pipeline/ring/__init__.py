"""Stage 2, the per-camera shared-memory frame ring between a decoder and a worker.

    layout.py   the segment's bytes: header and slot dtypes, sizes, plane shapes
    buffer.py   FrameRing: the writer (latest wins, or lossless in order) and the reads
    slots.py    SlotReader, the one read protocol: pick a slot under the seqlock, copy, validate
    pinned.py   page-locked rings for the GPU: DMA of the chosen slots, validated after the copy
"""
