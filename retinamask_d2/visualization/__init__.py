"""What is made of predictions for people to see: drawings and cut-outs."""
