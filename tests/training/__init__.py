"""Tests of streamdet.training."""
