"""What inference, training, a predictor call and an exported model cost."""
