"""YOLOv5 training for the demo model (used by ``tools/train_shapes.py``).

Modules: ``loss`` (YOLOv5 loss: anchor matching, CIoU, objectness/class BCE), ``augment``
(HSV, flips, scale/translate, mosaic; boxes follow the pixels), ``data`` (YOLO-layout images
cached in RAM, per-sample deterministic augmentation), ``optim`` (three parameter groups,
warm-up, cosine/linear decay), ``ema`` (weight EMA), ``validate`` (mAP through the daemon's
letterbox and NMS), ``trainer`` (the loop, checkpoints via ``save_checkpoint``). Nothing is
imported here, so importing the package stays cheap.
"""
