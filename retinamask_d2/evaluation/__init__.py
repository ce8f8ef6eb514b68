"""Evaluation helpers: the model's classes against a test set's, and predictions as COCO results."""
