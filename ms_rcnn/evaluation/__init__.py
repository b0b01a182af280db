"""Evaluation metrics of ms_rcnn."""
