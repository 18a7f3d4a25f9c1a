"""Data for training and measuring streamdet models.

- :mod:`streamdet.datasets.shapes`: the synthetic "shapes" generator (spec: ``shared/specs/shapes-v1.md``):
  clips (H.264 + JSON Lines ground truth) and still images in YOLO layout.
- :mod:`streamdet.datasets.yolo`: read and write YOLO-layout data sets (``images/`` + ``labels/``).
- :mod:`streamdet.datasets.groundtruth`: read and write a clip's JSON Lines ground truth.

Nothing here imports torch, so data can be made and read in processes without it.
"""
