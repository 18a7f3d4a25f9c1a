"""Tests of streamdet.datasets: the shapes generator, YOLO layout and JSON Lines ground truth."""
